"""Forensics on the GM collection: deepfake detection, attribution and same-source linking.

    python workflows/forensics.py --task detect|attribute|link|all [--preset smoke|default] [--collection PATH]

- detect: per GM-disjoint fold, a FEN + detection/attribution heads model (fingerprint
  constraints) and a plain CNN on raw pixels are trained in one Ray Train loop on the same
  batches; both are scored (ROC AUC) on the fold's *unseen* GMs against held-out real images,
  clean, after JPEG (quality 75) and after resizing (x0.5 and back) with torchvision.
- attribute: both models trained on every GM (+ real) are scored on held-out images of those
  GMs (closed set): accuracy beside the plain CNN and chance (1/classes); confusion matrices.
- link: embeddings of the fold models (pooled penultimate features of the attribution head;
  pooled fingerprint statistics) decide whether two images of *unseen* GMs share a source:
  pair ROC AUC and agglomerative clustering (adjusted Rand index), beside the plain CNN's
  embedding and raw-pixel statistics.

Everything is logged to the MLflow experiment ``gmparse-forensics`` (a parent run, nested
runs ``fold-k`` and ``final``); the final FEN model is registered as ``gm-detector`` and
``gm-attributor`` (alias ``champion``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gmparse.data_pipeline.collection import REAL_GM_ID, Collection, CollectionError
from gmparse.data_pipeline.folds import Fold, gm_folds
from gmparse.models.config import ConstraintWeights
from gmparse.workflows.lib.cli import add_dataclass_args, load_overrides, resolve
from gmparse.workflows.lib.job import start_job
from gmparse.workflows.lib.progress import FoldProgress
from gmparse.workflows.lib.runtime import die

if TYPE_CHECKING:
    from gmparse.models.forensics import ForensicSpec

EXPERIMENT = "gmparse-forensics"
TASKS = ("detect", "attribute", "link")
DETECTOR_NAME, ATTRIBUTOR_NAME = "gm-detector", "gm-attributor"
LINK_FEATURES = {"fen": "FEN head embedding", "fen_fpstats": "FEN fingerprint stats",
                 "cnn": "plain-CNN embedding", "pixels": "raw-pixel stats"}


@dataclass(frozen=True)
class ForensicsConfig:
    preset: str = "smoke"
    collection_preset: str = "smoke"  # data_pipeline.build preset used when --collection is not given
    fen_depth: int = 4
    fen_width: int = 16
    head_widths: tuple[int, ...] = (16, 32)  # ShallowHead widths
    spectral_head: bool = False  # heads also read the fingerprint's spectrum and the image's values (not in the paper)
    cnn_widths: tuple[int, ...] = ()  # plain CNN widths; empty = (w, 2w, 3w) with w = fen_width
    image_size: int = 32
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    task_scale: float = 10.0  # task losses x this against the constraints (docs/method.md)
    weights: ConstraintWeights = ConstraintWeights.detection()  # for detection / attribution (docs/method.md)
    folds: int = 2
    num_workers: int = 1
    use_gpu: bool | None = None
    cpus_per_worker: float = 1.0
    test_fraction: float = 0.2  # held-out images (attribution test, real test images)
    val_fraction: float = 0.15  # of the rest: checkpoint selection
    seed: int = 0
    jpeg_quality: int = 75
    resize_factor: float = 0.5
    max_link_images: int = 2000
    keep_checkpoints: int = 2
    max_failures: int = 2
    cache_decoded: bool = True  # materialize decoded images once per training run (small collections)
    register: bool = True

    def key(self) -> str:
        d = dataclasses.asdict(self)
        for k in ("register", "max_failures", "use_gpu", "keep_checkpoints", "cache_decoded"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


PRESETS: dict[str, ForensicsConfig] = {
    "smoke": ForensicsConfig(),
    "default": ForensicsConfig(preset="default", collection_preset="default", fen_depth=6, fen_width=24,
                               epochs=6, batch_size=64, folds=4),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="what to evaluate")
    p.add_argument("--preset", default="smoke", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--collection", default=os.environ.get("GMPARSE_COLLECTION"),
                   help="collection folder or URI (default: $GMPARSE_COLLECTION, else build/reuse the preset's zoo)")
    p.add_argument("--config", help="JSON/YAML overrides of the preset")
    p.add_argument("--storage-path", help="Ray Train storage (checkpoints)")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest interrupted run of this config (its trainers restart from checkpoints)")
    p.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Ray Data's own logs and progress output (default: a bar per training run)")
    add_dataclass_args(p, ForensicsConfig, "forensics (overrides the preset)", skip=("preset",), presets=PRESETS)
    return p


# --- one training run (a fold, or the final models) -----------------------------------------------
def _specs(cfg: ForensicsConfig, classes: list[str]) -> dict[str, ForensicSpec]:
    """Model name -> what builds it: the FEN detector/attributor and the plain CNN beside it."""
    from gmparse.models.forensics import MODEL_NAMES, ForensicSpec

    return {kind: ForensicSpec(kind, tuple(classes), cfg.image_size, cfg.fen_depth, cfg.fen_width, cfg.head_widths,
                               cfg.cnn_widths, cfg.spectral_head) for kind in MODEL_NAMES}


def _train(col: Collection, classes: list[str], cfg: ForensicsConfig, run_name: str, label: str, storage: str,
           use_gpu: bool, run_id: str):
    import mlflow

    from gmparse.data_pipeline.ray_data import epoch_plan
    from gmparse.models.forensics import balanced_class_weights, n_params
    from gmparse.workflows.lib.figures import heads_learning_curves, log_figure
    from gmparse.workflows.lib.forensics_task import HeadsTask, fit_heads, train_dataset
    from gmparse.workflows.lib.train_loop import LoopConfig

    gm_index = {g: i for i, g in enumerate(classes)}
    specs = _specs(cfg, classes)
    split = {"test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    train_ds = train_dataset(col, classes, "train", cfg.image_size, gm_index, **split)
    val_ds = train_dataset(col, classes, "val", cfg.image_size, gm_index, **split)
    if cfg.cache_decoded:  # decode once, not once per epoch (fits in the object store when small)
        train_ds, val_ds = train_ds.materialize(), val_ds.materialize()
    train_ds, plan = epoch_plan(train_ds, cached=cfg.cache_decoded, seed=cfg.seed, fraction=1.0,
                                batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    mlflow.log_params({f"params_{n}": n_params(spec.build()) for n, spec in specs.items()})
    counts = col.read_images(classes, columns=["gm_id"]).column("gm_id").value_counts().to_pylist()
    per_class = {str(d["values"]): int(d["counts"]) for d in counts}
    source_weight = balanced_class_weights([per_class.get(c, 0) for c in classes])
    task = HeadsTask(specs, cfg.weights, cfg.task_scale, source_weight)
    name = f"{run_name}-{label}"
    t0 = time.time()
    with FoldProgress(label, cfg.epochs) as bar:
        loop = LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, drop_last=False, plan=plan,
                          mlflow_run_id=run_id, tracking_uri=mlflow.get_tracking_uri(), progress=bar.queue)
        res = fit_heads(name, task, loop, train_ds, val_ds, storage_path=storage, num_workers=cfg.num_workers,
                        use_gpu=use_gpu, cpus_per_worker=cfg.cpus_per_worker, keep_checkpoints=cfg.keep_checkpoints,
                        max_failures=cfg.max_failures)
    mlflow.log_metrics({"train_seconds": time.time() - t0, **{f"best_epoch_{n}": e for n, e in res.best_epochs.items()}})
    mlflow.log_dict(res.history, "history.json")
    log_figure(heads_learning_curves(res.history, name), "figures/learning_curves.png")
    return specs, res


def _evaluate(col: Collection, parts: list[tuple[list[str], str | None]], specs: dict[str, ForensicSpec],
              states: dict[str, dict[str, Any]], cfg: ForensicsConfig,
              use_gpu: bool) -> dict[str, np.ndarray]:
    from gmparse.workflows.lib.forensics_task import evaluate_dataset, raw_dataset

    split = {"test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    sets = [raw_dataset(col, gms, part, **split) for gms, part in parts if gms]
    ds = sets[0].union(*sets[1:]) if len(sets) > 1 else sets[0]
    bundles = {n: (specs[n], states[n]) for n in specs}
    return evaluate_dataset(ds, bundles, cfg.jpeg_quality, cfg.resize_factor, use_gpu=use_gpu)


def detection_results(c: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    from gmparse.models.forensics import MODEL_NAMES, PERTURBATIONS
    from gmparse.models.metrics import detection_metrics

    return {n: {kind: detection_metrics(c[f"{n}_fake_{kind}"], c["is_fake"])["image/auc"] for kind in PERTURBATIONS}
            for n in MODEL_NAMES}


def linking_results(c: dict[str, np.ndarray], cfg: ForensicsConfig) -> dict[str, dict[str, Any]]:
    from gmparse.workflows.lib.linking import linking_metrics

    fake = c["is_fake"] == 1
    feats = {k: c[f"emb_{k}"][fake] for k in LINK_FEATURES if f"emb_{k}" in c}
    return linking_metrics(feats, c["gm_id"][fake], cfg.max_link_images, cfg.seed)


def run_fold(col: Collection, fold: Fold, cfg: ForensicsConfig, run_name: str, storage: str, use_gpu: bool,
             tasks: set[str]) -> dict[str, Any]:
    """Train on the fold's GMs (+ real), evaluate detection and linking on its unseen GMs."""
    import mlflow

    label = f"fold-{fold.index}"
    classes = [*fold.train_gms, REAL_GM_ID]
    with mlflow.start_run(run_name=label, nested=True, tags={"fold": label}) as run:
        mlflow.log_params({"fold": label, "train_gms": len(fold.train_gms), "test_gms": len(fold.test_gms)})
        mlflow.log_dict({"train_gms": list(fold.train_gms), "test_gms": list(fold.test_gms)}, "split.json")
        specs, res = _train(col, classes, cfg, run_name, label, storage, use_gpu, run.info.run_id)
        # unseen GMs (every image) against real images held out of training
        c = _evaluate(col, [(list(fold.test_gms), None), ([REAL_GM_ID], "test")], specs, res.states, cfg, use_gpu)
        out: dict[str, Any] = {"label": label, "test_images": int(len(c["is_fake"])),
                               "test_fake": int(c["is_fake"].sum())}
        if "detect" in tasks:
            out["detection"] = det = detection_results(c)
            for n, d in det.items():
                mlflow.log_metrics({f"test.detection.{n}.auc_{k}": v for k, v in d.items() if np.isfinite(v)})
        if "link" in tasks:
            out["linking"] = link = linking_results(c, cfg)
            for f, d in link.items():
                mlflow.log_metrics({f"test.linking.{f}.{k}": v for k, v in d.items() if np.isfinite(v)})
        mlflow.log_dict(out, "tables/metrics.json")
        return out


