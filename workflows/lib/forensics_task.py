"""Forensics on the one training loop: the task that trains the detection/attribution models, their data and pyfuncs.

Two models (built in ``models.forensics``) are trained side by side by ``workflows.lib.train_loop``, on the same batches, with
the same optimizer settings and epochs (so the comparison is "same budget, same data"):

- ``fen``: :class:`models.heads.DetectionAttributionModel` (one FEN shared by a detection head
  and an attribution head over the training GMs + real), trained with the fingerprint
  constraints (detection weights, docs/method.md).
- ``cnn``: :class:`models.forensics.PlainCNN`, a small conv net on raw pixels: no FEN, no constraints.

``HeadsTask`` is what the one training loop (``workflows.lib.train_loop``) trains for forensics: a
checkpoint every epoch with each model's best state so far by its own validation score,
rank-0 MLflow logging, exact resume after a worker death. Their MLflow packaging is in
``workflows.lib.registry`` with the parser's.

Image splits: ``data_pipeline.folds.image_split`` (the main job's too) with a test share:
``test`` (held-out images), ``val`` (checkpoint selection), ``train`` = the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from gmparse.models.config import ConstraintWeights
from gmparse.models.forensics import (
    PERTURBATIONS,
    TRAIN_COLUMNS,
    ForensicModel,
    ForensicSpec,
    fingerprint_stats,
    perturb,
    pixel_stats,
    task_loss,
)
from gmparse.models.inputs import model_input
from gmparse.workflows.lib.train_loop import Fitted, LoopConfig, fit


# --- data -------------------------------------------------------------------------------------------
def _keep_split(batch: dict[str, np.ndarray], part: str, test_fraction: float, val_fraction: float,
                seed: int) -> dict[str, np.ndarray]:
    from gmparse.data_pipeline.folds import image_split

    keep = image_split(batch["image_id"], val_fraction, seed, test_fraction) == part
    return {k: v[keep] for k, v in batch.items()}


def raw_dataset(col, gm_ids: Sequence[str], part: str | None, test_fraction: float, val_fraction: float, seed: int):
    """Undecoded rows (image_id, gm_id, is_fake, image bytes) of ``gm_ids`` in split ``part``
    (None = every image)."""
    from ray.data.expressions import col as column

    from gmparse.data_pipeline.ray_data import read_shards

    ds = read_shards(col).select_columns(["image_id", "gm_id", "is_fake", "image"])
    ds = ds.filter(expr=column("gm_id").is_in(list(gm_ids)))
    if part is not None:
        ds = ds.map_batches(_keep_split, batch_format="numpy", batch_size=1024,
                            fn_kwargs={"part": part, "test_fraction": test_fraction, "val_fraction": val_fraction,
                                       "seed": seed})
    return ds


def train_dataset(col, gm_ids: Sequence[str], part: str, size: int, gm_index: dict[str, int],
                  test_fraction: float, val_fraction: float, seed: int):
    """Decoded uint8 rows for training (columns TRAIN_COLUMNS) via data_pipeline.ray_data."""
    from gmparse.data_pipeline.ray_data import DecodeBatch, decode_batch, label_lookup

    ds = raw_dataset(col, gm_ids, part, test_fraction, val_fraction, seed)
    decoder = DecodeBatch(label_lookup(col), size, gm_index, "all")
    return ds.map_batches(decode_batch, batch_size=256, batch_format="numpy",
                          fn_kwargs={"decoder": decoder}).select_columns(TRAIN_COLUMNS)


# --- the Ray Train worker loop ------------------------------------------------------------------
def _val_metrics(models: dict[str, nn.Module], shard, device) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    fake = {n: [] for n in models}
    att = {n: [] for n in models}
    y, src = [], []
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=256, device=device):
            x = model_input(batch["image"])  # once per batch, for every model
            for n, m in models.items():
                o = m(x)
                fake[n].append(torch.sigmoid(o["detection_logit"]).cpu().numpy())
                if "attribution_logits" in o:
                    att[n].append(o["attribution_logits"].argmax(1).cpu().numpy())
            y.append(batch["is_fake"].cpu().numpy())
            src.append(batch["gm_index"].cpu().numpy())
    out: dict[str, float] = {}
    if not y:
        return out
    yy, ss = np.concatenate(y), np.concatenate(src)
    for n in models:
        p = np.concatenate(fake[n])
        auc = float(roc_auc_score(yy, p)) if len(np.unique(yy)) == 2 else float(((p >= 0.5) == yy).mean())
        out[f"{n}/val/detection_auc"] = auc
        score = auc
        if att[n]:
            acc = float((np.concatenate(att[n]) == ss).mean())
            out[f"{n}/val/attribution_acc"] = acc
            score = (auc + acc) / 2
        out[f"{n}/val_score"] = score
    return out


@dataclass(frozen=True)
class HeadsTask:
    """The FEN detector/attributor and the plain CNN, trained on the same batches by ``workflows.lib.train_loop``."""

    specs: dict[str, ForensicSpec]  # model name -> what builds it
    weights: ConstraintWeights  # the fingerprint constraints of the FEN model
    task_scale: float  # detection / attribution losses against the constraints
    source_weight: np.ndarray | None = None  # balanced attribution class weights (None: unweighted)

    def build(self) -> dict[str, Any]:
        return {n: spec.build() for n, spec in self.specs.items()}

    def train_epoch(self, models: Mapping[str, Any], optimizers: Mapping[str, Any], emas: Mapping[str, Any],
                    batches: Iterable[Mapping[str, Any]], device: Any,
                    on_step: Callable[[dict[str, float]], None] | None) -> dict[str, float]:
        sw = None if self.source_weight is None else torch.as_tensor(self.source_weight, dtype=torch.float32,
                                                                      device=device)
        first = next(iter(models))
        t0, n_img, sums = time.time(), 0, {}
        for batch in batches:
            x = model_input(batch["image"])
            for n, w in models.items():
                loss, log = task_loss(w(x), batch["is_fake"], batch["gm_index"], self.weights, self.task_scale, sw)
                optimizers[n].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[n].step()
                if n in emas:
                    emas[n].update_parameters(getattr(w, "module", w))
                for k, v in log.items():
                    sums[f"{n}/train/{k}"] = sums.get(f"{n}/train/{k}", 0.0) + v * len(x)
            n_img += len(x)
            if on_step is not None:
                on_step({"loss": sums[f"{first}/train/total"] / n_img, "images_per_s": n_img / max(time.time() - t0, 1e-9)})
        out = {k: v / max(n_img, 1) for k, v in sums.items()}
        return {**out, "loss": out.get(f"{first}/train/total", float("nan")),
                "images_per_s": n_img / max(time.time() - t0, 1e-9)}

    def evaluate(self, models: Mapping[str, Any], device: Any) -> dict[str, float]:
        import ray.train

        return _val_metrics(dict(models), ray.train.get_dataset_shard("val"), device)

    def score(self, metrics: Mapping[str, float], name: str) -> float:
        return float(metrics.get(f"{name}/val_score", metrics.get("epoch", 0.0)))  # no val images: the latest


def fit_heads(name: str, task: HeadsTask, loop: LoopConfig, train_ds, val_ds, *, storage_path: str,
              num_workers: int, use_gpu: bool, cpus_per_worker: float, keep_checkpoints: int,
              max_failures: int) -> Fitted:
    """Both models on one TorchTrainer, each kept at its best epoch; the same (storage_path, name) resumes."""
    return fit(task, loop, name, {"train": train_ds, "val": val_ds}, storage_path=storage_path,
               num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker,
               keep_checkpoints=keep_checkpoints, max_failures=max_failures)


# --- batch evaluation (Ray Data actor pool) -----------------------------------------------------
class EvalBatch:
    """Predictor (run by ``workflows.lib.batch_inference.BatchActor``): undecoded rows -> per model and
    perturbation the fake probability, plus (clean images) source probabilities and the linking
    features of every kind."""

    def __init__(self, bundles: dict[str, tuple[ForensicSpec, dict[str, Any]]], jpeg_quality: int = 75,
                 resize_factor: float = 0.5, perturbations: Sequence[str] = PERTURBATIONS):
        self.models = {n: ForensicModel.from_state(spec, state) for n, (spec, state) in bundles.items()}
        self.jpeg_quality, self.resize_factor = jpeg_quality, resize_factor
        self.perturbations = tuple(perturbations)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from gmparse.data_pipeline.preprocess import decode_image, resize

        out = {k: batch[k] for k in ("image_id", "gm_id", "is_fake")}
        size = next(iter(self.models.values())).image_size
        imgs = np.stack([resize(decode_image(b), size) for b in batch["image"]])
        out["emb_pixels"] = pixel_stats(imgs)
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
        for kind in self.perturbations:
            xp = perturb(x, kind, self.jpeg_quality, self.resize_factor).permute(0, 2, 3, 1).numpy()
            for n, m in self.models.items():
                p = m.predict(xp)
                out[f"{n}_fake_{kind}"] = p["fake_prob"].astype(np.float32)
                if kind == "clean":
                    out[f"emb_{n}"] = p["embedding"].astype(np.float32)
                    if "source_probs" in p:
                        out[f"{n}_source_probs"] = p["source_probs"].astype(np.float32)
                    fp = m.fingerprint(xp)
                    if fp is not None:
                        out[f"emb_{n}_fpstats"] = fingerprint_stats(torch.from_numpy(fp))
        return out


def evaluate_dataset(ds, bundles: dict[str, tuple[ForensicSpec, dict[str, Any]]], jpeg_quality: int = 75,
                     resize_factor: float = 0.5, batch_size: int = 128, actors: int = 1,
                     use_gpu: bool = False) -> dict[str, np.ndarray]:
    """Every row of ``ds`` through an EvalBatch actor pool -> concatenated columns."""
    from gmparse.workflows.lib.batch_inference import map_columns

    c = map_columns(ds, partial(EvalBatch, bundles, jpeg_quality, resize_factor), batch_size=batch_size,
                    actors=actors, use_gpu=use_gpu)
    c["gm_id"], c["image_id"] = c["gm_id"].astype(str), c["image_id"].astype(str)
    c["is_fake"] = c["is_fake"].astype(np.int64)
    return c
