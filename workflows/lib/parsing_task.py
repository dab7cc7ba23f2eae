"""Parsing on the one training loop (``workflows.lib.train_loop``): the FEN+PN task and one TorchTrainer per fold.

``ParsingTask`` trains ``models.ParsingModel`` with ``compute_loss`` (the parsing terms and the four
fingerprint constraints) through ``models.engine.train_one_epoch``; rank 0 scores the held-out
images of the training GMs, the held-out GMs and the fold's unseen GMs every epoch. ``cv_folds``
and the Tune trials call ``parsing_task`` then ``fit_fold``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gmparse.models.config import ConstraintWeights, ModelConfig
from gmparse.workflows.lib.train_loop import LoopConfig, fit

if TYPE_CHECKING:
    from gmparse.workflows.lib.job_config import JobConfig

TRAIN_COLUMNS = ["image", "continuous", "discrete", "loss", "group"]


#: evaluation sets rank 0 scores every epoch, when given: ``val`` held-out images of the training
#: GMs, ``valgm`` training GMs held out whole (then it picks the checkpoint), ``unseen`` the fold's
#: test GMs (a curve to read, never used to pick anything)
EVAL_SETS = ("val", "valgm", "unseen")
EVAL_COLUMNS = [*TRAIN_COLUMNS, "gm_index"]


def evaluate_sets(model, names: list[str], device) -> dict[str, float]:
    """Rank 0: image-level metrics on ``val`` and GM-level metrics on every set -> flat metrics."""
    import ray.train

    from gmparse.models.engine import TARGET_KEYS, predict_batches, targets_of
    from gmparse.models.metrics import gm_level, parsing_metrics
    from gmparse.models.significance import metrics_of

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


@dataclass(frozen=True)
class ParsingTask:
    """FEN+PN on the training GMs' labels: what ``workflows.lib.train_loop`` trains for a fold or a Tune trial."""

    model: ModelConfig
    weights: ConstraintWeights
    class_weights: tuple[np.ndarray, ...]  # per discrete label, inverse class frequency (models.pn.class_weights)
    binary_weights: dict[str, np.ndarray] | None = None  # balanced group / loss-type BCE (--loss-balance)
    centres: np.ndarray | None = None  # k-means centres of the continuous labels (cluster variant)
    eval_sets: tuple[str, ...] = ("val",)  # EVAL_SETS scored every epoch; ``valgm`` picks the epoch when given
    precision: str = "auto"  # training step: fp32 | bf16 autocast | auto (models.engine.autocast_dtype)
    hflip: bool = False  # random left-right mirroring of the training images (--hflip)
    label_smoothing: float = 0.0  # of the discrete values' CE (--label-smoothing)
    name: str = field(default="parser", init=False)

    def build(self) -> dict[str, Any]:
        from gmparse.models.parser import ParsingModel

        model = ParsingModel(self.model)
        if self.centres is not None:
            model.set_centres(np.asarray(self.centres, dtype=np.float32))
        return {self.name: model}

    def train_epoch(self, models: Mapping[str, Any], optimizers: Mapping[str, Any], emas: Mapping[str, Any],
                    batches: Iterable[Mapping[str, Any]], device: Any,
                    on_step: Callable[[dict[str, float]], None] | None) -> dict[str, float]:
        import torch

        from gmparse.models.engine import autocast_dtype, train_one_epoch

        cw = [torch.as_tensor(w, dtype=torch.float32, device=device) for w in self.class_weights]
        bw = ({k: torch.as_tensor(w, dtype=torch.float32, device=device) for k, w in self.binary_weights.items()}
              if self.binary_weights else None)
        tr = train_one_epoch(models[self.name], optimizers[self.name], batches, self.weights, cw,
                             ema=emas.get(self.name), binary_weights=bw, on_step=on_step,
                             amp_dtype=autocast_dtype(self.precision, device), hflip=self.hflip,
                             label_smoothing=self.label_smoothing)
        out = {f"train/{k}": v for k, v in tr.items() if k not in ("images", "images_per_s")}
        return {**out, "loss": tr.get("total", float("nan")), "images_per_s": tr["images_per_s"]}

    def evaluate(self, models: Mapping[str, Any], device: Any) -> dict[str, float]:
        metrics = evaluate_sets(models[self.name], [n for n in self.eval_sets if n in EVAL_SETS], device)
        metrics["val_score"] = metrics.get("valgm_gm/score" if "valgm" in self.eval_sets else "val/score", 0.0)
        return metrics

    def score(self, metrics: Mapping[str, float], name: str) -> float:
        return float(metrics.get("val_score", 0.0))


@dataclass
class FoldResult:
    state: dict[str, Any]  # the kept epoch's model state dict (cpu tensors; JobConfig.checkpoint)
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint_path: str


def parsing_task(cfg: JobConfig, train_targets, fault_marker: str | None = None, mlflow_run_id: str | None = None,
                 progress: Any = None) -> tuple[ParsingTask, LoopConfig]:
    """The task and the loop settings from a ``JobConfig`` and the training GMs' labels (one row per GM)."""
    import mlflow

    from gmparse.models.pn import binary_weights, class_weights, fit_clusters

    task = ParsingTask(
        cfg.model, cfg.weights, tuple(w.numpy() for w in class_weights(train_targets)),
        {k: w.numpy() for k, w in binary_weights(train_targets).items()} if cfg.loss_balance else None,
        fit_clusters(train_targets, cfg.model.n_clusters, cfg.seed) if cfg.model.variant == "cluster" else None,
        precision=cfg.precision, hflip=cfg.hflip, label_smoothing=cfg.label_smoothing,
    )
    loop = LoopConfig(epochs=cfg.epochs, batch_size=cfg.step_batch_size, lr=cfg.step_lr, seed=cfg.seed,
                      weight_decay=cfg.weight_decay, ema=cfg.ema, keep=cfg.checkpoint, threads=cfg.threads,
                      mlflow_run_id=mlflow_run_id, tracking_uri=mlflow.get_tracking_uri(), fault_marker=fault_marker,
                      kill_after_epoch=cfg.kill_after_epoch, progress=progress, compile=cfg.compile,
                      prefetch_batches=cfg.prefetch_batches)
    return task, loop


def fit_fold(name: str, task: ParsingTask, loop: LoopConfig, train_ds, val_ds, *, storage_path: str,
             num_workers: int, use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int, max_failures: int,
             callbacks: list | None = None, eval_ds: dict[str, Any] | None = None) -> FoldResult:
    """Train the parser on one fold; re-running with the same (storage_path, name) resumes it.

    ``eval_ds``: more evaluation sets by name (``valgm``, ``unseen``; see EVAL_SETS), read whole
    by rank 0 each epoch (``image_dataset`` rows: ``gm_index`` tells their GMs apart).
    """
    eval_ds = {"val": val_ds, **(eval_ds or {})}
    datasets = {"train": train_ds.select_columns(TRAIN_COLUMNS),
                **{k: ds.select_columns(EVAL_COLUMNS) for k, ds in eval_ds.items()}}
    res = fit(replace(task, eval_sets=tuple(eval_ds)), loop, name, datasets, storage_path=storage_path,
              num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
              keep_checkpoints=keep_checkpoints, max_failures=max_failures, callbacks=callbacks)
    return FoldResult(res.states[task.name], res.history, res.best_epochs[task.name], res.checkpoint_path)
