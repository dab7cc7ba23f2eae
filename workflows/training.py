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


def train_loop_per_worker(cfg: dict[str, Any]) -> None:
    """Ray Train worker: FEN+PN training with checkpoint-every-epoch and exact resume."""
    import ray.train
    import ray.train.torch
    import torch

    from models.config import ModelConfig
    from models.constraints import ConstraintWeights
    from models.losses import compute_loss
    from models.metrics import parsing_metrics
    from models.parser import ParsingModel
    from models.predictions import Predictions

    torch.set_num_threads(max(1, int(cfg.get("threads", 1))))
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg["seed"] * 1000 + rank)
    model = ParsingModel(ModelConfig.from_dict(cfg["model"]))
    if cfg.get("centres") is not None:
        model.pn.set_centres(np.asarray(cfg["centres"], dtype=np.float32))
    weights = ConstraintWeights.from_dict(cfg["weights"])
    class_weights = [torch.tensor(w, dtype=torch.float32) for w in cfg["class_weights"]]

    start_epoch, history, opt_state = 0, [], None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            history = json.loads((Path(d) / HISTORY_FILE).read_text())
        model.load_state_dict(state["model"])
        opt_state = state["optimizer"]
        start_epoch = int(state["epoch"]) + 1

    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(model)
    raw_model = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    class_weights = [w.to(device) for w in class_weights]

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg["epochs"]):
        model.train()
        t0, n_img, sums = time.time(), 0, {}
        for batch in train_shard.iter_torch_batches(
            batch_size=cfg["batch_size"], device=device, local_shuffle_buffer_size=4 * cfg["batch_size"],
            local_shuffle_seed=cfg["seed"] * 1000 + epoch,
        ):
            out = model(batch["image"])
            targets = {k: batch[k] for k in ("continuous", "discrete", "loss", "group")}
            loss, log = compute_loss(out, targets, weights, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            b = len(batch["image"])
            n_img += b
            for k, v in log.items():
                sums[k] = sums.get(k, 0.0) + v * b
        metrics: dict[str, float] = {f"train/{k}": v / max(n_img, 1) for k, v in sums.items()}
        metrics["epoch"] = float(epoch)
        metrics["train/images_per_s"] = n_img / max(time.time() - t0, 1e-9)
        metrics["worker/max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if rank == 0:
            model.eval()
            parts, tgt = [], {k: [] for k in ("continuous", "discrete", "loss", "group")}
            with torch.no_grad():
                for batch in val_shard.iter_torch_batches(batch_size=256, device=device):
                    parts.append(Predictions.from_outputs(raw_model(batch["image"])))
                    for k in tgt:
                        tgt[k].append(batch[k].cpu().numpy())
            if parts:
                from data_pipeline.schema import TargetArrays

                vm = parsing_metrics(Predictions.concat(parts), TargetArrays(*(np.concatenate(tgt[k]) for k in tgt)))
                metrics.update({f"val/{k}": v for k, v in vm.items() if k.count("/") <= 1})
            metrics["val_score"] = metrics.get("val/score", 0.0)
        else:
            metrics["val_score"] = 0.0
        history.append({k: float(v) for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save(
                    {"model": {k: v.cpu() for k, v in raw_model.state_dict().items()},
                     "optimizer": optimizer.state_dict(), "epoch": epoch},
                    Path(tmp) / STATE_FILE,
                )
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:  # after report(): a worker lost before its checkpoint is registered logs nothing twice
            log_epoch_to_mlflow(cfg.get("mlflow_run_id"), metrics, epoch, cfg.get("mlflow_tracking_uri"))
            marker = cfg.get("fault_marker")
            if epoch == cfg.get("kill_after_epoch", -1) and marker and not os.path.exists(marker):
                Path(marker).write_text(f"killed after epoch {epoch}\n")
                os.kill(os.getpid(), signal.SIGKILL)  # a real worker death, recovered by FailureConfig


@dataclass
class FoldResult:
    state: dict[str, Any]  # best model state dict (cpu tensors)
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint_path: str


def make_loop_config(cfg, train_targets, fault_marker: str | None = None,
                     mlflow_run_id: str | None = None) -> dict[str, Any]:
    """The worker loop's config from a JobConfig and the training GMs' labels."""
    import mlflow

    from models.pn import class_weights, fit_clusters

    model_cfg = cfg.model_config()
    return {
        "model": model_cfg.to_dict(),
        "weights": cfg.weights().to_dict(),
        "class_weights": [w.tolist() for w in class_weights(train_targets)],
        "centres": fit_clusters(train_targets, model_cfg.n_clusters, cfg.seed).tolist() if cfg.variant == "cluster" else None,
        "lr": cfg.lr, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "kill_after_epoch": cfg.kill_after_epoch, "fault_marker": fault_marker, "mlflow_run_id": mlflow_run_id,
        # explicit: Ray workers may have been started before MLFLOW_TRACKING_URI was set
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
    }


def fit_fold(name: str, loop_config: dict[str, Any], train_ds, val_ds, *, storage_path: str, num_workers: int,
             use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
             callbacks: list | None = None) -> FoldResult:
    """One TorchTrainer; re-running with the same (storage_path, name) resumes it."""
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=keep_checkpoints, checkpoint_score_attribute="val_score", checkpoint_score_order="max"
            ),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
        datasets={"train": train_ds.select_columns(TRAIN_COLUMNS), "val": val_ds.select_columns(TRAIN_COLUMNS)},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    best = result.get_best_checkpoint(metric="val_score", mode="max") or result.checkpoint
    if best is None:
        raise RuntimeError(f"training run {name} produced no checkpoint")
    with best.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    with result.checkpoint.as_directory() as d:  # latest checkpoint holds the full history
        history = json.loads((Path(d) / HISTORY_FILE).read_text())
    return FoldResult(state["model"], history, int(state["epoch"]), best.path)
