"""Builds that resume and grow: a smoke build SIGKILLed part-way (its driver, or one Ray worker)
and run again ends with the very files of an uninterrupted build; a larger build reuses a
smaller one's GMs; a half-built folder is never opened as a collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, assert_same_collection_files

from gmparse.data_pipeline.build import build_collection, build_config
from gmparse.data_pipeline.collection import CollectionError, open_collection

pytestmark = pytest.mark.slow
TASK_TITLE = "ray::_gm_task_with_node"


def _start_build(out: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "workflows" / "build_collection.py"), "--preset", "smoke",
                             "--out", str(out), *args], env=env, cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(out: Path) -> int:
    d = out.parent / f".{out.name}.partial" / "records"
    return len(list(d.glob("[0-9]*.json"))) if d.is_dir() else 0


def _wait(cond, proc: subprocess.Popen, timeout: float = 900.0) -> None:  # generous: CI machines are shared
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the build ended before the kill:\n{proc.stdout.read()[-3000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting for the build")
        time.sleep(0.2)


def _task_pids() -> list[int]:
    """Ray workers now running a GM task (their process title says so; the session's Ray is idle)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if cmd.startswith(TASK_TITLE):
            pids.append(int(p.name))
    return pids


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def test_a_build_whose_driver_is_killed_resumes_to_the_same_collection(smoke_collection, ray_session, tmp_path):
    out = tmp_path / "col"
    proc = _start_build(out)
    try:
        _wait(lambda: _records(out) >= 3, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone; its local Ray goes down with it
        proc.wait(timeout=60)
    finally:
        _kill_group(proc)
    done = _records(out)
    assert 3 <= done < 16, done
    assert not out.exists()  # no manifest anywhere: never taken for a finished collection
    with pytest.raises(CollectionError, match="does not exist"):
        open_collection(out)
    resumed = build_collection(build_config("smoke"), out, progress=False)
    assert resumed.manifest["last_run"]["gms_reused"] >= done
    assert resumed.manifest["last_run"]["gms_built_here"] == 16 - resumed.manifest["last_run"]["gms_reused"]
    assert_same_collection_files(resumed, smoke_collection)
    resumed.verify()
    assert not (tmp_path / ".col.partial").exists()


def test_a_build_with_a_killed_worker_retries_it_and_ends_the_same(smoke_collection, tmp_path):
    out = tmp_path / "col"
    proc = _start_build(out)
    try:
        _wait(lambda: bool(_task_pids()), proc)
        victim = _task_pids()[0]
        os.kill(victim, signal.SIGKILL)  # a Ray worker in the middle of a GM: Ray retries the task
        out_text, _ = proc.communicate(timeout=600)
    finally:
        _kill_group(proc)
    assert proc.returncode == 0, out_text[-3000:]
    col = open_collection(out)
    assert_same_collection_files(col, smoke_collection)
    pids = {t["pid"] for t in col.manifest["gm_timings"].values()}
    assert victim not in pids  # the killed worker finished no GM: its task ran again elsewhere


def test_a_collection_grows_by_its_tail_and_a_prefix_is_the_smaller_collection(smoke_collection, ray_session,
                                                                               tmp_path):
    from gmparse.workflows.build_collection import main

    small = tmp_path / "grow"
    first = build_collection(build_config("smoke", n_gms=6), small, progress=False)
    ids6 = list(first.fake_gms["gm_id"])
    assert ids6 == list(smoke_collection.fake_gms["gm_id"][: len(ids6)])
    # --n-gms 16 on the finished 6-GM collection adds the 10 missing GMs in place
    assert main(["--preset", "smoke", "--n-gms", "16", "--out", str(small)]) == 0
    grown = open_collection(small)
    assert grown.manifest["last_run"]["gms_reused"] == 6 and grown.manifest["last_run"]["gms_built_here"] == 10
    assert_same_collection_files(grown, smoke_collection)
    # and back: 6 GMs beside the 16 are taken from it (hard links), nothing trained
    again = build_collection(build_config("smoke", n_gms=6), tmp_path / "small-again", progress=False)
    assert again.manifest["last_run"]["gms_built_here"] == 0
    assert again.manifest["gms_sha256"] == first.manifest["gms_sha256"]
    raw = [c for c in first.gms.columns if c.startswith("raw_") or c in ("gm_id", "spec", "family")]
    pd.testing.assert_frame_equal(first.gms[raw], grown.gms[raw].set_index("gm_id").loc[
        list(first.gms["gm_id"])].reset_index()[raw])


def test_a_half_written_gm_is_built_again(smoke_collection, ray_session, tmp_path):
    """A record whose shard was lost or corrupted (a crash between files, a bad disk) does not
    count as built: the rerun builds that GM again and the collection is still the same."""
    import shutil

    out = tmp_path / "col"
    partial = tmp_path / ".col.partial"
    shutil.copytree(smoke_collection.path, partial)  # a finished build's records, as a partial build
    for name in ("manifest.json", "gms.parquet"):
        (partial / name).unlink()
    (partial / "lineage.json").write_text(json.dumps({"lineage": build_config("smoke").lineage_key()}))
    recs = sorted((partial / "records").glob("*.json"))
    victim = json.loads(recs[1].read_text())
    (partial / victim["shards"][0]["file"]).write_bytes(b"truncated")
    recs[2].write_text("{ not json")  # a record cut short
    col = build_collection(build_config("smoke"), out, progress=False)
    assert col.manifest["last_run"]["gms_built_here"] == 2
    assert_same_collection_files(col, smoke_collection)


def test_another_collection_is_not_replaced_without_overwrite(smoke_collection, ray_session, tmp_path):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(smoke_collection.path, out)
    with pytest.raises(CollectionError, match="other settings"):
        build_collection(build_config("smoke", seed=1), out, progress=False)
    assert open_collection(out).manifest["build_key"] == smoke_collection.manifest["build_key"]