def run_final(col: Collection, cfg: ForensicsConfig, run_name: str, storage: str, use_gpu: bool,
              tasks: set[str]) -> dict[str, Any]:
    """Train on every GM (+ real); attribution on held-out images; register the FEN model."""
    import mlflow

    from gmparse.models.forensics import MODEL_NAMES, ForensicModel
    from gmparse.models.metrics import attribution_metrics
    from gmparse.workflows.lib.figures import confusion_figure, log_figure
    from gmparse.workflows.lib.registry import log_forensic_model

    classes = [*sorted(col.fake_gms["gm_id"]), REAL_GM_ID]
    with mlflow.start_run(run_name="final", nested=True, tags={"fold": "final"}) as run:
        mlflow.log_params({"fold": "final", "classes": len(classes)})
        mlflow.log_dict({"classes": classes}, "split.json")
        specs, res = _train(col, classes, cfg, run_name, "final", storage, use_gpu, run.info.run_id)
        out: dict[str, Any] = {"label": "final", "classes": classes}
        if "attribute" in tasks:
            c = _evaluate(col, [(classes, "test")], specs, res.states, cfg, use_gpu)
            index = {g: i for i, g in enumerate(classes)}
            true = np.array([index[g] for g in c["gm_id"]])
            att, cms = {}, {}
            for n in MODEL_NAMES:
                m = attribution_metrics(c[f"{n}_source_probs"], true, c["gm_id"], len(classes))
                att[n] = {"accuracy": m["image/accuracy"], "gm_accuracy": m["gm/accuracy"]}
                cms[n] = m["image/confusion"]
                mlflow.log_metrics({f"test.attribution.{n}.{k}": v for k, v in att[n].items()})
            att["chance"] = {"accuracy": 1.0 / len(classes), "gm_accuracy": 1.0 / len(classes)}
            mlflow.log_metric("test.attribution.chance", 1.0 / len(classes))
            out["attribution"] = att
            out["test_images"] = int(len(true))
            mlflow.log_dict({n: cm.tolist() for n, cm in cms.items()} | {"classes": classes}, "tables/confusion.json")
            log_figure(confusion_figure(cms, classes, "attribution on held-out images of seen GMs"),
                        "figures/confusion_attribution.png")
            out["linking_seen"] = link = linking_results(c, cfg)
            for f, d in link.items():
                mlflow.log_metrics({f"test.linking_seen.{f}.{k}": v for k, v in d.items() if np.isfinite(v)})
        mlflow.log_dict({k: v for k, v in out.items()}, "tables/metrics.json")
        if cfg.register:
            model = ForensicModel.from_state(specs["fen"], res.states["fen"])
            tags = {"collection": col.path}
            out["registered"] = {
                DETECTOR_NAME: log_forensic_model(model, "detector", DETECTOR_NAME, tags=tags),
                ATTRIBUTOR_NAME: log_forensic_model(model, "attributor", ATTRIBUTOR_NAME, tags=tags),
            }
        return out


