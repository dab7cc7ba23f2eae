"""The main job: GM-disjoint K-fold model parsing on Ray, tracked in MLflow.

    python workflows/cv_folds.py [--preset smoke|default|wide|paper] [--collection PATH] [--folds K]
    ray job submit --working-dir . -- python workflows/cv_folds.py --preset smoke

Per fold: Ray Data reads the training GMs' images (decode/resize/normalize in Ray), one
TorchTrainer trains FEN+PN (checkpoint every epoch, resumable), a Ray Data actor pool
predicts on the fold's unseen GMs, and the metrics are scored beside the random-ground-truth
baseline. A final parser trained on all GMs is registered as gm-parser@champion.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gmparse.data_pipeline.collection import REAL_GM_ID, Collection, open_collection
from gmparse.data_pipeline.folds import Fold, gm_folds, holdout_fold, holdout_gms
from gmparse.data_pipeline.ray_data import EpochPlan
from gmparse.models.config import ModelConfig
from gmparse.workflows.lib.cli import add_dataclass_args, flat_fields, load_overrides, resolve
from gmparse.workflows.lib.job import Job, start_job
from gmparse.workflows.lib.job_config import JOB_PRESETS, JobConfig, job_config
from gmparse.workflows.lib.progress import FoldProgress
from gmparse.workflows.lib.runtime import SetupError, die, tracking_server_outage

EXPERIMENT = "gmparse-cv"
SUMMARY_METRICS = [  # the per-group rows of the cross-fold table (GM level, as the paper reports)
    ("gm", "continuous/l1"),
    ("gm", "discrete/acc"),
    ("gm", "discrete/f1"),
    ("gm", "loss/f1"),
    ("gm", "loss/auc"),
    ("gm", "group/f1"),
    ("image", "continuous/l1"),
    ("image", "discrete/f1"),
    ("image", "loss/f1"),
    ("image", "loss/auc"),
]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help=f"one of {sorted(JOB_PRESETS)}")
    p.add_argument("--collection", default=os.environ.get("GMPARSE_COLLECTION"),
                   help="collection folder or URI (default: $GMPARSE_COLLECTION, else build/reuse the preset's zoo)")
    p.add_argument("--config", help="JSON/YAML overrides, e.g. the best config of a Tune sweep")
    p.add_argument("--storage-path", help="Ray Train storage (checkpoints); s3://... or NFS on clusters")
    p.add_argument("--resume", action="store_true", help="continue the last run of this config and collection")
    p.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    p.add_argument("--test-collection", help="after training the final parser, score it on every GM of this "
                   "collection (e.g. an ingested folder of your own GMs) beside the classical baseline")
    p.add_argument("--final-only", action="store_true",
                   help="train and register the final parser alone: no folds, no pooled table (e.g. to register a "
                        "config whose folds are measured, or a challenger judged with --test-collection)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's and Ray Data's own logs and progress output (default: a bar per fold)")
    add_dataclass_args(p, JobConfig, "job (overrides the preset)", skip=("preset",), presets=JOB_PRESETS)
    return p


def flat_params(cfg: JobConfig) -> dict[str, Any]:
    """MLflow params: one per option (the nested model and weights inlined, as on the command line)."""
    return {k: ("" if v is None else ",".join(map(str, v)) if isinstance(v, tuple) else v)
            for k, v in flat_fields(cfg).items()}


def metric_key(level: str, name: str, kind: str = "test") -> str:
    return f"{kind}.{level}.{name.replace('/', '.')}"


def family_fingerprints(col: Collection, gm_ids: list[str], model_cfg: ModelConfig, state, size: int, title: str):
    """One image per family among ``gm_ids`` (+ real) with the model's fingerprint."""
    import torch

    from gmparse.data_pipeline.preprocess import decode_image, normalize, resize
    from gmparse.models.parser import ParsingModel
    from gmparse.workflows.lib.figures import fingerprints_by_family

    fam = col.gms.set_index("gm_id")["family"]
    pick: dict[str, str] = {}
    for g in [*gm_ids, REAL_GM_ID]:
        pick.setdefault(str(fam[g]), g)
    table = col.read_images(list(pick.values()), columns=["gm_id", "image"]).to_pydict()
    first: dict[str, bytes] = {}
    for g, b in zip(table["gm_id"], table["image"]):
        first.setdefault(g, b)
    model = ParsingModel(model_cfg)
    model.load_state_dict(state)
    model.eval()
    samples, fps = {}, {}
    for family, g in pick.items():
        img = resize(decode_image(first[g]), size)
        with torch.no_grad():
            fps[family] = model.fingerprint(torch.from_numpy(normalize(img[None])))[0].numpy()
        samples[family] = img
    return fingerprints_by_family(samples, fps, title)


