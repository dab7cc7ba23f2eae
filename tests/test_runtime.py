"""Run naming for --resume (cv_folds, forensics): the newest earlier run of the same config; where
results go by default (the checkout, or a per-user folder inside Ray's per-job copy of it)."""

from __future__ import annotations

import os
import re

from gmparse.workflows.lib.runtime import resumable_run_name


def test_resume_picks_the_newest_run_of_the_same_config(tmp_path):
    base = "cv-default-abcd1234-0123456789"
    for name in (f"{base}-20261101-100000-fold-0", f"{base}-20261102-090000-final",
                 f"{base}-20261103-080000-fold-0", f"{base}-20261103-080000-fold-1",
                 "cv-default-abcd1234-ffffffffff-20261201-000000-fold-0"):  # another config: never picked
        (tmp_path / name).mkdir()
    assert resumable_run_name(base, tmp_path, resume=True) == f"{base}-20261103-080000"


def test_new_name_without_resume_or_without_a_previous_run(tmp_path, capsys):
    base = "forensics-smoke-abcd1234-0123456789"
    (tmp_path / f"{base}-20261101-100000-fold-0").mkdir()
    fresh = resumable_run_name(base, tmp_path, resume=False)
    assert re.fullmatch(rf"{base}-\d{{8}}-\d{{6}}", fresh) and fresh != f"{base}-20261101-100000"
    other = resumable_run_name("forensics-smoke-abcd1234-9999999999", tmp_path, resume=True)
    assert other.startswith("forensics-smoke-abcd1234-9999999999-")
    assert "nothing to resume" in capsys.readouterr().out
    # storage given as a URI is listed through pyarrow's filesystems (s3:// the same way, against an
    # S3 API server: tests/test_object_store.py)
    (tmp_path / f"{base}-20261101-100000-fold-0").mkdir(exist_ok=True)
    assert resumable_run_name(base, tmp_path.as_uri(), resume=True) == f"{base}-20261101-100000"
    assert resumable_run_name(base, (tmp_path / "none-yet").as_uri(), resume=True).startswith(base + "-")