# --- figures --------------------------------------------------------------------------------------
# --- the results table ----------------------------------------------------------------------------
def _ms(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None], float)
    if not np.isfinite(v).any():
        return float("nan"), float("nan")
    return float(np.nanmean(v)), float(np.nanstd(v))


def summarize(folds: list[dict[str, Any]], final: dict[str, Any] | None, cfg: ForensicsConfig) -> list[dict[str, Any]]:
    """One row per metric: fingerprint model, plain CNN and (where there is one) another baseline."""
    rows: list[dict[str, Any]] = []

    def add(task, metric, key, model, cnn, other=None, other_name="", n=1):
        rows.append({"task": task, "metric": metric, "key": key, "model": model, "plain_cnn": cnn,
                     "other": other, "other_name": other_name, "n": n})

    det = [f["detection"] for f in folds if "detection" in f]
    labels = {"clean": "AUC clean, unseen GMs", "jpeg": f"AUC JPEG q{cfg.jpeg_quality}",
              "resize": f"AUC resize x{cfg.resize_factor:g} and back"}
    for kind, text in labels.items() if det else []:
        add("detection", text, f"detection.auc_{kind}", _ms([d["fen"][kind] for d in det]),
            _ms([d["cnn"][kind] for d in det]), n=len(det))
    if final and "attribution" in final:
        a = final["attribution"]
        for k, text in (("accuracy", "accuracy, held-out images"), ("gm_accuracy", "accuracy, per GM (mean probs)")):
            add("attribution", text, f"attribution.{k}", (a["fen"][k], 0.0), (a["cnn"][k], 0.0),
                (a["chance"][k], 0.0), f"chance 1/{len(final['classes'])}")
    link = [f["linking"] for f in folds if "linking" in f]
    for k, text in (("pair_auc", "pair AUC, unseen GMs"), ("ari", "clustering ARI, unseen GMs")) if link else []:
        add("linking", text, f"linking.{k}", _ms([d["fen"][k] for d in link]), _ms([d["cnn"][k] for d in link]),
            _ms([d["pixels"][k] for d in link]), "raw-pixel stats", n=len(link))
        add("linking", text.replace(", unseen GMs", ", unseen GMs (fp stats)"), f"linking.fpstats.{k}",
            _ms([d["fen_fpstats"][k] for d in link]), _ms([d["cnn"][k] for d in link]),
            _ms([d["pixels"][k] for d in link]), "raw-pixel stats", n=len(link))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    def cell(v):
        if v is None:
            return f"{'':>17}"
        m, s = v
        return f"{m:>8.3f} ± {s:.3f}" if np.isfinite(m) else f"{'n/a':>17}"

    lines = [f"{'task':12} {'metric':36} {'fingerprint (FEN)':>17} {'plain CNN':>17} {'other baseline':>17}  better?"]
    for r in rows:
        other = f"{cell(r['other'])} {r['other_name']}" if r["other"] is not None else f"{'':>17}"
        best_base = max([r["plain_cnn"][0]] + ([r["other"][0]] if r["other"] is not None else []))
        better = "yes" if r["model"][0] > best_base else ("n/a" if not np.isfinite(r["model"][0]) else "NO")
        lines.append(f"{r['task']:12} {r['metric']:36} {cell(r['model'])} {cell(r['plain_cnn'])} {other}  {better}")
    return "\n".join(lines)


