"""Tune sweep: search-space parsing (fast) and a smoke sweep with interrupt + resume (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from gmparse.workflows.lib.cli import flat_fields
from gmparse.workflows.lib.job_config import JobConfig
from gmparse.workflows.tune_sweep import (
    ABLATIONS,
    DEFAULT_SPACE,
    SpaceError,
    ablation_table,
    ablation_weights,
    parse_space,
)


def test_space_overrides_and_errors():
    s = parse_space(["lr=1e-5:1e-3", "symmetry=0.5:2"])
    assert s["lr"] == (1e-5, 1e-3) and s["symmetry"] == (0.5, 2.0) and s["magnitude"] == DEFAULT_SPACE["magnitude"]
    for bad in ["lr", "momentum=0.1:1", "lr=1e-3:1e-5", "lr=0:1", "lr=a:b", "lr=1e-3"]:
        with pytest.raises(SpaceError):
            parse_space([bad])


def test_default_space_brackets_the_paper_weights():
    paper = flat_fields(JobConfig())
    for k in ("magnitude", "spectrum", "repetitive", "symmetry", "lr"):
        lo, hi = DEFAULT_SPACE[k]
        assert lo < paper[k] < hi


def test_ablation_switches_each_constraint_off():
    cfg = JobConfig()
    assert ablation_weights("all", cfg)["symmetry"] == cfg.weights.symmetry
    assert ablation_weights("no_spectrum", cfg)["spectrum"] == 0 and ablation_weights("no_spectrum", cfg)["magnitude"] > 0
    assert set(ablation_weights("none", cfg).values()) == {0.0}
    assert len(ABLATIONS) == 6


def test_ablation_table_has_every_variant_and_the_random_baseline():
    trials = {a: {"gm.score": 0.5 + i / 100, "gm.continuous.l1": 0.2, "baseline.gm.score": 0.3}
              for i, a in enumerate(ABLATIONS)}
    lines = ablation_table(trials).splitlines()
    assert all(a in lines[0] for a in ABLATIONS) and lines[0].split()[-1] == "random"
    score = next(line for line in lines if line.startswith("parsing score")).split()[2:]
    assert [float(v) for v in score] == [0.5 + i / 100 for i in range(len(ABLATIONS))] + [0.3]
    missing = next(line for line in lines if line.startswith("loss-type AUC")).split()
    assert missing[-1] == "nan"  # a metric nobody logged shows as nan, not as a number


def test_bad_space_is_a_clear_cli_error():
    r = subprocess.run([sys.executable, str(REPO_ROOT / "workflows" / "tune_sweep.py"), "--space", "lr=5:1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "LOW < HIGH" in r.stderr


@pytest.mark.slow
def test_smoke_sweep_interrupt_and_resume(smoke_collection, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    args = [sys.executable, str(REPO_ROOT / "workflows" / "tune_sweep.py"), "--preset", "smoke",
            "--collection", smoke_collection.path, "--storage-path", str(tmp_path / "runs"), "--num-samples", "2",
            "--epochs", "1", "--search", "random", "--out", str(tmp_path / "best.json")]
    client = MlflowClient(uri)

    def trial_runs():
        exp = client.get_experiment_by_name("gmparse-tune") if (tmp_path / "mlflow.db").exists() else None
        return [r for r in client.search_runs([exp.experiment_id]) if "trial_id" in r.data.tags] if exp else []

    log = open(tmp_path / "sweep.log", "w")  # a file, not a pipe: nobody reads a pipe, and a full one blocks
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 420
        def trained():  # trials whose only epoch is logged and checkpointed (finished training)
            return {r.data.tags["trial_id"]: r for r in trial_runs()
                    if [m.step for m in client.get_metric_history(r.info.run_id, "epoch")] == [0]
                    and any((tmp_path / "runs").glob(f"*-trial-{r.data.tags['trial_id']}/checkpoint_*"))}

        while time.time() < deadline and not trained():
            time.sleep(3)
        first = trained()
        assert first, "no trial finished before the interrupt:\n" + (tmp_path / "sweep.log").read_text()[-3000:]
        proc.send_signal(2)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    r = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = trial_runs()
    ids = [r.data.tags["trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == 2, ids  # no trial redone as a new run
    for tid, run in first.items():  # a finished trial was not trained again
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert steps == [0], (tid, steps)
    assert (tmp_path / "best.json").exists()
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    finished = [r for r in runs if r.info.status == "FINISHED"]  # KILLED: stopped by ASHA, not scored
    assert finished, [r.info.status for r in runs]
    for run in finished:  # each trial's best checkpoint scored at GM level beside the random baseline
        m = client.get_run(run.info.run_id).data.metrics
        assert 0 <= m["gm.score"] <= 1 and 0 <= m["baseline.gm.score"] <= 1, m


def test_stopped_trials_get_their_last_epoch_and_are_closed(tmp_path):
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from gmparse.workflows.tune_sweep import _close_stopped_trials

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("t")
    parent = client.create_run(exp).info.run_id
    runs = {tid: client.create_run(exp, tags={"mlflow.parentRunId": parent, "trial_id": tid}).info.run_id
            for tid in ("stopped", "errored", "done")}
    client.log_metric(runs["stopped"], "epoch", 0.0, step=0)  # epoch 0 logged; epoch 1 reported, not logged
    client.set_terminated(runs["done"], "FINISHED")
    grid = [SimpleNamespace(metrics={"trial_id": "stopped", "epoch": 1.0, "val_score": 0.4, "train/total": 2.0,
                                     "config/lr": 0.1}),
            SimpleNamespace(metrics={}), SimpleNamespace(metrics={"trial_id": "done", "epoch": 3.0})]
    _close_stopped_trials(client, exp, parent, grid)
    stopped = client.get_run(runs["stopped"])
    assert stopped.info.status == "KILLED" and stopped.data.tags["stopped_by"] == "scheduler"
    assert [m.step for m in client.get_metric_history(runs["stopped"], "epoch")] == [0, 1]
    assert stopped.data.metrics["val_score"] == 0.4 and "config/lr" not in stopped.data.metrics
    assert client.get_run(runs["errored"]).data.tags["stopped_by"] == "error"
    assert client.get_run(runs["done"]).info.status == "FINISHED"  # left alone


def test_a_sweeps_best_config_feeds_the_main_job(tmp_path):
    """What tune_sweep.py writes to --out (the swept weights and learning rate) is what
    ``cv_folds.py --config`` reads: on the default preset, those fields change and the network
    (the default champion's architecture) does not."""
    import json

    from gmparse.workflows import cv_folds
    from gmparse.workflows.lib.cli import flat_fields, load_overrides, resolve
    from gmparse.workflows.lib.job_config import job_config
    from gmparse.workflows.tune_sweep import DEFAULT_SPACE

    best = {k: float(lo * 1.5) for k, (lo, _) in DEFAULT_SPACE.items()}  # as tune_sweep.report writes it
    (tmp_path / "best.json").write_text(json.dumps(best))
    args = cv_folds.get_args_parser().parse_args(["--preset", "default", "--config", str(tmp_path / "best.json")])
    cfg = resolve(job_config("default"), args, load_overrides(args.config))
    flat = flat_fields(cfg)
    assert {k: flat[k] for k in best} == best
    assert cfg.model == job_config("default").model and cfg.epochs == job_config("default").epochs