def test_results_home_leaves_rays_per_job_copy(tmp_path, monkeypatch):
    from gmparse.data_pipeline import paths
    from gmparse.workflows.lib import runtime

    for var in ("GMPARSE_HOME", "MLFLOW_TRACKING_URI", "GMPARSE_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    checkout = tmp_path / "checkout"
    job_copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    assert paths.results_home(checkout) == checkout  # a checkout keeps its results beside it
    assert not paths.in_ray_job_copy(checkout) and paths.in_ray_job_copy(job_copy)
    assert paths.results_home(job_copy) == tmp_path / "xdg" / "gmparse"
    monkeypatch.setenv("GMPARSE_HOME", str(tmp_path / "home"))
    assert paths.results_home(job_copy) == paths.results_home(checkout) == tmp_path / "home"
    # every default follows the home; explicit settings win
    assert runtime.tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert runtime.storage_path() == str(tmp_path / "home" / "runs")
    assert str(paths.collections_root()) == str(tmp_path / "home" / "data" / "collections")
    from gmparse.data_pipeline.build_config import build_config

    assert build_config("smoke").default_path().parent == tmp_path / "home" / "data" / "collections"
    assert runtime.storage_path("s3://bucket/runs") == "s3://bucket/runs"
    monkeypatch.setenv("GMPARSE_STORAGE", "/shared/runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert runtime.storage_path() == "/shared/runs" and runtime.tracking_uri() == "http://mlflow:5000"
    line = runtime.where_results_go(runtime.storage_path())
    assert "http://mlflow:5000" in line and "/shared/runs" in line


def test_a_job_leaves_rays_per_job_copy_before_it_can_vanish(tmp_path, monkeypatch):
    """Relative paths given inside Ray's copy of the working directory become absolute and the job
    moves to the results home; a copy already deleted under the job makes a relative path an error
    that says what to do (once, MLflow failed later in os.getcwd())."""
    import argparse
    import os
    import shutil

    import pytest

    from gmparse.data_pipeline import paths
    from gmparse.workflows.lib.job import leave_ray_job_copy
    from gmparse.workflows.lib.runtime import SetupError

    monkeypatch.setenv("GMPARSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(paths.LEFT_COPY_ENV, "")  # (restored to unset after the test)
    monkeypatch.delenv(paths.LEFT_COPY_ENV)
    copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    args = argparse.Namespace(collection="data/col", storage_path="s3://bucket/runs", config="best.json",
                              test_collection=str(tmp_path / "abs"), out=None, epochs=3)
    leave_ray_job_copy(args)
    assert args.collection == str(copy / "data/col") and args.config == str(copy / "best.json")
    assert args.storage_path == "s3://bucket/runs" and args.test_collection == str(tmp_path / "abs")
    assert args.out is None and args.epochs == 3
    assert os.getcwd() == str(tmp_path / "home")
    # still a job from the copy: results go where they went before it moved (not into a checkout)
    assert paths.in_ray_job_copy() and paths.results_home() == tmp_path / "home"
    monkeypatch.delenv("GMPARSE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.results_home() == tmp_path / "xdg" / "gmparse"
    monkeypatch.setenv("GMPARSE_HOME", str(tmp_path / "home"))
    # the copy removed under a running job
    monkeypatch.chdir(copy)
    shutil.rmtree(copy)
    with pytest.raises(SetupError, match="give an absolute path"):
        leave_ray_job_copy(argparse.Namespace(collection="data/col"))
    leave_ray_job_copy(argparse.Namespace(collection=str(tmp_path / "abs")))  # absolute: fine
    assert os.getcwd() == str(tmp_path / "home")
    # outside a Ray job nothing moves
    monkeypatch.delenv(paths.LEFT_COPY_ENV)
    monkeypatch.chdir(tmp_path)
    a = argparse.Namespace(collection="rel")
    leave_ray_job_copy(a)
    assert a.collection == "rel" and os.getcwd() == str(tmp_path)


def test_a_ctrl_c_dropped_in_a_finalizer_is_delivered_again():
    """Python drops a KeyboardInterrupt raised inside a finalizer ("Exception ignored"): a job would go
    on training after Ctrl-C. With the job's hook the interrupt comes again, outside the finalizer."""
    import subprocess
    import sys

    script = """
import sys, time
if sys.argv[1] == "hook":
    from gmparse.workflows.lib.job import redeliver_lost_interrupts
    redeliver_lost_interrupts()
class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # as Ctrl-C landing while garbage collection runs this
Finalized()
try:
    time.sleep(5)
    print("went on")
except KeyboardInterrupt:
    print("stopped")
"""
    runs = {mode: subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60)
            for mode in ("hook", "plain")}
    assert runs["hook"].stdout.strip() == "stopped", runs["hook"].stderr
    assert "Exception ignored" not in runs["hook"].stderr
    assert runs["plain"].stdout.strip() == "went on"  # what Python does alone: the interrupt is lost


def test_a_failure_while_the_tracking_server_is_down_names_it(monkeypatch, capsys):
    """Any error raised while the MLflow server does not answer becomes one line that names the server
    and says to --resume (exit status 3); with the server up, or a local store, errors pass unchanged."""
    import pytest
    from conftest import free_port

    from gmparse.workflows.lib import runtime
    from gmparse.workflows.lib.runtime import TRACKING_LOST_EXIT, tracking_server_outage

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.setattr(runtime, "_GAVE_UP", {})
    with pytest.raises(SystemExit) as exit_info, tracking_server_outage("/runs"):
        with pytest.raises(ConnectionError), tracking_server_outage():  # inner: passes it on, stops the waits
            raise ConnectionError("log_batch gave up")
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"  # ending the runs fails at once
        raise ConnectionError("log_batch gave up")
    assert exit_info.value.code == TRACKING_LOST_EXIT
    err = capsys.readouterr().err
    assert f"the MLflow tracking server {uri} stopped answering" in err and "--resume" in err and "/runs" in err
    assert "log_batch gave up" in err and "MLFLOW_HTTP_REQUEST_MAX_RETRIES=3" in err  # the wait that was given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    with pytest.raises(ValueError, match="unrelated"), tracking_server_outage("/runs"):
        raise ValueError("unrelated")
