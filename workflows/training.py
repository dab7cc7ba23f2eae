"""Ray Train wiring: the per-worker training loop and one TorchTrainer per fold.

The loop is the plain torch loop of ``models`` (``compute_loss`` over FEN+PN outputs) fed
by Ray Data shards; rank 0 evaluates the held-out images of the training GMs, saves a
checkpoint every epoch (model, optimizer, epoch, history) and logs the epoch's metrics to
the fold's MLflow run. A restarted worker group resumes from the latest checkpoint, so no
epoch is lost or repeated.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_COLUMNS = ["image", "continuous", "discrete", "loss", "group"]
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"


def log_epoch_to_mlflow(run_id: str | None, metrics: dict[str, float], epoch: int,
                         tracking_uri: str | None = None) -> None:
    if not run_id:
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    ts = int(time.time() * 1000)
    MlflowClient(tracking_uri).log_batch(
        run_id,
        metrics=[Metric(k.replace("/", "."), float(v), ts, epoch) for k, v in metrics.items() if np.isfinite(v)],
    )


#: evaluation sets rank 0 scores every epoch, when given: ``val`` held-out images of the training
#: GMs, ``valgm`` training GMs held out whole (then it picks the checkpoint), ``unseen`` the fold's
#: test GMs (a curve to read, never used to pick anything)
EVAL_SETS = ("val", "valgm", "unseen")
EVAL_COLUMNS = [*TRAIN_COLUMNS, "gm_index"]


def evaluate_sets(model, names: list[str], device) -> dict[str, float]:
    """Rank 0: image-level metrics on ``val`` and GM-level metrics on every set -> flat metrics."""
    import ray.train

    from models.engine import TARGET_KEYS, predict_batches, targets_of
    from models.metrics import gm_level, parsing_metrics
    from models.significance import metrics_of

    out: dict[str, float] = {}
    for name in names:
        shard = ray.train.get_dataset_shard(name)
        try:
            pred, cols = predict_batches(model, shard.iter_torch_batches(batch_size=256, device=device),
                                         keep=(*TARGET_KEYS, "gm_index"))
        except ValueError:  # an empty set
            continue
        targets = targets_of(cols)
        if name == "val":
            out.update({f"val/{k}": v for k, v in parsing_metrics(pred, targets).items() if k.count("/") <= 1})
        gm = metrics_of(*gm_level(pred, targets, cols["gm_index"])[1:])
        out.update({f"{name}_gm/{k}": v for k, v in gm.items() if k.count("/") <= 1 or k.endswith("upsampling")})
    return out


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """Ray Train worker: FEN+PN training with checkpoint-every-epoch and exact resume."""
    import ray.train
    import ray.train.torch
    import torch

    from models.config import ModelConfig
    from models.constraints import ConstraintWeights
    from models.engine import train_one_epoch, weight_ema
    from models.parser import ParsingModel
    from workflows.progress import ProgressSender

    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg["seed"] * 1000 + rank)
    model = ParsingModel(ModelConfig.from_dict(cfg["model"]))
    if cfg.get("centres") is not None:
        model.pn.set_centres(np.asarray(cfg["centres"], dtype=np.float32))
    weights = ConstraintWeights.from_dict(cfg["weights"])
    class_weights = [torch.tensor(w, dtype=torch.float32) for w in cfg["class_weights"]]
    binary_weights = ({k: torch.tensor(w, dtype=torch.float32) for k, w in cfg["binary_weights"].items()}
                      if cfg.get("binary_weights") else None)

    start_epoch, history, opt_state, ema_state = 0, [], None, None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            history = json.loads((Path(d) / HISTORY_FILE).read_text())
        model.load_state_dict(state["model"])
        opt_state = state["optimizer"]
        ema_state = state.get("ema")
        start_epoch = int(state["epoch"]) + 1

    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    ema = weight_ema(raw_model, cfg.get("ema", 0.0))  # when on, the averaged weights are evaluated and kept
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state)
    kept = ema.module if ema is not None else raw_model
    class_weights = [w.to(device) for w in class_weights]
    binary_weights = {k: w.to(device) for k, w in binary_weights.items()} if binary_weights else None
    eval_sets = [n for n in cfg.get("eval_sets", ["val"]) if n in EVAL_SETS]
    select_on = "valgm_gm/score" if "valgm" in eval_sets else "val/score"

    train_shard = ray.train.get_dataset_shard("train")
    progress = ProgressSender(cfg.get("progress"))  # the driver's console bar (workflows.progress)
    for epoch in range(start_epoch, cfg["epochs"]):
        batches = train_shard.iter_torch_batches(
            batch_size=cfg["batch_size"], device=device, local_shuffle_buffer_size=4 * cfg["batch_size"],
            local_shuffle_seed=cfg["seed"] * 1000 + epoch, drop_last=True,  # BatchNorm needs > 1 row
        )
        tr = train_one_epoch(model, optimizer, batches, weights, class_weights, ema=ema, binary_weights=binary_weights,
                             on_step=(lambda stats, e=epoch: progress.step(e, stats)) if rank == 0 else None)
        metrics: dict[str, float] = {f"train/{k}": v for k, v in tr.items() if k not in ("images", "images_per_s")}
        metrics["epoch"] = float(epoch)
        metrics["train/images_per_s"] = tr["images_per_s"]
        metrics["worker/max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if rank == 0:
            metrics.update(evaluate_sets(kept, eval_sets, device))
            metrics["val_score"] = metrics.get(select_on, 0.0)
        else:
            metrics["val_score"] = 0.0
        # what Ray keeps and fit_fold returns: the best val_score, or the newest epoch
        metrics["checkpoint_score"] = float(epoch) if cfg.get("checkpoint") == "last" else metrics["val_score"]
        history.append({k: float(v) for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                state = {"model": {k: v.cpu() for k, v in raw_model.state_dict().items()},
                         "optimizer": optimizer.state_dict(), "epoch": epoch}
                if ema is not None:
                    state["ema"] = {k: v.cpu() for k, v in ema.state_dict().items()}
                torch.save(state, Path(tmp) / STATE_FILE)
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:  # after report(): a worker lost before its checkpoint is registered logs nothing twice
            progress.epoch_done(epoch, {"images_per_s": tr["images_per_s"], "loss": tr.get("total", float("nan")),
                                        "val_score": metrics["val_score"]})
            log_epoch_to_mlflow(cfg.get("mlflow_run_id"), metrics, epoch, cfg.get("mlflow_tracking_uri"))
            marker = cfg.get("fault_marker")
            if epoch == cfg.get("kill_after_epoch", -1) and marker and not os.path.exists(marker):
                Path(marker).write_text(f"killed after epoch {epoch}\n")
                # Ray Train V2's controller collects reports (and their checkpoints) on its health-check
                # poll; a worker killed before the next poll loses the epoch it just reported, and the
                # restart redoes it. Wait a few polls so the injected fault is "after epoch N" for real.
                time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
                os.kill(os.getpid(), signal.SIGKILL)  # a real worker death, recovered by FailureConfig


@dataclass
class FoldResult:
    state: dict[str, Any]  # the kept epoch's model state dict (cpu tensors; JobConfig.checkpoint)
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint_path: str


def make_loop_config(cfg, train_targets, fault_marker: str | None = None,
                     mlflow_run_id: str | None = None, progress: Any = None) -> dict[str, Any]:
    """The worker loop's config from a JobConfig and the training GMs' labels."""
    import mlflow

    from models.pn import binary_weights, class_weights, fit_clusters

    model_cfg = cfg.model_config()
    return {
        "model": model_cfg.to_dict(),
        "weights": cfg.weights().to_dict(),
        "class_weights": [w.tolist() for w in class_weights(train_targets)],
        "binary_weights": ({k: w.tolist() for k, w in binary_weights(train_targets).items()}
                           if cfg.loss_balance else None),
        "centres": fit_clusters(train_targets, model_cfg.n_clusters, cfg.seed).tolist() if cfg.variant == "cluster" else None,
        "checkpoint": cfg.checkpoint, "ema": cfg.ema, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "threads": cfg.threads, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "kill_after_epoch": cfg.kill_after_epoch, "fault_marker": fault_marker, "mlflow_run_id": mlflow_run_id,
        "progress": progress,  # a workflows.progress.FoldProgress queue, or None
        # explicit: Ray workers may have been started before MLFLOW_TRACKING_URI was set
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
    }


def torch_trainer(loop: Any, name: str, loop_config: dict[str, Any], datasets: dict[str, Any], *, storage_path: str,
                  num_workers: int, use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
                  score: str, callbacks: list | None = None):
    """The one place a TorchTrainer is configured: workers (one GPU each when used), checkpoints
    kept by the reported ``score`` (highest first), restarts, and only ``train`` split across workers
    (rank 0 reads the other datasets whole). Same (storage_path, name): the run resumes."""
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=keep_checkpoints, checkpoint_score_attribute=score, checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def fit_fold(name: str, loop_config: dict[str, Any], train_ds, val_ds, *, storage_path: str, num_workers: int,
             use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
             callbacks: list | None = None, eval_ds: dict[str, Any] | None = None) -> FoldResult:
    """One TorchTrainer; re-running with the same (storage_path, name) resumes it.

    ``eval_ds``: more evaluation sets by name (``valgm``, ``unseen``; see EVAL_SETS), read whole
    by rank 0 each epoch (``image_dataset`` rows: ``gm_index`` tells their GMs apart).
    """
    eval_ds = {"val": val_ds, **(eval_ds or {})}
    loop_config = {**loop_config, "eval_sets": list(eval_ds)}

    import torch

    result = torch_trainer(
        train_loop_per_worker, name, loop_config,
        {"train": train_ds.select_columns(TRAIN_COLUMNS), **{k: ds.select_columns(EVAL_COLUMNS) for k, ds in eval_ds.items()}},
        storage_path=storage_path, num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
        keep_checkpoints=keep_checkpoints, max_failures=max_failures, score="checkpoint_score", callbacks=callbacks,
    ).fit()
    best = result.get_best_checkpoint(metric="checkpoint_score", mode="max") or result.checkpoint
    if best is None:
        raise RuntimeError(f"training run {name} produced no checkpoint")
    with best.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    with result.checkpoint.as_directory() as d:  # latest checkpoint holds the full history
        history = json.loads((Path(d) / HISTORY_FILE).read_text())
    from models.engine import averaged_weights

    kept = averaged_weights(state["ema"]) if "ema" in state else state["model"]
    return FoldResult(kept, history, int(state["epoch"]), best.path)
