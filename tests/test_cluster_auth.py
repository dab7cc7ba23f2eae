"""End-to-end: a local Ray head with token auth refuses job submission without the token.

Starts `ray start --head` on 127.0.0.1 with RAY_AUTH_MODE=token and a generated token (passed
only through the RAY_AUTH_TOKEN environment variable, HOME pointed at a temp dir so no
~/.ray/auth_token of the developer is read or written), then:

* a raw HTTP call to the Jobs API without a token gets 401, with a wrong token 403;
* `ray job submit` without a token (and with a wrong token) fails;
* `ray job submit` with the token runs `python -c "print(42)"` to SUCCEEDED.

Teardown stops only this head (see tests/ray_head.py). Every subprocess has a timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ray_head import stop_head

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 150
CALL_TIMEOUT_S = 120


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DISABLE_IMPORT_WARNING="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _http(url: str, token: str | None = None, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _run(args: list[str], env: dict[str, str], timeout: int = CALL_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def token_head():
    """A token-auth Ray head on loopback; yields (dashboard_url, token, server_env, home)."""
    if not RAY.exists():
        pytest.skip(f"ray CLI not found next to {sys.executable}")
    # The dashboard (which serves the Jobs API) only starts with the `ray[default]` extra. Fail fast
    # with a clear message instead of silently skipping a security test.
    missing = [m for m in ("aiohttp_cors", "grpc", "opencensus") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"ray[default] is not installed (missing {missing}); the Jobs API needs it")
    # Short temp root: Ray's unix socket paths must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="gmr", dir="/tmp"))
    home = root / "h"
    home.mkdir()
    token = secrets.token_hex(32)
    gcs_port, dash_port, agent_port, metrics_port = _free_ports(4)
    env = _base_env(home)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    url = f"http://127.0.0.1:{dash_port}"
    start = [
        str(RAY), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dash_port),
        "--dashboard-agent-listen-port", str(agent_port),
        "--metrics-export-port", str(metrics_port),
        "--num-cpus", "2",
        "--num-gpus", "0",
        "--temp-dir", str(root / "t"),
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        proc = _run(start, env, timeout=START_TIMEOUT_S)
        assert proc.returncode == 0, f"ray start failed:\n{proc.stdout}\n{proc.stderr}"
        # Wait until the Jobs API answers (any HTTP status means the server is up).
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                status, _ = _http(f"{url}/api/jobs/", token=token)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("dashboard/Jobs API did not come up")
            time.sleep(1)
        yield url, token, env, home
    finally:
        # not `ray stop`: it would kill every Ray on the machine, the test session's included
        stop_head(root / "t")
        shutil.rmtree(root, ignore_errors=True)


def test_token_required_for_jobs_api_and_job_runs_with_token(token_head):
    url, token, server_env, home = token_head

    # Listens on loopback only.
    assert url.startswith("http://127.0.0.1:")

    # 1. Raw HTTP: no token -> 401, wrong token -> 403, right token -> 200.
    status, body = _http(f"{url}/api/jobs/")
    assert status == 401, (status, body)
    status, body = _http(f"{url}/api/jobs/", method="POST", body={"entrypoint": "python -c 'print(1)'"})
    assert status == 401, (status, body)
    status, body = _http(f"{url}/api/jobs/", token="not-the-token")
    assert status == 403, (status, body)
    status, _ = _http(f"{url}/api/jobs/", token=token)
    assert status == 200

    # 2. CLI without a token (client env has no RAY_AUTH_*; HOME has no ~/.ray/auth_token): refused.
    client_env = _base_env(home)
    assert not (home / ".ray" / "auth_token").exists()
    submit = [str(RAY), "job", "submit", "--address", url, "--no-wait", "--", "python", "-c", "print(42)"]
    proc = _run(submit, client_env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "401" in proc.stdout + proc.stderr or "Authentication" in proc.stdout + proc.stderr

    # CLI with a wrong token: refused.
    bad_env = dict(client_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="wrong-" + token[:20])
    proc = _run(submit, bad_env)
    assert proc.returncode != 0, proc.stdout + proc.stderr

    # No job got through.
    status, body = _http(f"{url}/api/jobs/", token=token)
    assert status == 200 and json.loads(body) == [], body

    # 3. CLI with the token: the job runs to SUCCEEDED and prints 42.
    good_env = dict(client_env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    proc = _run([str(RAY), "job", "submit", "--address", url, "--", "python", "-c", "print(42)"], good_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "42" in proc.stdout, out
    assert "succeeded" in out, out

    # The Jobs API (read with the token) reports exactly one job, SUCCEEDED.
    status, body = _http(f"{url}/api/jobs/", token=token)
    jobs = json.loads(body)
    assert status == 200 and [j["status"] for j in jobs] == ["SUCCEEDED"], body
    # Reading job details/logs is gated as well.
    job_id = jobs[0]["submission_id"]
    assert _http(f"{url}/api/jobs/{job_id}/logs")[0] == 401
    status, body = _http(f"{url}/api/jobs/{job_id}/logs", token=token)
    assert status == 200 and "42" in json.loads(body)["logs"], body
