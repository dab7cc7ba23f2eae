"""Shared fixtures: one local Ray per test session, one smoke collection, temp MLflow stores."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tracking_to(uri: str):
    """MLflow tracking (and so the registry) at ``uri`` for a block, then back. Through
    ``mlflow.set_tracking_uri``, not the environment: an earlier test's in-process job may have set
    that, and it wins over ``MLFLOW_TRACKING_URI`` (a load then read another test's registry)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def logged_epochs(db: Path, fold: str | None = None) -> dict[str, list[int]]:
    """Fold run id -> the epochs it has logged, read from a job's SQLite store while the job runs,
    through a read-only connection: an MlflowClient there would run MLflow's schema migrations
    alongside the job's own first ones, and the job then failed ("duplicate column name: step")."""
    import sqlite3

    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            runs = con.execute("SELECT run_uuid FROM tags WHERE key = 'fold'" + (" AND value = ?" if fold else ""),
                               (fold,) if fold else ()).fetchall()
            return {r: sorted(step for (step,) in con.execute(
                "SELECT step FROM metrics WHERE run_uuid = ? AND key = 'epoch'", (r,))) for (r,) in runs}
    except sqlite3.Error:  # no tables yet, or locked for a moment: nothing logged yet, as far as we know
        return {}


def job_runs(client, experiment: str = "gmparse-cv") -> list:
    """Every MLflow run of the main job's experiment, which must exist."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "no MLflow experiment was created"
    return client.search_runs([exp.experiment_id], max_results=1000)


def fold_runs(client, fold: str | None = None, experiment: str = "gmparse-cv") -> list:
    """The main job's per-fold MLflow runs (only ``fold``'s when given); none before the job has
    made its experiment."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("fold") and fold in (None, r.data.tags["fold"])]


def assert_same_collection_files(a, b) -> None:
    """Two collections with the same gms.parquet, image shards and grids (byte for byte), and the
    same rejected GMs: what an interrupted, grown or multi-node build must end with."""
    assert a.manifest["gms_sha256"] == b.manifest["gms_sha256"]
    assert [(s["file"], s["sha256"]) for s in a.manifest["shards"]] == [(s["file"], s["sha256"]) for s in b.manifest["shards"]]
    grids = sorted(p.name for p in (Path(a.path) / "grids").iterdir())
    assert grids == sorted(p.name for p in (Path(b.path) / "grids").iterdir())
    for g in grids:
        assert (Path(a.path) / "grids" / g).read_bytes() == (Path(b.path) / "grids" / g).read_bytes()
    assert a.manifest["rejected"] == b.manifest["rejected"]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with over-declared logical CPUs (trainer + data tasks fit on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_collection(ray_session, tmp_path_factory):
    """The smoke zoo built once through Ray (the end-to-end build test checks it)."""
    from gmparse.data_pipeline.build import build_collection, build_config

    out = tmp_path_factory.mktemp("collections") / "smoke"
    return build_collection(build_config("smoke"), out, progress=False)


@pytest.fixture
def sqlite_tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
