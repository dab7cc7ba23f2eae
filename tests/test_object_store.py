"""The collection and the checkpoints on an object store: ``s3://`` against an S3 API server on
127.0.0.1 (moto in server mode), through the filesystems pyarrow and Ray already use.

The main job reads its collection from ``s3://``, writes its Ray Train checkpoints there
(``--storage-path``), is interrupted during fold 0 and continued with ``--resume``, which finds the
run by listing the bucket: no epoch lost, repeated or trained twice. The interrupt (Ctrl-C) leaves no
MLflow run RUNNING. Credentials come from the environment only, and none of them is written to a
file, a log or an MLflow param.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, fold_runs, free_port, job_runs, logged_epochs
from mlflow_server import wait_http

pytestmark = pytest.mark.slow

BUCKET = "gmparse-test"
EPOCHS = 4


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket -> the environment a job needs to reach it."""
    moto_server = Path(sys.executable).with_name("moto_server")
    if not moto_server.exists():
        pytest.skip("moto[server] is not installed")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ACCESS_KEY_ID": "gmparse-test-key-" + secrets.token_hex(6),
           "AWS_SECRET_ACCESS_KEY": "gmparse-test-secret-" + secrets.token_hex(12),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/")
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                     aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


def _run_name(text: str) -> str:
    m = re.search(r"; run (\S+)\n", text)
    assert m, text[-3000:]
    return m.group(1)


def test_main_job_on_s3_is_interrupted_and_resumes_from_there(smoke_collection, s3_env, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from gmparse.data_pipeline.collection import open_collection, publish
    from gmparse.workflows.lib.runtime import storage_entries

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    collection, storage = f"s3://{BUCKET}/collections/smoke", f"s3://{BUCKET}/runs"
    publish(smoke_collection.path, collection)
    assert len(open_collection(collection).fake_gms) == len(smoke_collection.fake_gms)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GMPARSE_HOME": str(tmp_path / "home")}
    args = [sys.executable, str(REPO_ROOT / "workflows" / "cv_folds.py"), "--preset", "smoke", "--folds", "2",
            "--n-shuffles", "5", "--collection", collection, "--storage-path", storage, "--epochs", str(EPOCHS),
            "--final-model", "false"]
    client = MlflowClient(uri)

    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 600
            while time.time() < deadline:  # fold 0 has logged (so checkpointed) an epoch: interrupt
                time.sleep(1)
                assert proc.poll() is None, first_log.read_text()[-3000:]
                if any(logged_epochs(tmp_path / "mlflow.db", "fold-0").values()):
                    break
            else:
                pytest.fail("fold 0 never logged an epoch:\n" + first_log.read_text()[-3000:])
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
    first = first_log.read_text()
    assert proc.returncode != 0, first[-3000:]
    # Ctrl-C leaves no MLflow run RUNNING: the parent and the fold's run are closed on the way out
    left = [(r.info.run_name, r.info.status) for r in job_runs(client) if r.info.status == "RUNNING"]
    assert left == [], left
    name = _run_name(first)
    assert f"{name}-fold-0" in storage_entries(storage), storage_entries(storage)  # its checkpoints are on s3

    second = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _run_name(second.stdout) == name  # the same run, found by listing the bucket
    assert "Pooled over all" in second.stdout
    entries = storage_entries(storage)
    assert {f"{name}-fold-0", f"{name}-fold-1"} <= set(entries), entries
    # fold 0: the interrupted invocation's run logged only checkpointed epochs, the resumed one every
    # epoch once, those from the checkpoint as they were (a retrained epoch has its own images/s)
    first_run, resumed_run = sorted(fold_runs(client, "fold-0"), key=lambda r: r.info.start_time)
    speed = {r: {m.step: m.value for m in client.get_metric_history(r.info.run_id, "train.images_per_s")}
             for r in (first_run, resumed_run)}
    before = [m.step for m in client.get_metric_history(first_run.info.run_id, "epoch")]
    after = sorted(m.step for m in client.get_metric_history(resumed_run.info.run_id, "epoch"))
    assert sorted(before) == list(range(len(before))) and 0 < len(before) < EPOCHS, before
    assert after == list(range(EPOCHS)), after  # none lost or repeated
    assert all(speed[resumed_run][e] == speed[first_run][e] for e in before), speed  # not trained again

    # credentials: from the environment only, never written down
    secret_values = [s3_env["AWS_SECRET_ACCESS_KEY"], s3_env["AWS_ACCESS_KEY_ID"]]
    texts = [first, second.stdout, second.stderr]
    for p in tmp_path.rglob("*"):
        if p.is_file():
            texts.append(p.read_bytes().decode("utf-8", "replace"))
    for d in Path("/tmp/ray").glob("session_*"):  # the two jobs' Ray sessions (logs, runtime envs)
        if d.is_dir() and not d.is_symlink() and d.stat().st_mtime >= tmp_path.stat().st_mtime:
            for p in d.rglob("*"):
                if p.is_file() and p.stat().st_size < 50 * 2**20:
                    texts.append(p.read_bytes().decode("utf-8", "replace"))
    for run in job_runs(client):
        texts += [str(run.data.params), str(run.data.tags)]
    leaked = [v for v in secret_values if any(v in t for t in texts)]
    assert leaked == [], "a credential was written down"