def check_inputs(col: Collection, cfg: ForensicsConfig, need_folds: bool) -> None:
    """Everything this job needs of its collection, before anything trains (``workflows.lib.job.start_job``)."""
    if need_folds:
        gm_folds(col.gms, cfg.folds, cfg.seed)
    if REAL_GM_ID not in set(col.gms["gm_id"]):
        raise CollectionError(f"{col.path} has no real images (gm_id 'real'): detection needs them")


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.preset not in PRESETS:
        die(f"unknown preset {args.preset!r}; choose from {sorted(PRESETS)}")
    cfg = resolve(PRESETS[args.preset], args, load_overrides(args.config))
    tasks = set(TASKS) if args.task == "all" else {args.task}
    need_folds = bool(tasks & {"detect", "link"})
    need_final = "attribute" in tasks or cfg.register
    if not cfg.head_widths or min(cfg.head_widths + cfg.cnn_widths) < 1:
        die(f"--head-widths needs at least one width and all widths must be positive, got "
            f"{cfg.head_widths} / {cfg.cnn_widths}")
    for name in ("test_fraction", "val_fraction"):
        if not 0 < getattr(cfg, name) < 1:
            die(f"--{name.replace('_', '-')} must be in (0, 1), got {getattr(cfg, name)}")
    job = start_job(args, cfg, "forensics", validate=lambda col: check_inputs(col, cfg, need_folds))
    import mlflow

    col, storage, use_gpu, run_name = job.col, job.storage, job.use_gpu, job.run_name(args.resume)
    folds = gm_folds(col.gms, cfg.folds, cfg.seed) if need_folds else []
    print(f"collection {col.path}: {len(col.fake_gms)} GMs, {col.manifest['counts']['images']} images; tasks "
          f"{sorted(tasks)}; {len(folds)} folds, {cfg.epochs} epochs, {cfg.num_workers} worker(s), "
          f"{'GPU' if use_gpu else 'CPU'}; run {run_name}", flush=True)
    t0 = time.time()
    with mlflow.start_run(run_name=run_name, tags={"preset": cfg.preset, "collection": col.path,
                                                   "task": args.task}) as parent:
        mlflow.log_params({k: ("" if v is None else v) for k, v in dataclasses.asdict(cfg).items()})
        mlflow.log_params({"collection": col.path, "gms": len(col.fake_gms), "task": args.task,
                           "storage_path": storage, "gpu_used": use_gpu})
        mlflow.log_dict(dataclasses.asdict(cfg), "config.json")
        fold_out = [run_fold(col, f, cfg, run_name, storage, use_gpu, tasks) for f in folds]
        final = run_final(col, cfg, run_name, storage, use_gpu, tasks) if need_final else None
        rows = summarize(fold_out, final, cfg)
        for r in rows:
            for col_name in ("model", "plain_cnn", "other"):
                if r[col_name] is not None and np.isfinite(r[col_name][0]):
                    mlflow.log_metric(f"{r['key']}.{col_name}", r[col_name][0])
        table = format_rows(rows)
        mlflow.log_dict({"rows": rows, "folds": fold_out,
                         "final": {k: v for k, v in (final or {}).items() if k != "registered"}},
                        "tables/forensics_summary.json")
        mlflow.log_text(table, "tables/forensics_summary.txt")
        print(f"\nForensics results ({len(folds)} GM-disjoint folds; mean ± std; 'fingerprint' = FEN + heads, "
              f"'plain CNN' = raw pixels, same data and epochs):")
        print(table, flush=True)
        if final and "registered" in final:
            for name, (uri, version) in final["registered"].items():
                print(f"registered {name} version {version} (alias champion): {uri}")
        mlflow.log_metric("wall_seconds", time.time() - t0)
        print(f"done in {time.time() - t0:.0f} s; MLflow run {parent.info.run_id} "
              f"(experiment {args.experiment}, mlflow server --backend-store-uri {mlflow.get_tracking_uri()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