def run_fold(col: Collection, fold: Fold, cfg: JobConfig, run_name: str, storage_path: str,
             use_gpu: bool, evaluate: bool = True, fault_marker: str | None = None,
             parent: tuple[str, str, str] | None = None, progress: Any = None) -> dict[str, Any]:
    """Train one fold (or the final model when ``fold.test_gms`` is empty), evaluate, log.

    ``progress``: the queue of the driver's ``workflows.lib.progress.FoldProgress`` bar, or None."""
    import mlflow

    from gmparse.workflows.lib.figures import learning_curves, log_figure
    from gmparse.workflows.lib.parsing_task import fit_fold, parsing_task

    label = f"fold-{fold.index}" if evaluate else "final"
    fit_gms, val_gms = holdout_gms(col.gms, fold.train_gms, cfg.val_gms, cfg.seed + max(fold.index, 0))
    task, loop = parsing_task(cfg, col.targets(fit_gms), fault_marker, progress=progress)
    train_ds, plan, val_ds, eval_ds = fold_datasets(col, cfg, fit_gms, val_gms, fold.test_gms)
    loop = dataclasses.replace(loop, plan=plan)
    exp_id, parent_id, uri = parent or (None, None, None)
    if uri:  # (experiment id, parent run id, tracking URI): also right in a Ray task (--concurrent-folds)
        mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=label, nested=True, tags={"fold": label}, experiment_id=exp_id,
                          parent_run_id=parent_id) as run:
        mlflow.log_params({"fold": label, "train_gms": len(fit_gms), "val_gms": len(val_gms),
                           "test_gms": len(fold.test_gms)})
        mlflow.log_dict({"train_gms": list(fit_gms), "val_gms": list(val_gms), "test_gms": list(fold.test_gms)},
                        "split.json")
        loop = dataclasses.replace(loop, mlflow_run_id=run.info.run_id)
        t0 = time.time()
        with tracking_server_outage():  # the server gone: end this run and the parent without new waits
            res = fit_fold(f"{run_name}-{label}", task, loop, train_ds, val_ds, storage_path=storage_path,
                           num_workers=cfg.num_workers, use_gpu=use_gpu, cpus_per_worker=cfg.cpus_per_worker,
                           keep_checkpoints=cfg.keep_checkpoints, max_failures=cfg.max_failures, eval_ds=eval_ds)
        mlflow.log_metrics({"train_seconds": time.time() - t0, "best_epoch": res.best_epoch})
        mlflow.log_dict(res.history, "history.json")
        log_figure(learning_curves(res.history, f"{label}: learning curves"), "figures/learning_curves.png")
        out: dict[str, Any] = {"label": label, "state": res.state, "history": res.history,
                               "run_id": run.info.run_id, "checkpoint": res.checkpoint_path}
        if evaluate:
            out.update(evaluate_fold(col, fold, cfg, res.state, use_gpu, label))
        return out


def fold_datasets(col: Collection, cfg: JobConfig, fit_gms, val_gms, test_gms
                  ) -> tuple[Any, EpochPlan, Any, dict[str, Any]]:
    """A fold's Ray Datasets: training images of the training GMs and how each epoch draws from
    them (a fresh share each epoch), their held-out images, and the per-epoch watch sets: held-out
    GMs (``valgm``) and the unseen GMs."""
    from gmparse.data_pipeline.ray_data import epoch_plan, image_dataset

    ds_args = {"size": cfg.image_size, "val_fraction": cfg.val_fraction, "seed": cfg.seed}
    train_ds = image_dataset(col, fit_gms, split="train", **ds_args)
    val_ds = image_dataset(col, fit_gms, split="val", **ds_args)
    # per-epoch GM-level curves: held-out GMs pick the epoch; the fold's unseen GMs are only watched
    # (a quarter of their images, by the same seeded hash)
    watch = {**ds_args, "val_fraction": 0.25, "split": "val"}
    eval_ds = {"valgm": image_dataset(col, val_gms, **watch)} if val_gms else {}
    if test_gms:
        eval_ds["unseen"] = image_dataset(col, test_gms, **watch)
    if cfg.cache_decoded:  # decode once, not once per epoch (fits in the object store when small)
        train_ds, val_ds = train_ds.materialize(), val_ds.materialize()
        eval_ds = {k: v.materialize() for k, v in eval_ds.items()}
    train_ds, plan = epoch_plan(train_ds, cached=cfg.cache_decoded, seed=cfg.seed, fraction=cfg.epoch_fraction,
                                batch_size=cfg.step_batch_size, num_workers=cfg.num_workers)
    return train_ds, plan, val_ds, eval_ds


