"""Ray Tune sweep of the four fingerprint-constraint weights and the learning rate.

    python workflows/tune_sweep.py [--preset smoke|default|paper] [--num-samples N] [--search optuna|random]
        [--space lr=1e-4:1e-2] [--resume] [--ablation]

Objective: ``val_score`` = models.metrics.parsing_score on a GM-disjoint validation split
(GMs held out of fold 0's training GMs; fold 0's test GMs stay untouched), higher is better.

Each trial is a Tune *function* that builds and fits a ``TorchTrainer`` with
``TuneReportCallback`` — the Train/Tune integration Ray 2.60 recommends (``Tuner(trainer)``
is deprecated) — so a trial trains with exactly the main job's code and resources, and
ASHA stops weak trials from the per-epoch reports. Each trial logs to a nested MLflow run
of the sweep's parent run (Train V2 takes no Tune callbacks, so rank 0 logs itself).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gmparse.data_pipeline.collection import Collection, open_collection
from gmparse.data_pipeline.folds import gm_folds
from gmparse.workflows.lib.cli import add_dataclass_args, flat_fields, load_overrides, resolve, with_overrides
from gmparse.workflows.lib.job import start_job
from gmparse.workflows.lib.job_config import JOB_PRESETS, JobConfig, job_config
from gmparse.workflows.lib.runtime import die, tracking_server_outage

EXPERIMENT = "gmparse-tune"
WEIGHTS = ("magnitude", "spectrum", "repetitive", "symmetry")
#: log-uniform ranges: a decade either side of the paper's value (docs/method.md), lr around Adam's usual
DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "magnitude": (0.01, 1.0),
    "spectrum": (0.005, 0.5),
    "repetitive": (1e-4, 1e-2),
    "symmetry": (0.1, 10.0),
    "lr": (1e-4, 1e-2),
}
ABLATIONS = ("all", *(f"no_{w}" for w in WEIGHTS), "none")


class SpaceError(ValueError):
    """A search-space override that cannot be used."""


def parse_space(overrides: list[str] | None) -> dict[str, tuple[float, float]]:
    """``["lr=1e-4:1e-2", ...]`` applied over DEFAULT_SPACE; clear errors for anything else."""
    space = dict(DEFAULT_SPACE)
    for item in overrides or []:
        key, sep, rng = item.partition("=")
        if not sep or key not in space:
            raise SpaceError(f"--space {item!r}: expected NAME=LOW:HIGH with NAME in {sorted(space)}")
        lo_s, sep, hi_s = rng.partition(":")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise SpaceError(f"--space {item!r}: bounds must be numbers, as in {key}=0.01:1") from None
        if not sep or not (0 < lo < hi) or not np.isfinite(hi):
            raise SpaceError(f"--space {item!r}: need 0 < LOW < HIGH (log-uniform)")
        space[key] = (lo, hi)
    return space


def ablation_weights(name: str, cfg: JobConfig) -> dict[str, float]:
    w = cfg.weights.to_dict()
    if name == "none":
        return dict.fromkeys(WEIGHTS, 0.0)
    if name.startswith("no_"):
        w[name[3:]] = 0.0
    return w


def sweep_split(col: Collection, cfg: JobConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Fold 0's training GMs split again, GM-disjoint: (train GMs, validation GMs)."""
    import pandas as pd

    train = gm_folds(col.gms, cfg.folds, cfg.seed)[0].train_gms
    sub = col.gms[col.gms["gm_id"].isin(train)]
    inner = gm_folds(pd.DataFrame(sub), max(2, min(4, len(sub) // 2)), cfg.seed + 1)[0]
    return inner.train_gms, inner.test_gms


def _trial_mlflow_run(parent_id: str, experiment_id: str, trial_id: str, params: dict[str, Any]) -> str:
    """The trial's nested run, found again after a restore (no duplicate runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()  # the tracking URI was set from the trial config (trial_fn)
    found = client.search_runs([experiment_id], f"tags.trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_id}'")
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"trial-{trial_id}",
                            tags={"mlflow.parentRunId": parent_id, "trial_id": trial_id})
    client.log_batch(run.info.run_id, params=[__import__("mlflow").entities.Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


@dataclass(frozen=True)
class SweepSetup:
    """What every trial of a sweep shares, handed to trials by ``tune.with_parameters`` (typed,
    frozen); Tune's own config holds only the sampled values (and the ablation's name)."""

    job: JobConfig
    collection: str
    train_gms: tuple[str, ...]
    val_gms: tuple[str, ...]
    parent_run_id: str
    experiment_id: str
    sweep_name: str
    storage_path: str
    use_gpu: bool
    tracking_uri: str


def trial_fn(config: dict[str, Any], setup: SweepSetup) -> None:
    """One Tune trial: a TorchTrainer with this trial's weights, reporting to Tune each epoch."""
    import mlflow
    import ray.tune
    from mlflow.tracking import MlflowClient
    from ray.tune.integration.ray_train import TuneReportCallback

    from gmparse.data_pipeline.ray_data import epoch_plan, image_dataset
    from gmparse.workflows.lib.parsing_task import fit_fold, parsing_task

    mlflow.set_tracking_uri(setup.tracking_uri)
    trial_id = ray.tune.get_context().get_trial_id()
    over = {k: config[k] for k in (*WEIGHTS, "lr") if k in config}
    if "ablation" in config:
        over.update(ablation_weights(config["ablation"], setup.job))
    cfg = with_overrides(setup.job, over)
    col = open_collection(setup.collection)
    params = {**over, **({"ablation": config["ablation"]} if "ablation" in config else {})}
    run_id = _trial_mlflow_run(setup.parent_run_id, setup.experiment_id, trial_id, params)
    task, loop = parsing_task(cfg, col.targets(list(setup.train_gms)), mlflow_run_id=run_id)
    ds_args = {"size": cfg.image_size, "seed": cfg.seed}
    train_ds = image_dataset(col, list(setup.train_gms), split="all", **ds_args)
    val_ds = image_dataset(col, list(setup.val_gms), split="all", **ds_args)
    if cfg.cache_decoded:  # as in the main job: decode once, not once per epoch
        train_ds, val_ds = train_ds.materialize(), val_ds.materialize()
    train_ds, plan = epoch_plan(train_ds, cached=cfg.cache_decoded, seed=cfg.seed, fraction=cfg.epoch_fraction,
                                batch_size=cfg.step_batch_size, num_workers=cfg.num_workers)
    res = fit_fold(f"{setup.sweep_name}-trial-{trial_id}", task, replace(loop, plan=plan), train_ds, val_ds,
                   storage_path=setup.storage_path, num_workers=cfg.num_workers, use_gpu=setup.use_gpu,
                   cpus_per_worker=cfg.cpus_per_worker, keep_checkpoints=1, max_failures=cfg.max_failures,
                   callbacks=[TuneReportCallback()])
    log_gm_level(run_id, val_ds, cfg, res.state, col, setup.use_gpu)
    MlflowClient(setup.tracking_uri).set_terminated(run_id, "FINISHED")


def log_gm_level(run_id: str, val_ds, cfg: JobConfig, state: dict[str, Any], col: Collection, use_gpu: bool) -> None:
    """The best checkpoint on the validation GMs at GM level, beside the shuffled-label baseline
    (the main job's evaluation), as ``gm.*`` and ``baseline.gm.*`` metrics of the trial's run."""
    from gmparse.models.metrics import evaluate_parsing
    from gmparse.workflows.lib.batch_inference import predict_dataset
    from gmparse.workflows.lib.train_loop import log_epoch_to_mlflow

    pred, targets, gm_ids, _, _ = predict_dataset(val_ds, cfg.model, state, use_gpu=use_gpu)
    gm = evaluate_parsing(pred, targets, gm_ids, col.ranges, n_shuffles=cfg.n_shuffles, seed=cfg.seed)["gm"]
    metrics = {f"gm.{k}": v for k, v in gm.model.items()} | {f"baseline.gm.{k}": v for k, v in gm.baseline.items()}
    log_epoch_to_mlflow(run_id, metrics, 0)


def objective_figure(df, keys: list[str], full_length: int, paper: dict[str, float] | None = None):
    """val_score against each swept value (log x): filled dots ran all epochs, hollow ones were
    stopped early by ASHA (their score is from fewer epochs); dashed line: the paper's value."""
    from matplotlib.ticker import NullFormatter

    from gmparse.workflows.lib.figures import plt

    full = df.get("training_iteration", full_length) >= full_length
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), sharey=True)
    for ax, k in zip(np.atleast_1d(axes), keys):
        col = f"config/{k}"
        if col in df:
            ax.scatter(df[col][full], df["val_score"][full], s=22, color="C0", label="all epochs")
            ax.scatter(df[col][~full], df["val_score"][~full], s=22, facecolors="none", edgecolors="C0",
                       label="stopped by ASHA")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if paper and k in paper:
            ax.axvline(paper[k], color="gray", ls="--", lw=1, label="paper")
        ax.set_xlabel(k)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("val_score (GM-disjoint)")
    first.legend(fontsize=7, loc="best")
    fig.suptitle("objective against each swept value")
    fig.tight_layout()
    return fig


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help=f"one of {sorted(JOB_PRESETS)}")
    p.add_argument("--collection", default=os.environ.get("GMPARSE_COLLECTION"), help="collection folder or URI")
    p.add_argument("--config", help="JSON/YAML JobConfig overrides")
    p.add_argument("--num-samples", type=int, default=8, help="trials")
    p.add_argument("--search", choices=("optuna", "random"), default="optuna")
    p.add_argument("--space", action="append", help="override a range, e.g. --space lr=1e-4:1e-2 (repeatable)")
    p.add_argument("--max-concurrent", type=int, default=1, help="trials at once (GPUs // workers per trial)")
    p.add_argument("--storage-path", help="Tune/Train storage; s3:// or NFS on clusters")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this config")
    p.add_argument("--ablation", action="store_true", help="train with each constraint off in turn, and none")
    p.add_argument("--out", default="best_config.json", help="where to write the best config (cv_folds --config)")
    p.add_argument("--experiment", default=EXPERIMENT)
    add_dataclass_args(p, JobConfig, "job (overrides the preset)", skip=("preset",), presets=JOB_PRESETS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        cfg = resolve(job_config(args.preset), args, load_overrides(args.config))
        space = parse_space(args.space)
        if args.num_samples < 1:
            raise SpaceError("--num-samples must be at least 1")
    except ValueError as e:
        die(str(e))
    job = start_job(args, cfg, "tune", validate=lambda col: sweep_split(col, cfg))
    import mlflow
    from ray import tune

    col, storage, use_gpu = job.col, job.storage, job.use_gpu
    train_gms, val_gms = sweep_split(col, cfg)
    kind = "ablation" if args.ablation else f"{args.search}-{args.num_samples}"
    sweep_name = f"{job.base}-{kind}"
    sweep_path = f"{storage.rstrip('/')}/{sweep_name}"
    exp = mlflow.get_experiment_by_name(args.experiment)
    client = mlflow.MlflowClient()
    previous = client.search_runs([exp.experiment_id], f"tags.sweep = '{sweep_name}'", order_by=["start_time DESC"])
    resuming = args.resume and tune.Tuner.can_restore(sweep_path)
    if args.resume and not resuming:
        print(f"nothing to resume at {sweep_path}; starting the sweep")
    parent_ctx = (mlflow.start_run(run_id=previous[0].info.run_id) if resuming and previous
                  else mlflow.start_run(run_name=sweep_name, tags={"sweep": sweep_name}))
    t0 = time.time()
    with tracking_server_outage(storage):  # a server gone past MLflow's retries: one line, then --resume
        with parent_ctx as parent:
            setup = SweepSetup(cfg, col.path, tuple(train_gms), tuple(val_gms), parent.info.run_id, exp.experiment_id,
                               sweep_name, storage, bool(use_gpu), mlflow.get_tracking_uri())
            if not resuming:
                mlflow.log_params({"num_samples": args.num_samples, "search": args.search, "ablation": args.ablation,
                                   "train_gms": len(train_gms), "val_gms": len(val_gms), "collection": col.path})
                mlflow.log_dict({k: list(v) for k, v in space.items()}, "search_space.json")
            tuner = make_tuner(args, space, setup, sweep_path if resuming else None)
            grid = tuner.fit()
            expected = len(ABLATIONS) if args.ablation else args.num_samples
            if len(grid) < expected:  # Ctrl-C: Tune saved its state and returned early
                print(f"sweep interrupted after {len(grid)} of {expected} trials; continue it with --resume")
                return 130
            report_sweep(args, cfg, space, grid, client, exp.experiment_id, parent.info.run_id)
            mlflow.log_metric("wall_seconds", time.time() - t0)
            print(f"sweep {sweep_name}: MLflow run {parent.info.run_id}, Tune results {sweep_path}")
    return 0


def make_tuner(args, space: dict[str, tuple[float, float]], setup: SweepSetup, restore_from: str | None):
    """The Tuner: restored from ``restore_from``, else the ablation grid or the weight search
    (random or Optuna, with ASHA stopping weak trials early)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    cfg, sweep_name, storage = setup.job, setup.sweep_name, setup.storage_path
    trainable = tune.with_resources(tune.with_parameters(trial_fn, setup=setup), {"CPU": 0.5})
    if restore_from:
        return tune.Tuner.restore(restore_from, trainable=trainable, resume_errored=True)
    if args.ablation:
        return tune.Tuner(
            trainable, param_space={"ablation": tune.grid_search(list(ABLATIONS))},
            tune_config=tune.TuneConfig(metric="val_score", mode="max", max_concurrent_trials=args.max_concurrent),
            run_config=tune.RunConfig(name=sweep_name, storage_path=storage, verbose=1),
        )
    params = {k: tune.loguniform(*v) for k, v in space.items()}
    search = None
    if args.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=cfg.seed,
                              points_to_evaluate=[{k: flat_fields(cfg)[k] for k in space}])  # the paper's weights first
    return tune.Tuner(
        trainable, param_space=params,
        tune_config=tune.TuneConfig(
            metric="val_score", mode="max", num_samples=args.num_samples, search_alg=search,
            # max_t one past the last epoch: a full-length trial ends by itself (its run FINISHED),
            # only trials ASHA cuts short are stopped (their runs marked KILLED below)
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=cfg.epochs + 1, grace_period=1),
            max_concurrent_trials=args.max_concurrent,
        ),
        run_config=tune.RunConfig(name=sweep_name, storage_path=storage, verbose=1),
    )


def report_sweep(args, cfg: JobConfig, space: dict[str, tuple[float, float]], grid, client, experiment_id: str,
                 parent_id: str) -> None:
    """Close the trials ASHA stopped; print and log the ablation table, or the trials and the best
    weights (written to ``--out`` for ``cv_folds.py --config``) with the objective figure."""
    import mlflow

    from gmparse.workflows.lib.figures import log_figure

    df = grid.get_dataframe(filter_metric="val_score", filter_mode="max")
    _close_stopped_trials(client, experiment_id, parent_id, grid)
    if args.ablation:
        trials = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
        table = ablation_table({r.data.params.get("ablation"): r.data.metrics for r in trials})
        mlflow.log_text(table, "tables/ablation.txt")
        print(table)
        return
    best = grid.get_best_result(metric="val_score", mode="max")
    best_cfg = {k: float(best.config[k]) for k in space}
    Path(args.out).write_text(json.dumps(best_cfg, indent=2))
    mlflow.log_dict(best_cfg, "best_config.json")
    mlflow.log_metric("best_val_score", float(best.metrics["val_score"]))
    log_figure(objective_figure(df, list(space), cfg.epochs, {k: flat_fields(cfg)[k] for k in space}),
               "figures/objective_vs_weights.png")
    cols = ["trial_id", "val_score", *[f"config/{k}" for k in space if f"config/{k}" in df]]
    print(df[cols].sort_values("val_score", ascending=False).to_string(index=False))
    print(f"\nbest val_score {best.metrics['val_score']:.4f} with {best_cfg} -> {args.out} "
          f"(use: workflows/cv_folds.py --config {args.out})")


def _close_stopped_trials(client, experiment_id: str, parent_id: str, grid) -> None:
    """Trials stopped early by ASHA never reach their own end: their last reported epoch (which
    the stopped worker had no time to log) is copied from Tune's results, and their runs are
    marked KILLED."""
    from gmparse.workflows.lib.train_loop import log_epoch_to_mlflow

    last = {r.metrics.get("trial_id"): r.metrics for r in grid if r.metrics}
    for r in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"):
        if r.info.status != "RUNNING":
            continue
        m = last.get(r.data.tags.get("trial_id"), {})
        if "epoch" in m:
            logged = {x.step for x in client.get_metric_history(r.info.run_id, "epoch")}
            if int(m["epoch"]) not in logged:
                log_epoch_to_mlflow(r.info.run_id, {k: v for k, v in m.items() if k == "val_score" or k == "epoch"
                                                    or k.startswith(("train/", "val/", "worker/"))},
                                    int(m["epoch"]), client.tracking_uri)
        client.set_tag(r.info.run_id, "stopped_by", "scheduler" if m else "error")
        client.set_terminated(r.info.run_id, "KILLED")


ABLATION_ROWS = (("continuous.l1", "continuous L1 (lower better)"), ("discrete.f1", "discrete macro-F1"),
                 ("discrete.acc", "discrete accuracy"), ("loss.f1", "loss-type F1"), ("loss.auc", "loss-type AUC"),
                 ("group.f1", "loss-group F1"), ("score", "parsing score"))


def ablation_table(trials: dict[str | None, dict[str, float]]) -> str:
    """The paper's ablation table at GM level on the validation GMs: per group, the full model,
    each constraint switched off, none, and the random-ground-truth baseline (of the full model)."""
    cols = [a for a in ABLATIONS if a in trials]
    base = trials.get("all", {})
    lines = [f"{'GM level, validation GMs':30}" + "".join(f"{a:>14}" for a in cols) + f"{'random':>14}"]
    for key, label in ABLATION_ROWS:
        vals = [trials[a].get(f"gm.{key}", float("nan")) for a in cols]
        lines.append(f"{label:30}" + "".join(f"{v:14.4f}" for v in vals)
                     + f"{base.get(f'baseline.gm.{key}', float('nan')):14.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
