"""One training epoch and batched prediction for FEN+PN, in plain torch.

The Ray Train worker loop (``workflows/lib/train_loop.py``, running the parsing task of
``workflows/lib/parsing_task.py``) and the in-process diagnosis
(``benchmarks/diagnose_parsing.py``) both call these, so the step they time and tune is one
piece of code (the ``train_one_epoch`` / ``evaluate`` split of torchvision's references).
A batch is a dict of tensors: ``image`` (uint8 [N,H,W,3] as Ray Data delivers it, normalized on the
device by :func:`models.inputs.model_input`; or already normalized float) plus the targets of
:func:`models.losses.compute_loss`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gmparse.data_pipeline.schema import TARGET_FIELDS, TargetArrays

from .constraints import ConstraintWeights
from .inputs import model_input, random_hflip
from .losses import compute_loss
from .parser import ParsingModel
from .predictions import Predictions

TARGET_KEYS = TARGET_FIELDS


def weight_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (torch's ``AveragedModel``,
    timm's ModelEma convention), updated after every optimizer step; None when ``decay`` is 0.

    Not in the paper. Evaluating the average instead of the last step's weights is a cheap
    ensemble over the last few hundred steps (time constant ``1 / (1 - decay)`` steps).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    if decay == 0.0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaged_weights(ema_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ``AveragedModel`` state dict -> the averaged model's own state dict (loads into the model)."""
    return {k[len("module."):]: v for k, v in ema_state.items() if k.startswith("module.")}


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (AVX-512 or AMX; else autocast would emulate
    them slowly)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The training step's autocast dtype: bf16 when ``precision`` is ``bf16``, or ``auto`` on CUDA
    or on a CPU with oneDNN bf16 (:func:`cpu_has_bf16`); None (full precision) otherwise.

    On this machine's CPU (AVX-512 with BF16) bf16 autocast ran the default preset's training step
    1.4x faster than fp32 (both channels-last; benchmarks/bench_step.py), with pooled results within seed noise
    (docs/decisions.md, 2026-11-24: the ensemble and ``--precision auto``)."""
    kind = torch.device(device).type
    auto_bf16 = precision == "auto" and (kind == "cuda" or (kind == "cpu" and cpu_has_bf16()))
    return torch.bfloat16 if precision == "bf16" or auto_bf16 else None


def _set_thread_count(n: int) -> None:
    """This thread's torch threads: set, then read, which fixes the count for the thread (torch takes a
    thread's count from the process-wide one on its first parallel op, so a later ``set_num_threads``
    elsewhere would otherwise reach it)."""
    torch.set_num_threads(n)
    torch.get_num_threads()


class MemberThreads:
    """One thread per ensemble member, each with its share of the torch threads: on the CPU an
    ensemble's members train side by side instead of one after the other.

    Members are independent networks with their own losses, so running their forward and backward
    passes concurrently changes no gradient (up to float summation order). Small convolutions
    (24 channels at 32 px) use 2 threads poorly; two members on one thread each kept both cores
    busier: the default step 1.2x faster on this 2-core AVX2 CPU (benchmarks/bench_step.py,
    docs/decisions.md 2026-12-03)."""

    def __init__(self, n_members: int, threads: int) -> None:
        self.pool = ThreadPoolExecutor(n_members, thread_name_prefix="gmparse-member",
                                       initializer=_set_thread_count, initargs=(max(1, threads // n_members),))
        barrier = threading.Barrier(n_members)  # every thread started (and its count set) now ...
        list(self.pool.map(lambda _: barrier.wait(), range(n_members)))
        torch.set_num_threads(threads)  # ... then this thread's count restored (the initializer set the default)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def member_threads(model: nn.Module, device: torch.device | str) -> MemberThreads | None:
    """Threads for ``model``'s members when they can train side by side: a plain (not DDP-wrapped,
    not compiled) ensemble on the CPU with at least a torch thread per member; else None."""
    members = model.members if type(model) is ParsingModel else None
    threads = torch.get_num_threads()
    if members is None or torch.device(device).type != "cpu" or threads < len(members):
        return None
    return MemberThreads(len(members), threads)


def _forward_backward(model: nn.Module, x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                      amp_dtype: torch.dtype | None, loss_args: dict) -> dict[str, float]:
    """Forward and loss under autocast (thread-local: entered in the thread that runs it), backward."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = model(x)
        loss, log = compute_loss(out, targets, **loss_args)
    loss.backward()
    return log


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Mapping[str, torch.Tensor]],
                    weights: ConstraintWeights, class_weights: Sequence[torch.Tensor] | None = None,
                    device: torch.device | str | None = None, ema: AveragedModel | None = None,
                    binary_weights: Mapping[str, torch.Tensor] | None = None,
                    on_step: Callable[[dict[str, float]], None] | None = None,
                    amp_dtype: torch.dtype | None = None, hflip: bool = False,
                    label_smoothing: float = 0.0, parallel_members: bool = True) -> dict[str, float]:
    """Train over ``batches`` once -> image-weighted means of the loss terms, ``images`` and ``images_per_s``.

    ``ema`` (:func:`weight_ema`) is updated after every step; ``binary_weights``: see
    ``losses.parsing_terms``; ``on_step`` gets the running ``images``, ``loss`` and ``images_per_s``
    after every step (a progress display). ``amp_dtype`` (e.g. ``torch.bfloat16`` on a GPU): the
    forward pass and the loss run under ``torch.autocast`` (the backward pass outside it, as
    torch's AMP recipe says; bf16 needs no gradient scaler); None: full precision. ``hflip``: each
    training image mirrored left-right with probability 0.5 (:func:`models.inputs.random_hflip`).
    ``label_smoothing``: of the discrete values' CE (``losses.parsing_terms``). ``parallel_members``:
    an ensemble's members train in threads side by side where :func:`member_threads` allows (the
    same gradients; False: one after the other)."""
    model.train()
    loss_args = {"weights": weights, "class_weights": class_weights, "binary_weights": binary_weights,
                 "label_smoothing": label_smoothing}
    t0, n_img, sums = time.time(), 0, {}
    threads = member_threads(model, device or "cpu") if parallel_members else None
    try:
        for batch in batches:
            x = model_input(batch["image"], device)
            if hflip:
                x = random_hflip(x)
            targets = {k: batch[k].to(x.device) for k in TARGET_KEYS}
            optimizer.zero_grad(set_to_none=True)
            if threads is None:
                log = _forward_backward(model, x, targets, amp_dtype, loss_args)
            else:  # what compute_loss does for an ensemble: each member its own loss; logged as the members' mean
                logs = [f.result() for f in [threads.pool.submit(_forward_backward, m, x, targets, amp_dtype, loss_args)
                                             for m in model.members]]
                log = {k: float(np.mean([lg[k] for lg in logs])) for k in logs[0]}
            optimizer.step()
            if ema is not None:
                ema.update_parameters(getattr(model, "module", model))  # DDP's wrapped module
            b = len(x)
            n_img += b
            for k, v in log.items():
                sums[k] = sums.get(k, 0.0) + v * b
            if on_step is not None:
                on_step({"images": float(n_img), "loss": sums["total"] / n_img,
                         "images_per_s": n_img / max(time.time() - t0, 1e-9)})
    finally:
        if threads is not None:
            threads.close()
    metrics = {k: v / max(n_img, 1) for k, v in sums.items()}
    metrics["images"] = float(n_img)
    metrics["images_per_s"] = n_img / max(time.time() - t0, 1e-9)
    return metrics


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]],
                    device: torch.device | str | None = None,
                    keep: Sequence[str] = TARGET_KEYS) -> tuple[Predictions, dict[str, np.ndarray]]:
    """Eval-mode predictions over ``batches`` plus the concatenated ``keep`` columns (numpy)."""
    was_training = model.training
    model.eval()
    parts, cols = [], {k: [] for k in keep}
    try:
        for batch in batches:
            x = model_input(batch["image"], device)
            parts.append(Predictions.from_outputs(model(x)))
            for k in keep:
                v = batch[k]
                cols[k].append(v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("no batches to predict on")
    return Predictions.concat(parts), {k: np.concatenate(v) for k, v in cols.items()}


def targets_of(cols: Mapping[str, np.ndarray]) -> TargetArrays:
    return TargetArrays(*(cols[k] for k in TARGET_KEYS))