def evaluate_fold(col: Collection, fold: Fold, cfg: JobConfig, state: dict[str, Any], use_gpu: bool,
                  label: str) -> dict[str, Any]:
    """Score the fold's model and the classical baseline on every image of the unseen GMs; log
    the tables, the confusion matrix and the fingerprints (inside the fold's MLflow run)."""
    import mlflow
    import pandas as pd

    from gmparse.data_pipeline.ray_data import image_dataset
    from gmparse.models.metrics import evaluate_parsing, gm_level, metric_table
    from gmparse.models.predictions import Predictions
    from gmparse.models.significance import metrics_of
    from gmparse.workflows.lib.batch_inference import predict_dataset
    from gmparse.workflows.lib.evaluation import classical_baseline
    from gmparse.workflows.lib.figures import discrete_confusion, log_figure

    test_ds = image_dataset(col, fold.test_gms, split="all", size=cfg.image_size, val_fraction=cfg.val_fraction,
                            seed=cfg.seed)
    pred, targets, gm_ids, _, _ = predict_dataset(test_ds, cfg.model, state, use_gpu=use_gpu)
    report = evaluate_parsing(pred, targets, gm_ids, col.ranges, n_shuffles=cfg.n_shuffles, seed=cfg.seed)
    rows = metric_table(report)
    for r in rows:
        mlflow.log_metric(metric_key(r["level"], f"{r['group']}/{r['metric']}" if r["metric"] != r["group"] else r["group"]), r["model"])
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(rows).to_csv(Path(tmp) / "metrics.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "metrics.csv"), "tables")
    mlflow.log_dict(rows, "tables/metrics.json")
    log_figure(discrete_confusion(pred.discrete, targets, f"{label}: discrete values on unseen GMs (images)"),
                "figures/confusion_discrete.png")
    log_figure(family_fingerprints(col, list(fold.test_gms), cfg.model, state, cfg.image_size,
                                    f"{label}: fingerprints of unseen GMs"), "figures/fingerprints.png")
    out: dict[str, Any] = {"rows": rows}
    out["gm_ids"], out["gm_pred"], out["gm_targets"] = gm_level(pred, targets, gm_ids)
    ids, cpred, secs = classical_baseline(col, fold.train_gms, fold.test_gms, cfg.image_size,
                                          cfg.baseline_images_per_gm, cfg.val_fraction, cfg.seed)
    out["classical_gm_ids"], out["classical_pred"] = ids, cpred
    out["classical"] = metrics_of(cpred, out["gm_targets"])
    out["prior_pred"] = Predictions.prior(col.targets(fold.train_gms), len(ids))
    mlflow.log_metrics({"classical_seconds": secs, **{
        metric_key("gm", k, "classical"): v for k, v in out["classical"].items() if np.isfinite(v)}})
    return out


def summarize_folds(fold_rows: list[list[dict[str, Any]]],
                    classical: list[dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Mean ± std across folds of every (level, metric) row: model, random baseline and, at GM
    level, the classical baseline."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in fold_rows:
        for r in rows:
            name = r["group"] if r["metric"] == r["group"] else f"{r['group']}/{r['metric']}"
            by_key.setdefault((r["level"], name), []).append(r)
    out = []
    for (level, name), rs in by_key.items():
        m = np.array([r["model"] for r in rs], float)
        b = np.array([r["baseline"] for r in rs], float)
        p = np.array([r["p_value"] for r in rs], float)
        c = np.array([f.get(name, np.nan) for f in classical or []] if level == "gm" else [], float)
        out.append({"level": level, "metric": name, "model_mean": float(np.nanmean(m)), "model_std": float(np.nanstd(m)),
                    "baseline_mean": float(np.nanmean(b)), "baseline_std": float(np.nanstd(b)),
                    "classical_mean": float(np.nanmean(c)) if np.isfinite(c).any() else float("nan"),
                    "classical_std": float(np.nanstd(c)) if np.isfinite(c).any() else float("nan"),
                    "p_value_max": float(np.nanmax(p)) if np.isfinite(p).any() else float("nan"), "folds": len(rs)})
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    """Per-fold spread (mean ± std over folds): FEN+PN, the classical baseline, random ground truth."""
    keyed = {(r["level"], r["metric"]): r for r in summary}
    lines = [f"{'level':6} {'metric':16} {'FEN+PN (mean ± std)':>20} {'classical':>16} {'random':>16} "
             f"{'worst-fold p':>12}"]
    for level, name in SUMMARY_METRICS:
        r = keyed.get((level, name))
        if r is None:
            continue
        cls = (f"{r['classical_mean']:7.4f} ± {r['classical_std']:.4f}" if np.isfinite(r.get("classical_mean", np.nan))
               else f"{'—':>16}")
        lines.append(f"{level:6} {name:16} {r['model_mean']:11.4f} ± {r['model_std']:.4f} {cls:>16} "
                     f"{r['baseline_mean']:7.4f} ± {r['baseline_std']:.4f} {r['p_value_max']:12.3f}"
                     f"{'  (lower is better)' if name.endswith('l1') else ''}")
    return "\n".join(lines)


def job_folds(col: Collection, cfg: JobConfig) -> list[Fold]:
    """The K GM-disjoint folds, or with ``--holdout COLUMN=VALUE`` the one fold testing on those GMs."""
    return holdout_fold(col.gms, cfg.holdout) if cfg.holdout else gm_folds(col.gms, cfg.folds, cfg.seed)


def check_inputs(col: Collection, args: argparse.Namespace, cfg: JobConfig) -> None:
    """Everything this job needs of its inputs, before anything trains (``workflows.lib.job.start_job``)."""
    if args.final_only and not cfg.final_model:
        raise SetupError("--final-only trains the final parser: drop --final-model false")
    job_folds(col, cfg)
    if args.test_collection:
        if not cfg.final_model:
            raise SetupError("--test-collection scores the final parser: drop --final-model false")
        if open_collection(args.test_collection).fake_gms.empty:
            raise SetupError(f"--test-collection {args.test_collection} has no GMs to score")


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        cfg = resolve(job_config(args.preset), args, load_overrides(args.config))
    except ValueError as e:
        die(str(e))
    job = start_job(args, cfg, "cv", validate=lambda col: check_inputs(col, args, cfg))
    import mlflow

    col, run_name = job.col, job.run_name(args.resume)
    folds = [] if args.final_only else job_folds(col, cfg)
    marker_dir = job.storage if "://" not in job.storage else tempfile.gettempdir()
    fault_marker = str(Path(marker_dir) / f"{run_name}.killed") if cfg.kill_after_epoch >= 0 else None
    what = "no folds (--final-only)" if args.final_only else f"{len(folds)} folds"
    print(f"collection {col.path}: {len(col.fake_gms)} GMs, {col.manifest['counts']['images']} images; "
          f"{what}, {cfg.epochs} epochs, {cfg.num_workers} worker(s), {'GPU' if job.use_gpu else 'CPU'}; "
          f"run {run_name}", flush=True)
    t0 = time.time()
    # a resumed run's wall_seconds counts this invocation only (the folds done before are reused)
    tags = {"preset": cfg.preset, "collection": col.path, **({"resumed": "true"} if args.resume else {}),
            **({"final_only": "true"} if args.final_only else {})}
    with tracking_server_outage(job.storage):  # a server gone past MLflow's retries: one line, then --resume
        if args.resume:
            close_lost_runs(args.experiment, run_name)
        with mlflow.start_run(run_name=run_name, tags=tags) as parent:
            mlflow.log_params(flat_params(cfg))
            mlflow.log_params({"collection": col.path, "gms": len(col.fake_gms), "storage_path": job.storage,
                               "gpu_used": job.use_gpu})
            mlflow.log_dict(dataclasses.asdict(cfg), "config.json")
            mlflow.log_dict({"ranges": col.ranges.to_dict(), "schema_version": col.manifest["schema_version"]}, "collection.json")
            ids = (parent.info.experiment_id, parent.info.run_id, mlflow.get_tracking_uri())
            if folds:
                report_cv(train_folds(job, folds, cfg, run_name, fault_marker, ids), cfg)
            if cfg.final_model:
                final_parser(job, cfg, run_name, ids, args.test_collection)
            mlflow.log_metric("wall_seconds", time.time() - t0)
            mlflow.log_metric("driver_max_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            print(f"done in {time.time() - t0:.0f} s; MLflow run {parent.info.run_id} "
                  f"(mlflow server --backend-store-uri {mlflow.get_tracking_uri()}); "
                  f"checkpoints {job.storage}/{run_name}-*")
    return 0


def close_lost_runs(experiment: str, run_name: str) -> None:
    """``--resume``: the MLflow runs of ``run_name`` an earlier invocation left RUNNING (its driver
    was lost with the head node, or could not reach the tracking server to close them) end FAILED,
    tagged ``gmparse.closed_by=resume``; the resumed invocation opens runs of its own."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    running = "attributes.status = 'RUNNING'"
    for parent in client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_name}' and {running}"):
        children = client.search_runs([exp.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and {running}")
        for run in [*children, parent]:
            client.set_tag(run.info.run_id, "gmparse.closed_by", "resume")
            client.set_terminated(run.info.run_id, "FAILED")


def train_folds(job: Job, folds: list[Fold], cfg: JobConfig, run_name: str, fault_marker: str | None,
                ids: tuple[str, str, str]) -> list[dict[str, Any]]:
    """Train and evaluate every fold, one after the other or (``--concurrent-folds``) at once, a
    progress bar each, then a line each with its unseen GMs' scores."""
    import ray

    bars = [FoldProgress(f"fold-{f.index}", cfg.epochs, position=i if cfg.concurrent_folds else 0)
            for i, f in enumerate(folds)]
    common = {"cfg": cfg, "run_name": run_name, "storage_path": job.storage, "use_gpu": job.use_gpu,
              "fault_marker": fault_marker, "parent": ids}
    if cfg.concurrent_folds:  # each fold's driver in a Ray task; trainers share the cluster
        remote = ray.remote(num_cpus=0)(run_fold)
        with contextlib.ExitStack() as stack:
            queues = [stack.enter_context(b).queue for b in bars]
            results = ray.get([remote.remote(job.col, f, progress=q, **common) for f, q in zip(folds, queues, strict=True)])
        for r in results:
            print(fold_line(r), flush=True)
        return results
    results = []
    for f, bar in zip(folds, bars, strict=True):
        with bar:
            results.append(run_fold(job.col, f, progress=bar.queue, **common))
        print(fold_line(results[-1]), flush=True)
    return results


def final_parser(job: Job, cfg: JobConfig, run_name: str, ids: tuple[str, str, str], test_collection: str | None) -> None:
    """Train the parser on every GM, register it (``cfg.alias``), and score it on ``test_collection``."""
    import mlflow

    from gmparse.models.parser import Parser, ParsingModel
    from gmparse.workflows.lib.registry import CHAMPION, challenge_champion

    col = job.col
    with FoldProgress("final", cfg.epochs) as bar:
        final = run_fold(col, Fold(-1, tuple(col.fake_gms["gm_id"]), ()), cfg, run_name, job.storage, job.use_gpu,
                         evaluate=False, parent=ids, progress=bar.queue)
    model = ParsingModel(cfg.model)
    model.load_state_dict(final["state"])
    parser = Parser(model.eval(), col.ranges)
    version = None
    if cfg.register:
        uri, version = log_and_register(parser, col, final["run_id"], cfg.alias)
        print(f"registered gm-parser version {version} (alias {cfg.alias}): {uri}")
    challenger = version is not None and cfg.alias != CHAMPION
    if challenger and not test_collection:
        test_collection = built_external_collection()  # what a challenger is judged on: looked for now, so a
        #                                                build that finished while the folds trained counts
    test_col = open_collection(test_collection) if test_collection else None
    if test_col is not None:
        report_external(parser, col, test_col, cfg)
    if challenger:
        judged = challenge_champion(parser, version, test_col, alias=cfg.alias, fit_mode=cfg.fit_mode, seed=cfg.seed,
                                    n_shuffles=cfg.pooled_shuffles)
        if judged is not None:
            with mlflow.start_run(run_id=final["run_id"], nested=True):
                mlflow.log_dict(judged[0], "tables/vs_champion.json")
                mlflow.log_text(judged[1], "tables/vs_champion.txt")


def built_external_collection() -> str | None:
    """The external collection (``build_collection.py --external``) when it is built, else None."""
    from gmparse.data_pipeline.external_gms import default_external_path

    path = default_external_path()
    if (path / "manifest.json").exists():
        print(f"--alias other than champion: the final parser is scored on the external collection {path}, "
              "and takes champion only by parsing it better", flush=True)
        return str(path)
    return None


def fold_line(out: dict[str, Any]) -> str:
    """One console line per evaluated fold: its unseen GMs' headline metrics beside the classical baseline."""
    from gmparse.models.significance import metrics_of

    own, cls = metrics_of(out["gm_pred"], out["gm_targets"]), out["classical"]
    cells = ", ".join(f"{name} {own[key]:.3f} ({cls[key]:.3f})" for name, key in (
        ("L1", "continuous/l1"), ("discrete acc", "discrete/acc"), ("discrete F1", "discrete/f1"),
        ("loss AUC", "loss/auc")))
    return f"{out['label']}: {len(out['gm_ids'])} unseen GMs, FEN+PN (classical): {cells}"


def report_cv(results: list[dict[str, Any]], cfg: JobConfig) -> None:
    """Print and log the pooled GM-level table (the headline) and the per-fold spread."""
    import mlflow

    from gmparse.models.significance import format_pooled, pooled_table
    from gmparse.workflows.lib.evaluation import log_pooled, pool

    summary = summarize_folds([r["rows"] for r in results], [r["classical"] for r in results])
    for r in summary:
        mlflow.log_metric(metric_key(r["level"], r["metric"], "cv"), r["model_mean"])
        mlflow.log_metric(metric_key(r["level"], r["metric"], "cv_baseline"), r["baseline_mean"])
    mlflow.log_dict(summary, "tables/cv_summary.json")
    spread = format_summary(summary)
    mlflow.log_text(spread, "tables/cv_summary.txt")
    parser, classical, prior, targets, _ = pool(results)
    rows = pooled_table(parser, classical, targets, n_shuffles=cfg.pooled_shuffles, seed=cfg.seed, prior=prior)
    pooled = format_pooled(rows)
    log_pooled(rows, pooled)
    print(f"\nPer fold (mean ± std over {len(results)} folds; random = labels shuffled across a fold's GMs):")
    print(spread)
    print(f"\nPooled over all {len(targets.continuous)} GMs, each scored by the fold that never saw it "
          f"({cfg.pooled_shuffles} shuffles; prior = the training GMs' median / most common class / base rates, "
          f"image-blind; p paired = FEN+PN vs classical, GMs swapped at random):")
    print(pooled, flush=True)


def report_external(parser, col: Collection, test_col: Collection, cfg: JobConfig) -> None:
    """The final parser on every GM of another collection (printed and logged as tables/external.*)."""
    import mlflow

    from gmparse.workflows.lib.evaluation import external_table

    rows, text = external_table(parser, col, test_col, fit_mode=cfg.fit_mode,
                                baseline_images_per_gm=cfg.baseline_images_per_gm, seed=cfg.seed,
                                n_shuffles=cfg.pooled_shuffles)
    mlflow.log_dict(rows, "tables/external.json")
    mlflow.log_text(text, "tables/external.txt")
    mlflow.log_param("test_collection", test_col.path)
    print(f"\nTrained on {col.path}, tested on every GM of {test_col.path} ({len(test_col.fake_gms)} GMs, "
          f"{test_col.image_size} px images fed as '{cfg.fit_mode}'):")
    print(text, flush=True)


def log_and_register(parser, col: Collection, run_id: str, alias: str) -> tuple[str, str | None]:
    import mlflow

    from gmparse.workflows.lib.registry import log_parser

    with mlflow.start_run(run_id=run_id, nested=True):
        return log_parser(parser, alias=alias, tags={"collection": col.path})


if __name__ == "__main__":
    sys.exit(main())
