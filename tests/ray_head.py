"""Start a real ``ray start --head`` on 127.0.0.1 for a test, and stop only that cluster.

``ray stop`` kills every Ray process on the machine (the test session's own Ray included),
so teardown instead signals the processes whose command line names this head's private
temp dir; their workers exit when their raylet goes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


@dataclass
class Head:
    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    env: dict[str, str]


def _pids_with(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def stop_head(temp_dir: Path, grace_s: float = 10.0) -> None:
    marker = str(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_with(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while _pids_with(marker) and time.time() < deadline:
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def local_head(env: dict[str, str | None] | None = None, num_cpus: int = 8, timeout_s: float = 180) -> Iterator[Head]:
    temp_dir = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: unix socket paths are limited
    env = {
        **os.environ,
        # the job's `python` must be this environment's, not whatever comes first on PATH
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # token auth on, with a token of this head's own (server and `ray job` client alike)
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        **(env or {}),
    }
    env = {k: v for k, v in env.items() if v is not None}  # None: unset for the head (and its jobs)
    port, dash = free_port(), free_port()
    cmd = [
        RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", str(num_cpus),
        "--temp-dir", str(temp_dir), "--disable-usage-stats",
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
    ]
    try:
        subprocess.run(cmd, env=env, check=True, timeout=timeout_s, capture_output=True, text=True)
        yield Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir, env)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"ray start failed:\n{e.stdout}\n{e.stderr}") from None
    finally:
        stop_head(temp_dir)
