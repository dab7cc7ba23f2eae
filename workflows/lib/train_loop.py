"""The one Ray Train loop: every training job (parsing folds, Tune trials, forensics) runs it.

What is trained is a *task* (``TrainTask``: build the models, train them for an epoch, score
them); how it runs is a frozen ``LoopConfig``. The loop owns everything else, once: resume
from the newest checkpoint, ``prepare_model``, an EMA of the weights when asked, evaluation on
rank 0, the kept state of every model (its best epoch by the task's score, or the last) inside
each checkpoint, ``ray.train.report``, MLflow per epoch (logged by the controller once the epoch's
checkpoint is registered, so an interrupted run neither repeats nor loses an epoch in MLflow), the
console's progress events and fault injection. The places where Ray enters are marked ``# Ray``,
as in Ray's TorchTrainer examples; the rest follows torchvision's ``train_one_epoch`` /
``evaluate`` split.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gmparse.data_pipeline.ray_data import EpochPlan, epoch_batches

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
KEEP_POLICIES = ("best", "last")


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs. ``keep``: each model's ``best`` epoch by the task's score, or the ``last``."""

    epochs: int
    batch_size: int
    lr: float
    seed: int = 0
    weight_decay: float = 0.0  # Adam's L2 penalty
    ema: float = 0.0  # decay of an EMA of the weights, evaluated and kept instead of the raw weights (0: off)
    keep: str = "best"
    threads: int = 1  # torch threads per worker
    drop_last: bool = True  # BatchNorm needs more than one row per batch
    plan: EpochPlan = EpochPlan()  # how each epoch is drawn from a worker's shard (data_pipeline.ray_data.epoch_plan)
    prefetch_batches: int = 1  # batches fetched ahead onto the device
    compile: bool = False  # torch.compile each model (after prepare_model); the first step then compiles
    mlflow_run_id: str | None = None  # the run each epoch's metrics go to (EpochsToMlflow)
    tracking_uri: str | None = None  # explicit: workers may have started before MLFLOW_TRACKING_URI was set
    fault_marker: str | None = None  # fault injection (tests): a file that says the kill happened
    kill_after_epoch: int = -1  # SIGKILL rank 0 once after this epoch
    progress: Any = None  # the queue of the driver's workflows.lib.progress.FoldProgress, or None

    def __post_init__(self) -> None:
        if self.keep not in KEEP_POLICIES:
            raise ValueError(f"keep must be one of {KEEP_POLICIES}, got {self.keep!r}")


class TrainTask(Protocol):
    """What a job trains. Picklable: it travels to every worker."""

    def build(self) -> dict[str, Any]:
        """The models by name (``nn.Module``), freshly initialised (the loop seeds torch first)."""

    def train_epoch(self, models: Mapping[str, Any], optimizers: Mapping[str, Any], emas: Mapping[str, Any],
                    batches: Iterable[Mapping[str, Any]], device: Any,
                    on_step: Callable[[dict[str, float]], None] | None) -> dict[str, float]:
        """One pass over ``batches`` -> metrics (named as logged), plus ``loss`` and ``images_per_s``
        for the console. Update each model's EMA (when it has one) after every step."""

    def evaluate(self, models: Mapping[str, Any], device: Any) -> dict[str, float]:
        """Rank 0, the kept weights in eval mode -> validation metrics (named as logged)."""

    def score(self, metrics: Mapping[str, float], name: str) -> float:
        """Model ``name``'s validation score in ``metrics`` (higher is better; picks its best epoch)."""


@dataclass
class Fitted:
    states: dict[str, dict[str, Any]]  # model name -> the kept state dict (cpu tensors)
    best_epochs: dict[str, int]  # model name -> the epoch it was kept from
    history: list[dict[str, float]]  # rank 0's metrics of every epoch
    checkpoint_path: str


def fit(task: TrainTask, cfg: LoopConfig, name: str, datasets: dict[str, Any], *, storage_path: str,
        num_workers: int, use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
        callbacks: list | None = None) -> Fitted:
    """Run the loop on a TorchTrainer; the same (storage_path, name) resumes. ``datasets``: ``train``
    is split across workers, the others are read whole by rank 0 (the task's ``evaluate``)."""

    if cfg.mlflow_run_id:  # first: Tune's callback may stop the trial once it has the epoch
        callbacks = [epochs_to_mlflow(cfg.mlflow_run_id, cfg.tracking_uri), *(callbacks or [])]
    result = torch_trainer(functools.partial(run_worker, task, cfg), name, datasets, storage_path=storage_path,
                           num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
                           keep_checkpoints=keep_checkpoints, max_failures=max_failures, callbacks=callbacks).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} produced no checkpoint")
    state, history = _read_checkpoint(result.checkpoint)  # the newest holds every model's kept state
    kept = state["kept"]
    return Fitted({n: k["state"] for n, k in kept.items()}, {n: int(k["epoch"]) for n, k in kept.items()},
                  history, result.checkpoint.path)


