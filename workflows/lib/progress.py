"""Training progress on the driver's console: one tqdm bar per fold (or a line per epoch in logs).

Ray Train runs the loop in worker processes whose output does not reach the driver (``init_ray``
keeps Ray's own logs off the console). So rank 0 puts small events on a ``ray.util.queue.Queue``
(an actor: it works on any node and under ``ray job submit``) and a thread in the driver turns
them into the bar: epoch, images/s, the running loss and the last validation score. The same
numbers go to MLflow; progress is advisory, so a lost event never stops training.
"""

from __future__ import annotations

import queue as _queue
import sys
import threading
import time
from typing import Any


class FoldProgress:
    """Driver side. ``with FoldProgress("fold-0", epochs) as p: fit(..., progress=p.queue)``.

    On a terminal: a tqdm bar that advances per epoch and updates its text every second. Else
    (a log file, ``ray job logs``): one plain line per epoch. ``enabled=False``: nothing at all.
    """

    def __init__(self, label: str, epochs: int, position: int = 0, enabled: bool = True,
                 stream: Any = None) -> None:
        self.label, self.epochs, self.position, self.enabled = label, epochs, position, enabled
        self.stream = stream or sys.stderr
        self.queue: Any = None
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.time()
        self._last_val: float | None = None

    def __enter__(self) -> FoldProgress:
        if not self.enabled:
            return self
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.epochs, desc=self.label, unit="epoch", position=self.position,
                             file=self.stream, dynamic_ncols=True, leave=True,
                             bar_format="{desc}: {n_fmt}/{total_fmt} epochs |{bar}| {elapsed}<{remaining}{postfix}")
        self._thread = threading.Thread(target=self._follow, name=f"progress-{self.label}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain()
        if self._bar is not None:
            self._bar.close()
        try:
            self.queue.shutdown()
        except Exception:  # the actor may be gone with the cluster already
            pass

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._show(self.queue.get(block=True, timeout=0.5))
            except _queue.Empty:
                continue
            except Exception:  # the queue's actor died (cluster going down): stop following
                return

    def _drain(self) -> None:
        try:
            while True:
                self._show(self.queue.get_nowait())
        except Exception:  # Empty, or the actor is gone
            return

    def _show(self, event: dict[str, float]) -> None:
        if "val_score" in event:
            self._last_val = event["val_score"]
        text = describe(event, self.epochs, self._last_val)
        if self._bar is not None:
            done = int(event["epoch"]) + (1 if event.get("done") else 0)
            if done != self._bar.n:
                self._bar.n = done  # absolute: a restarted worker repeats epochs
            self._bar.set_postfix_str(text, refresh=True)
        elif event.get("done"):
            print(f"{self.label} {text}, {time.time() - self._t0:.0f} s", file=self.stream, flush=True)


def describe(event: dict[str, float], epochs: int, last_val: float | None) -> str:
    """``epoch 3/12, 312 img/s, loss 1.234, val 0.456`` from a progress event."""
    parts = [f"epoch {int(event['epoch']) + 1}/{epochs}"]
    if "images_per_s" in event:
        parts.append(f"{event['images_per_s']:.0f} img/s")
    if "loss" in event:
        parts.append(f"loss {event['loss']:.3f}")
    if last_val is not None:
        parts.append(f"val {last_val:.3f}")
    return ", ".join(parts)


class ProgressSender:
    """Worker side: puts at most one event a second (plus every epoch's end) on the driver's queue."""

    def __init__(self, queue: Any, min_interval_s: float = 1.0) -> None:
        self.queue, self.min_interval_s, self._last = queue, min_interval_s, 0.0

    def step(self, epoch: int, stats: dict[str, float]) -> None:
        now = time.time()
        if self.queue is None or now - self._last < self.min_interval_s:
            return
        self._last = now
        self._put({"epoch": float(epoch), **stats})

    def epoch_done(self, epoch: int, stats: dict[str, float]) -> None:
        if self.queue is not None:
            self._put({"epoch": float(epoch), "done": 1.0, **stats})

    def _put(self, event: dict[str, float]) -> None:
        try:
            self.queue.put_nowait(event)
        except Exception:  # advisory: the driver may have stopped following
            self.queue = None
