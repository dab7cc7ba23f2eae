"""A real ``mlflow server`` on 127.0.0.1 for a test: start, wait until it answers, stop (again)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def start_mlflow_server(port: int, root: Path) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:``port`` over a SQLite store and an artifact folder in ``root``
    (the same ones every time: a restart keeps what was logged)."""
    return subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, start_new_session=True,
    )


def stop_mlflow_server(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, 15)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a loaded machine: the server's workers were slow to stop
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)
