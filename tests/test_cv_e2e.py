"""The main job end to end: Ray Data + Ray Train per fold (with a worker killed and resumed),
MLflow runs and registry, ``ray job submit`` against a real head and a real MLflow server, and
with the defaults (results outlive Ray's per-job copy of the checkout and the head)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, fold_runs, free_port, job_runs, tracking_to
from mlflow_server import start_mlflow_server, stop_mlflow_server, wait_http
from ray_head import BIN, local_head

from gmparse.data_pipeline import schema

pytestmark = pytest.mark.slow
SMOKE_ARGS = ["--preset", "smoke", "--folds", "2", "--n-shuffles", "5"]


#: what the terminal must not show unless --verbose: MLflow's and Ray's own lines (capfd: the processes'
#: file descriptors, so C++ lines count too). Not listed: Ray Data's one core_worker.cc line about an
#: actor pool's constructor arguments, which Ray Data always puts in the object store while asking
#: for restarts; the only way to silence it would give up the actors' restarts (docs/main-job.md).
CONSOLE_NOISE = ("INFO mlflow", "Creating initial MLflow database", "Successfully registered model", "Created version",
                 "(raylet)", "Token authentication is enabled", "CloudPickle", "Add type hints", "Downloading artifacts")


def test_cv_job_kill_resume_tracking_and_registry(smoke_collection, sqlite_tracking, tmp_path, capfd):
    from mlflow import MlflowClient, pyfunc

    from gmparse.workflows import cv_folds

    storage = tmp_path / "runs"
    rc = cv_folds.main([*SMOKE_ARGS, "--collection", smoke_collection.path, "--storage-path", str(storage),
                        "--epochs", "2", "--kill-after-epoch", "0", "--val-gms", "0.25",
                        # the default preset's model and checkpoint policy
                        "--pn-input", "branch", "--spectral-residual", "true", "--image-stats", "true",
                        "--checkpoint", "last", "--ema", "0.9", "--test-collection", smoke_collection.path,
                        "--alias", "challenger"])  # a challenger of an empty registry becomes the champion
    assert rc == 0
    captured = capfd.readouterr()
    out = captured.out
    # (Ray's report of the worker this test kills on purpose is a fault the user should see: it stays)
    noisy = [ln for ln in (captured.out + captured.err).splitlines()
             if any(n in ln for n in CONSOLE_NOISE) and "A worker died or was killed" not in ln]
    assert not noisy, noisy[:5]
    assert "Per fold" in out and "continuous/l1" in out and "loss/auc" in out
    # the console follows training: a line per epoch of every fold and of the final model (not a
    # terminal here), a line per evaluated fold, and none of Ray Data's INFO blocks
    for label in ("fold-0", "fold-1", "final"):
        assert f"{label} epoch 2/2, " in captured.err, captured.err[-2000:]
    assert "fold-1: " in out and "unseen GMs, FEN+PN (classical): L1 " in out
    assert "Total Progress" not in captured.err + out and "logging_progress.py" not in captured.err + out
    pooled = out[out.index("Pooled over all"):]
    n_gms = len(smoke_collection.fake_gms)
    assert f"Pooled over all {n_gms} GMs" in pooled and "FEN+PN" in pooled and "classic" in pooled
    assert "Trained on" in out and "tested on every GM" in out  # --test-collection
    assert list(storage.glob("*.killed")), "the fault injection did not kill a worker"

    client = MlflowClient()
    runs = job_runs(client)
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    assert "resumed" not in parents[0].data.tags  # only --resume tags its wall time as partial
    children = {r.data.tags["fold"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == {"fold-0", "fold-1", "final"}
    for name, run in children.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert sorted(steps) == [0, 1], f"{name}: epochs logged {steps} (lost or repeated after the kill)"
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert "figures/learning_curves.png" in arts
        assert run.data.metrics["best_epoch"] == 1, f"{name}: --checkpoint last kept epoch {run.data.metrics['best_epoch']}"
    fold0 = children["fold-0"]
    assert {a.path for a in client.list_artifacts(fold0.info.run_id, "tables")} >= {"tables/metrics.csv", "tables/metrics.json"}
    assert {"figures/confusion_discrete.png", "figures/fingerprints.png"} <= {
        a.path for a in client.list_artifacts(fold0.info.run_id, "figures")}
    assert "test.gm.loss.auc" in fold0.data.metrics
    assert "cv.gm.continuous.l1" in parents[0].data.metrics and "cv_baseline.gm.loss.f1" in parents[0].data.metrics
    pm = parents[0].data.metrics
    for col in ("fen_pn", "classical", "prior", "random", "p_fen_pn_vs_random", "p_fen_pn_vs_classical"):
        assert f"pooled.{col}.discrete.acc" in pm, col
    assert 0 < pm["pooled.p_fen_pn_vs_random.discrete.acc"] <= 1
    rows = json.loads(open(client.download_artifacts(
        parents[0].info.run_id, "tables/pooled.json", str(tmp_path))).read())
    assert {r["gms"] for r in rows} == {n_gms} and rows[0]["shuffles"] == 2000
    assert "tables/external.json" in {a.path for a in client.list_artifacts(parents[0].info.run_id, "tables")}
    assert "classical.gm.discrete.acc" in fold0.data.metrics
    curve = client.get_metric_history(fold0.info.run_id, "unseen_gm.score")  # watched per epoch, never picked on
    assert sorted(m.step for m in curve) == [0, 1]
    assert client.get_metric_history(fold0.info.run_id, "valgm_gm.score")  # watched (--val-gms)

    mv = client.get_model_version_by_alias("gm-parser", "champion")
    assert mv.tags["schema_version"] == schema.SCHEMA_VERSION
    assert client.get_model_version_by_alias("gm-parser", "challenger").version == mv.version
    assert f"no gm-parser@champion yet: version {mv.version} is it" in out
    model = pyfunc.load_model("models:/gm-parser@champion")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    pred = model.predict(images)
    assert len(pred) == 3
    assert set(schema.CONTINUOUS) <= set(pred.columns) and set(schema.DISCRETE_NAMES) <= set(pred.columns)
    assert pred["norm_type"].isin(schema.DISCRETE["norm_type"]).all()
    assert all(f"loss_{t}_prob" in pred.columns for t in schema.LOSS_TYPES)
    assert model.metadata.signature is not None
    big = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)  # read as 4 native tiles each
    assert len(model.predict(big)) == 2


def _cv(args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(REPO_ROOT / "workflows" / "cv_folds.py"), *args],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def test_bad_input_fails_before_training(tmp_path, smoke_collection):
    r = _cv(["--collection", str(tmp_path / "missing")])
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = _cv(["--collection", str(tmp_path / "empty")])
    assert r.returncode == 2 and "no manifest.json" in r.stderr
    r = _cv(["--preset", "huge"])
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = _cv(["--checkpoint", "middle"])
    assert r.returncode == 2 and "--checkpoint must be one of" in r.stderr
    r = _cv(["--ema", "1.5"])
    assert r.returncode == 2 and "--ema must be in [0, 1)" in r.stderr
    r = _cv(["--collection", smoke_collection.path, "--folds", "500"])
    assert r.returncode == 2 and "cannot make 500" in r.stderr
    t0 = time.time()
    r = _cv(["--collection", smoke_collection.path, "--folds", "2"],
            env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    assert r.returncode == 2 and "unreachable" in r.stderr and time.time() - t0 < 60


def test_the_tracking_server_restarts_then_stays_down_and_resume_continues(smoke_collection, tmp_path):
    """The MLflow server, on the same port and store throughout:

    1. stops during fold 0 and starts again 10 s later: the job keeps running (MLflow's HTTP retries,
       set by the job), the epochs logged while it was away arrive, none before is lost, and fold 0's
       run ends FINISHED;
    2. stops during fold 1 for good, past the retries: the job stops with one line that names the
       server and says to rerun with --resume (exit status 3);
    3. with the server back, ``--resume`` finishes the same run from its checkpoints: every epoch of
       every fold once, and the runs the first invocation could not close end FAILED.

    The retries are shortened through the environment (a value already there wins over the job's
    defaults): 7 retries, backoff factor 1, waits of 0, 2, 4, ... 64 s (two minutes: the server's own
    start-up on a loaded machine is part of the outage); ``--max-failures 0``, so the one call that
    gives up stops the job, and the calls that end its runs then fail at once."""
    from mlflow import MlflowClient

    from gmparse.workflows.lib.runtime import TRACKING_LOST_EXIT

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(port, tmp_path)
    epochs = 6  # ~2 s each after the first here: the server goes while a fold still trains
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    args = [sys.executable, str(REPO_ROOT / "workflows" / "cv_folds.py"), *SMOKE_ARGS, "--collection",
            smoke_collection.path, "--storage-path", str(tmp_path / "runs"), "--epochs", str(epochs),
            "--final-model", "false", "--max-failures", "0"]
    client = MlflowClient(uri)
    log_path = tmp_path / "job.log"
    log = open(log_path, "w")  # a file, not a pipe
    proc = None

    def until_logged(fold: str) -> set[int]:  # poll until ``fold`` has logged an epoch -> its logged epochs
        deadline = time.time() + 600
        while time.time() < deadline:
            time.sleep(1)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            runs = fold_runs(client, fold)
            if runs:
                steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "epoch")}
                if steps:
                    return steps
        pytest.fail(f"{fold} never logged an epoch:\n" + log_path.read_text()[-3000:])

    try:
        wait_http(f"{uri}/health")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        before = until_logged("fold-0")
        assert len(before) < epochs, "fold 0 was over before the server went"  # really during a fold
        stop_mlflow_server(server)
        time.sleep(10)
        assert proc.poll() is None, "the job did not ride out the server's absence:\n" + log_path.read_text()[-3000:]
        server = start_mlflow_server(port, tmp_path)
        wait_http(f"{uri}/health")

        until_logged("fold-1")  # fold 0 over: it lived through the restart
        stop_mlflow_server(server)
        rc = proc.wait(timeout=600)
        text = log_path.read_text()
        assert rc == TRACKING_LOST_EXIT, text[-4000:]
        last = text.strip().splitlines()[-1]
        assert last.startswith(f"error: the MLflow tracking server {uri} stopped answering"), text[-4000:]
        assert "--resume" in last
        name = re.search(r"; run (\S+)\n", text).group(1)

        server = start_mlflow_server(port, tmp_path)
        wait_http(f"{uri}/health")
        (first_fold0,) = fold_runs(client, "fold-0")
        assert first_fold0.info.status == "FINISHED"  # the run that lived through the restart
        steps = sorted(m.step for m in client.get_metric_history(first_fold0.info.run_id, "epoch"))
        assert steps == list(range(epochs)) and before <= set(steps), steps  # logged after the restart too

        second = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=900)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert f"; run {name}\n" in second.stdout and "Pooled over all" in second.stdout
        assert "View run" not in second.stdout + second.stderr and "INFO mlflow" not in second.stderr  # quiet
        runs = job_runs(client)
        left = [r for r in runs if r.info.status == "RUNNING"]  # the first invocation's: closed by --resume
        assert left == [], [(r.info.run_name, r.data.tags.get("fold")) for r in left]
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("resumed")]
        assert parent.info.status == "FINISHED"
        for r in runs:
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id:
                assert r.info.status == "FINISHED"
                steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "epoch"))
                assert steps == list(range(epochs)), (r.data.tags["fold"], steps)  # none lost or repeated
    finally:
        log.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
        stop_mlflow_server(server)


def test_ray_job_submit_with_defaults_leaves_results_where_it_says(smoke_collection, tmp_path):
    """As the README says, with no tracking URI or storage path set: the job runs in Ray's per-job
    copy of the checkout, yet its MLflow run, registered model and checkpoints outlive it and the head.

    The job holds out a whole group (``--holdout family=gan``: one fold, trained on every other GM,
    scored on every GAN) with ``--ensemble 2`` (the default preset's two networks) through the loop,
    evaluation, figures, the final parser and its registered pyfunc."""
    from mlflow import MlflowClient, pyfunc

    xdg = tmp_path / "xdg"
    unset = {k: None for k in ("MLFLOW_TRACKING_URI", "GMPARSE_HOME", "GMPARSE_STORAGE", "GMPARSE_COLLECTION")}
    with local_head(env={**unset, "XDG_DATA_HOME": str(xdg), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}) as head:
        r = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", head.dashboard_url, "--working-dir", str(REPO_ROOT),
             "--", "python", "workflows/cv_folds.py", *SMOKE_ARGS, "--collection", smoke_collection.path,
             "--epochs", "1", "--holdout", "family=gan", "--ensemble", "2"],
            env=head.env, capture_output=True, text=True, timeout=900,
        )
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        session = head.temp_dir
    assert not session.exists()  # the head is stopped and its session folder (with the job's copy) gone
    home = xdg / "gmparse"
    said = re.search(r"results: MLflow (\S+), checkpoints (\S+) \(this job runs in Ray's per-job copy", r.stdout)
    assert said, r.stdout[-3000:]
    assert said.group(1) == f"sqlite:///{home / 'mlflow.db'}" and said.group(2) == str(home / "runs")
    done = re.search(r"MLflow run (\w+) .*; checkpoints (\S+)-\*", r.stdout)
    assert done, r.stdout[-3000:]
    checkpoints = list(Path(done.group(2)).parent.glob(Path(done.group(2)).name + "-*/checkpoint_*"))
    assert len(checkpoints) >= 2, f"checkpoints of fold-0 and final under {home / 'runs'}"
    n_gans = int((smoke_collection.fake_gms["family"] == "gan").sum())
    assert "1 folds" in r.stdout and f"fold-0: {n_gans} unseen GMs" in r.stdout, r.stdout[-3000:]
    assert f"Pooled over all {n_gans} GMs" in r.stdout
    client = MlflowClient(said.group(1))
    runs = job_runs(client)
    assert {x.info.status for x in runs} == {"FINISHED"} and len(runs) == 3  # parent, the holdout fold, final
    assert done.group(1) in {x.info.run_id for x in runs}
    version = client.get_model_version_by_alias("gm-parser", "champion")
    assert version.run_id in {x.info.run_id for x in runs}
    with tracking_to(said.group(1)):
        model = pyfunc.load_model("models:/gm-parser@champion")  # its artifacts outlived the job's copy too
    assert len(model.predict(np.zeros((1, 32, 32, 3), dtype=np.uint8))) == 1


def test_holdout_of_a_group_nobody_has_is_an_input_error(smoke_collection):
    """``--holdout family=stylegan`` on a collection without one stops before training, exit status 2."""
    from gmparse.workflows import cv_folds

    with pytest.raises(SystemExit) as e:
        cv_folds.main([*SMOKE_ARGS, "--collection", smoke_collection.path, "--holdout", "family=stylegan"])
    assert e.value.code == 2


def test_final_only_registers_a_challenger_judged_against_the_champion(smoke_collection, sqlite_tracking, tmp_path,
                                                                       capsys):
    """``--final-only``: no folds and no pooled table, one final parser registered under its alias
    and judged against the champion on ``--test-collection``, the head-to-head logged in its run."""
    import mlflow
    import torch

    from gmparse.models.config import ModelConfig
    from gmparse.models.parser import Parser
    from gmparse.workflows import cv_folds
    from gmparse.workflows.lib.registry import log_parser

    torch.manual_seed(0)
    mlflow.set_experiment("champion-before")
    with mlflow.start_run():  # an untrained champion of the same architecture
        _, champion = log_parser(Parser.from_config(ModelConfig.preset("smoke"), smoke_collection.ranges))
    rc = cv_folds.main([*SMOKE_ARGS, "--collection", smoke_collection.path, "--storage-path", str(tmp_path / "runs"),
                        "--epochs", "1", "--final-only", "--alias", "rival", "--test-collection", smoke_collection.path])
    assert rc == 0
    out = capsys.readouterr().out
    assert "no folds (--final-only)" in out and "Pooled over" not in out and "Per fold" not in out
    client = mlflow.MlflowClient()
    runs = job_runs(client)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["final_only"] == "true"
    assert [r.data.tags["fold"] for r in runs if r is not parent] == ["final"]
    final = next(r for r in runs if r is not parent)
    rival = client.get_model_version_by_alias("gm-parser", "rival")
    assert rival.run_id == final.info.run_id and rival.version != champion
    assert f"(@rival) against @champion (version {champion})" in out
    tables = {a.path for a in client.list_artifacts(final.info.run_id, "tables")}
    assert "tables/vs_champion.json" in tables
    winner = client.get_model_version_by_alias("gm-parser", "champion").version
    assert winner == (rival.version if "it is gm-parser@champion now" in out else champion)