def torch_trainer(loop: Callable[[], None], name: str, datasets: dict[str, Any], *, storage_path: str,
                  num_workers: int, use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
                  callbacks: list | None = None):
    """The TorchTrainer: workers (one GPU each when used), the newest ``keep_checkpoints`` kept,
    restarts, and only ``train`` split across workers."""
    import ray.train
    from ray.train.torch import TorchTrainer

    # Train replaces a dataset's execution options with its ingest defaults, which let blocks arrive
    # in completion order; keep the training set's order, so a seed draws the same epochs every run
    with warnings.catch_warnings():  # Ray's own default sets a deprecated field (exclude_resources)
        warnings.simplefilter("ignore", DeprecationWarning)
        ingest = ray.train.DataConfig.default_ingest_options()
    ingest.preserve_order = True
    return TorchTrainer(  # Ray
        loop,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=keep_checkpoints, checkpoint_score_attribute="epoch", checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options={"train": ingest}),
    )


def run_worker(task: TrainTask, cfg: LoopConfig) -> None:
    """The per-worker loop (``fit`` binds the task and the config)."""
    import ray.train
    import ray.train.torch
    import torch

    from gmparse.models.engine import weight_ema
    from gmparse.workflows.lib.progress import ProgressSender

    torch.set_num_threads(max(1, cfg.threads))
    rank = ray.train.get_context().get_world_rank()  # Ray
    torch.manual_seed(cfg.seed * 1000 + rank)
    models = task.build()
    state, history = _restore()
    if rank == 0 and history:  # epochs checkpointed but not logged (the run was cut off in between)
        log_missing_epochs(cfg.mlflow_run_id, history, cfg.tracking_uri)
    if state:
        for n, m in models.items():
            m.load_state_dict(state["models"][n])
    device = ray.train.torch.get_device()  # Ray
    # the layout of model_input's batches (cuDNN's and oneDNN's preferred one; benchmarks/bench_step.py)
    models = {n: m.to(memory_format=torch.channels_last) for n, m in models.items()}
    wrapped = {n: ray.train.torch.prepare_model(m) for n, m in models.items()}  # Ray: device, DDP
    raw = {n: getattr(w, "module", w) for n, w in wrapped.items()}
    if cfg.compile:
        wrapped = {n: torch.compile(w) for n, w in wrapped.items()}
    optims = {n: torch.optim.Adam(w.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for n, w in wrapped.items()}
    emas = {n: e for n, e in ((n, weight_ema(m, cfg.ema)) for n, m in raw.items()) if e is not None}
    kept_models = {n: (emas[n].module if n in emas else m) for n, m in raw.items()}  # evaluated and kept
    kept: dict[str, dict[str, Any]] = {n: {"score": -np.inf, "epoch": -1, "state": None} for n in models}
    if state:
        for n, o in optims.items():
            o.load_state_dict(state["optimizers"][n])
        for n, e in emas.items():
            e.load_state_dict(state["emas"][n])
        kept = state["kept"]
    progress = ProgressSender(cfg.progress if rank == 0 else None)
    shard = ray.train.get_dataset_shard("train")  # Ray: this worker's share
    for epoch in range(int(state["epoch"]) + 1 if state else 0, cfg.epochs):
        batches = epoch_batches(shard, cfg.plan, batch_size=cfg.batch_size, epoch=epoch, seed=cfg.seed, device=device,
                                drop_last=cfg.drop_last, prefetch_batches=cfg.prefetch_batches)
        for w in wrapped.values():
            w.train()
        t_epoch, first_step = time.time(), []

        def on_step(stats: dict[str, float], e: int = epoch, t0: float = t_epoch, first: list = first_step) -> None:
            if not first:
                first.append(time.time() - t0)  # with compile: the compilation, on epoch 0
            progress.step(e, stats)

        tr = task.train_epoch(wrapped, optims, emas, batches, device, on_step if rank == 0 else None)
        console = {"loss": tr.pop("loss", float("nan")), "images_per_s": tr.pop("images_per_s", float("nan"))}
        metrics = {**tr, "epoch": float(epoch), "train/images_per_s": console["images_per_s"],
                   "train/first_step_s": first_step[0] if first_step else float("nan"),
                   "worker/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if rank == 0:
            for m in kept_models.values():
                m.eval()
            metrics.update(task.evaluate(kept_models, device))
            _keep(kept, kept_models, metrics, task, epoch, cfg.keep)
        history.append({k: float(v) for k, v in metrics.items()})
        _report(metrics, history, rank, epoch, raw, optims, emas, kept)
        if rank == 0:
            progress.epoch_done(epoch, {**console, "val_score": task.score(metrics, next(iter(models)))})
            _maybe_inject_fault(cfg, epoch)


def _restore() -> tuple[dict[str, Any] | None, list[dict[str, float]]]:
    """The newest checkpoint's state and history (a restarted worker, or a resumed run), else nothing."""
    import ray.train

    ckpt = ray.train.get_checkpoint()  # Ray
    return _read_checkpoint(ckpt) if ckpt else (None, [])


def _read_checkpoint(checkpoint: Any) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A checkpoint written by ``_report``: (state, history)."""
    import torch

    with checkpoint.as_directory() as d:
        return (torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True),
                json.loads((Path(d) / HISTORY_FILE).read_text()))


def _keep(kept: dict[str, dict[str, Any]], models: Mapping[str, Any], metrics: Mapping[str, float],
          task: TrainTask, epoch: int, policy: str) -> None:
    """Rank 0: each model's state becomes the kept one if the policy says so (``last``: always)."""
    for n, m in models.items():
        score = float(epoch) if policy == "last" else task.score(metrics, n)
        if score >= kept[n]["score"]:
            kept[n] = {"score": score, "epoch": epoch, "state": {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}}


def _report(metrics: dict[str, float], history: list[dict[str, float]], rank: int, epoch: int, raw: Mapping[str, Any],
            optims: Mapping[str, Any], emas: Mapping[str, Any], kept: dict[str, dict[str, Any]]) -> None:
    """Every worker reports (a barrier); rank 0 attaches the checkpoint: weights, optimizers,
    EMAs, the kept states and the history, so a restart resumes exactly."""
    import ray.train
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            cpu = lambda sd: {k: v.cpu() for k, v in sd.items()}  # noqa: E731
            torch.save({"models": {n: cpu(m.state_dict()) for n, m in raw.items()},
                        "optimizers": {n: o.state_dict() for n, o in optims.items()},
                        "emas": {n: cpu(e.state_dict()) for n, e in emas.items()},
                        "kept": kept, "epoch": epoch}, Path(tmp) / STATE_FILE)
            (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)  # Ray


def _maybe_inject_fault(cfg: LoopConfig, epoch: int) -> None:
    """Tests: a real worker death after epoch ``kill_after_epoch``, once (the marker file remembers)."""
    if epoch != cfg.kill_after_epoch or not cfg.fault_marker or os.path.exists(cfg.fault_marker):
        return
    Path(cfg.fault_marker).write_text(f"killed after epoch {epoch}\n")
    # Ray Train V2's controller collects reports (and their checkpoints) on its health-check poll; a
    # worker killed before the next poll loses the epoch it just reported, and the restart redoes it.
    # Wait a few polls so the injected fault is "after epoch N" for real.
    time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
    os.kill(os.getpid(), signal.SIGKILL)  # recovered by FailureConfig


def epochs_to_mlflow(run_id: str, tracking_uri: str | None):
    """A Ray Train callback, run by the controller: rank 0's metrics of each epoch go to MLflow once
    the epoch's checkpoint is registered (Ray's checkpoint manager handles a report before the user
    callbacks). Logged from the worker instead, an epoch reported just before the run was cut off
    reached MLflow without reaching the run's checkpoint list, and the resumed run logged it again."""
    import ray.train

    class EpochsToMlflow(ray.train.UserCallback):  # Ray
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and "epoch" in metrics[0]:
                log_epoch_to_mlflow(run_id, metrics[0], int(metrics[0]["epoch"]), tracking_uri)

    return EpochsToMlflow()


def log_missing_epochs(run_id: str | None, history: list[dict[str, float]], tracking_uri: str | None) -> None:
    """Log the epochs of a restored checkpoint's ``history`` that the run lacks: a resumed
    invocation's new run gets the epochs trained before, and a run cut off between a checkpoint's
    registration and its MLflow call gets that epoch."""
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    logged = {m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, "epoch")}
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch_to_mlflow(run_id, metrics, int(metrics["epoch"]), tracking_uri)


def log_epoch_to_mlflow(run_id: str | None, metrics: Mapping[str, float], epoch: int,
                        tracking_uri: str | None = None) -> None:
    """One epoch's metrics at step ``epoch`` in one call (``/`` becomes ``.`` in the names)."""
    if not run_id:
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    ts = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(
        run_id,
        metrics=[Metric(k.replace("/", "."), float(v), ts, epoch) for k, v in metrics.items() if np.isfinite(v)],
    )
