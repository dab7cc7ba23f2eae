"""End-to-end on a Ray cluster of three nodes simulated on this machine: builds and the main job.

A module-scoped fixture starts, with real ``ray start`` commands, a head node with no CPUs (no GM
task can land on it) and two worker nodes of 2 CPUs each, every node with a resource tag of its
own and its own temp dir and ports (one free block per node, on loopback). Then:

* a build that loses a whole worker node part-way (its raylet and every process it started,
  SIGKILLed at once) keeps every GM written before, byte for byte, and still ends with the same
  files: Ray retries the lost tasks on the surviving node, or the build stops with its "run the
  same build again" error and a rerun finishes it;
* the main job (``cv_folds.py --preset smoke --num-workers 2``) submitted with ``ray job submit
  --working-dir`` and tracked to an ``mlflow server`` loses a worker node mid-epoch: it recovers
  from its checkpoint, trains on the worker nodes only, registers its parser and ends SUCCEEDED
  with every MLflow run FINISHED (it once crashed registering the model: MLflow's ``os.getcwd()``
  in a per-job copy Ray had removed);
* a build and a Tune sweep submitted the same way: the build spreads its GM tasks over both
  workers, never the head, and ends with the very files of the in-process build (``smoke_collection``);
* the head node lost mid-epoch (last: it takes the cluster with it): the job stops, and on a new
  cluster ``--resume`` continues it from its checkpoints.

How a node is told apart from the others on one machine: each ``ray start`` runs in a new session
(``start_new_session``), and every process of that node (raylet, agents, log monitor, the workers
the raylet forks: those only change their process group) stays in that session, so a node's
processes are those of its session id, plus, to be safe, the raylet's descendants and whatever
names the node's temp dir on its command line. Not ``ray stop``: it would stop every Ray on the
machine (the test session's own and other jobs').

Ray limitations met here (Ray 2.60), worked around:

* ``--node-ip-address 127.0.0.1`` is rewritten by Ray to the machine's address (every process
  shows ``--node_ip_address=<host ip>``): the nodes listen on the host address, not loopback only.
  Acceptable for a test; the ports are random, and token auth stays on.
* a raylet ignores SIGTERM for a long time (over 30 s seen): teardown sends SIGKILL.
* every node of one machine shares Ray's default worker-port range unless told: each node gets
  ``--min/--max-worker-port`` of its own block, below the ephemeral range.

Auth: left on (``RAY_AUTH_MODE=token``), with a token of this cluster's own passed only through
``RAY_AUTH_TOKEN`` to the nodes, the checks and the builds (as tests/ray_head.py does).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_same_collection_files, logged_epochs, tracking_to

from gmparse.data_pipeline.collection import open_collection

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
TASK_TITLE = "ray::_gm_task_with_node"
N_GMS = 16  # the smoke preset
WORKER_CPUS = 2
START_TIMEOUT_S = 240  # one `ray start` on this loaded 2-core machine: ~20 s for a head, ~8 s for a worker
BUILD_TIMEOUT_S = 1500
RESUME_HINT = "run the same build again to resume it"  # the CollectionError of a build that lost GMs
# Ports: one block per node, above Ray's default worker ports (10002-19999, where the other Rays on
# this machine put their workers) and below the kernel's ephemeral range (32768+, where every
# OS-assigned port lands), so no other process is handed one of ours while the cluster is up.
PORT_LO, PORT_HI = 20000, 32700
HEAD_PORTS = ("port", "ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
              "node-manager-port", "object-manager-port")
WORKER_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                "runtime-env-agent-port", "node-manager-port", "object-manager-port")
WORKER_PORT_RANGE = 40  # ports for a node's Ray workers (and, on the head, the drivers)
OBJECT_STORE_BYTES = 256 * 1024**2  # the smoke build moves a few MB; Ray's default is 30% of RAM a node


# --- /proc ---------------------------------------------------------------------------------------
def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, command line) of every live process (psutil is not installed)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if fields[0] in ("Z", "X"):  # dead: a zombie nobody has reaped yet (this sandbox's init may not)
            continue
        out[int(p.name)] = (int(fields[1]), int(fields[3]), cmd)
    return out


def _free_block(n: int, taken: set[int]) -> list[int]:
    """``n`` consecutive ports nothing listens on (nor binds), none of them in ``taken``."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(PORT_LO, PORT_HI - n)
        block = list(range(base, base + n))
        if taken.intersection(block):
            continue
        socks = []
        try:
            for port in block:
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", port))  # fails if any address of this machine holds the port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return block
    raise RuntimeError(f"no block of {n} free ports in [{PORT_LO}, {PORT_HI})")


# --- the cluster ---------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    temp_dir: Path
    sid: int  # the session of its `ray start`: every process of the node is in it
    raylet_pid: int
    node_manager_port: int
    resource: str | None  # the custom resource tag of a worker node
    node_id: str = ""

    def pids(self, procs: dict[int, tuple[int, int, str]] | None = None) -> set[int]:
        """Every live process of this node: its session, the raylet's descendants, its temp dir."""
        procs = _procs() if procs is None else procs
        mine = {pid for pid, (_, sid, cmd) in procs.items() if sid == self.sid or str(self.temp_dir) in cmd}
        mine.add(self.raylet_pid)
        grew = True
        while grew:  # descendants of any of them (a worker that left the session would still be found)
            new = {pid for pid, (ppid, _, _) in procs.items() if ppid in mine and pid not in mine}
            mine |= new
            grew = bool(new)
        mine.discard(os.getpid())
        return {p for p in mine if p in procs}

    def task_pids(self) -> list[int]:
        """This node's Ray workers now running a GM task (the process title says so)."""
        procs = _procs()
        return sorted(p for p in self.pids(procs) if procs[p][2].startswith(TASK_TITLE))

    def kill(self, timeout_s: float = 60.0) -> None:
        """The whole node at once: the raylet is stopped first (it forks no worker while the rest
        is collected), then it and every process of the node get SIGKILL."""
        try:
            os.kill(self.raylet_pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {self.name}: processes {sorted(pids)} survive SIGKILL")
            time.sleep(0.2)


class Cluster:
    """A head with no CPUs and worker nodes of their own temp dirs and ports, on one machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.taken: set[int] = set()
        bin_dir = str(Path(sys.executable).parent)
        # no RAY_* of the test session (its in-process Ray, a RAY_ADDRESS); a token of this cluster's own
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=secrets.token_hex(16),
            RAY_USAGE_STATS_ENABLED="0",
            RAY_DISABLE_IMPORT_WARNING="1",
            PYTHONUNBUFFERED="1",
        )
        self.head: Node | None = None
        self.workers: dict[str, Node] = {}
        self.address = ""
        self.dashboard_url = ""
        self._n = 0

    # starting
    def _ray_start(self, name: str, names: tuple[str, ...], args: list[str], resource: str | None) -> Node:
        block = _free_block(len(names) + WORKER_PORT_RANGE, self.taken)
        self.taken.update(block)
        ports = dict(zip(names, block))
        self._n += 1
        temp_dir = self.root / f"{name}{self._n:02d}"  # short: Ray's unix socket paths must stay under ~107 bytes
        cmd = [str(RAY), "start", "--node-ip-address", "127.0.0.1", *args, "--num-gpus", "0",
               "--object-store-memory", str(OBJECT_STORE_BYTES), "--temp-dir", str(temp_dir), "--disable-usage-stats",
               *[a for k, v in ports.items() for a in (f"--{k}", str(v))],
               "--min-worker-port", str(block[len(names)]), "--max-worker-port", str(block[-1])]
        if resource:
            cmd += ["--resources", json.dumps({resource: 1})]
        log = open(self.root / f"{name}{self._n:02d}.start.log", "w")  # closed below
        try:
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rc = None
        finally:
            log.close()
        raylets = [pid for pid, (_, sid, cmd) in _procs().items()
                   if sid == proc.pid and "raylet/raylet" in cmd and f"--node_manager_port={ports['node-manager-port']}" in cmd]
        node = Node(name, temp_dir, proc.pid, raylets[0] if raylets else -1, ports["node-manager-port"], resource)
        if name == "head":
            self.head, self.address = node, f"127.0.0.1:{ports['port']}"
            self.dashboard_url = f"http://127.0.0.1:{ports['dashboard-port']}"
        else:
            self.workers[name] = node
        if rc != 0 or not raylets:
            text = (self.root / f"{name}{self._n:02d}.start.log").read_text()[-4000:]
            raise RuntimeError(f"`ray start` of {name} failed (rc {rc}, raylets {raylets}):\n{text}")
        return node

    def start_head(self) -> None:
        self._ray_start("head", HEAD_PORTS, ["--head", "--num-cpus", "0", "--include-dashboard", "true",
                                             "--dashboard-host", "127.0.0.1"], None)  # the jobs API needs it

    def add_worker(self, name: str) -> Node:
        return self._ray_start(name, WORKER_PORTS, ["--address", self.address, "--num-cpus", str(WORKER_CPUS)],
                               f"gmparse_test_{name}")

    def ensure_workers(self, names: tuple[str, ...] = ("a", "b")) -> None:
        """Both worker nodes alive (one killed by an earlier test is replaced by a new node)."""
        for name in names:
            node = self.workers.get(name)
            if node is None or not node.pids():
                self.add_worker(name)
        self._read_node_ids()

    def _read_node_ids(self) -> None:
        """Each node's Ray node id, from ``ray.nodes()`` in a short driver of its own (the pytest
        process holds the session's local Ray: no ``ray.init(address=...)`` here); waits until
        every node is registered alive with the resources it was started with."""
        script = ("import json, os, ray; ray.init(address=os.environ['RAY_ADDRESS'], log_to_driver=False, "
                  "logging_level='ERROR'); print('NODES=' + json.dumps([{k: n[k] for k in "
                  "('NodeID', 'Alive', 'NodeManagerPort', 'Resources')} for n in ray.nodes()]))")
        nodes = [self.head, *self.workers.values()]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            proc = subprocess.run([sys.executable, "-c", script], env=dict(self.env, RAY_ADDRESS=self.address),
                                  capture_output=True, text=True, timeout=START_TIMEOUT_S)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("NODES=")]
            alive = {n["NodeManagerPort"]: n for n in json.loads(line[-1][6:]) if n["Alive"]} if line else {}
            if all(n.node_manager_port in alive for n in nodes if n.pids()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes did not register: {alive}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            time.sleep(2)
        for n in nodes:
            if n.node_manager_port in alive:
                info = alive[n.node_manager_port]
                n.node_id = info["NodeID"]
                assert info["Resources"].get("CPU", 0) == (0 if n is self.head else WORKER_CPUS), info
                if n.resource:
                    assert info["Resources"].get(n.resource) == 1, info

    def restart(self) -> None:
        """A new cluster in place of this one (every node killed first): a new head, two workers."""
        for node in [*self.workers.values(), self.head]:
            if node is not None:
                node.kill()
        self.head, self.workers = None, {}
        self.start_head()
        self.ensure_workers()

    # stopping
    def stop(self) -> None:
        """SIGKILL every process of every node this cluster started, workers first."""
        for node in [*self.workers.values(), self.head]:
            if node is not None:
                node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    if not RAY.exists():
        pytest.skip(f"ray CLI not found next to {sys.executable}")
    c = Cluster(Path(tempfile.mkdtemp(prefix="gmc", dir="/tmp")))
    try:
        c.start_head()
        c.ensure_workers()
        yield c
    finally:
        c.stop()


@pytest.fixture
def two_workers(cluster):
    """The cluster with its two worker nodes up (an earlier test may have killed one)."""
    cluster.ensure_workers()
    return cluster


# --- builds --------------------------------------------------------------------------------------
def _start_build(cluster: Cluster, out: Path, log: Path) -> subprocess.Popen:
    """``workflows/build_collection.py --preset smoke`` as a driver of ``cluster`` (on its head node:
    Ray connects a driver to the head when several nodes share the machine)."""
    env = dict(cluster.env, RAY_ADDRESS=cluster.address, TQDM_DISABLE="1")
    with open(log, "a") as f:
        return subprocess.Popen([sys.executable, str(REPO_ROOT / "workflows" / "build_collection.py"), "--preset",
                                 "smoke", "--out", str(out)], env=env, cwd=REPO_ROOT, start_new_session=True,
                                stdout=f, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = BUILD_TIMEOUT_S) -> tuple[int, str]:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _kill_group(proc)
    text = log.read_text()
    assert rc is not None, f"the build did not finish in {timeout} s:\n{text[-4000:]}"
    return rc, text


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _records_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial" / "records"


def _record_files(d: Path) -> list[Path]:
    return sorted(d.glob("[0-9]*.json")) if d.is_dir() else []


def _nodes_used(col) -> dict[str, int]:
    nodes: dict[str, int] = {}
    for t in col.manifest["gm_timings"].values():
        nodes[t["node"]] = nodes.get(t["node"], 0) + 1
    return nodes


def test_a_worker_node_lost_mid_build_keeps_the_written_gms_and_ends_the_same(smoke_collection, two_workers,
                                                                              tmp_path):
    cluster = two_workers
    a, b, head = cluster.workers["a"], cluster.workers["b"], cluster.head
    out = tmp_path / "col"
    records = _records_dir(out)
    log = tmp_path / "build.log"
    proc = _start_build(cluster, out, log)
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while not (len(_record_files(records)) >= 3 and a.task_pids()):
            assert proc.poll() is None, f"the build ended before node a was killed:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"no GM running on node a with 3 GMs written:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        before = {p.name: p.read_bytes() for p in _record_files(records)}
        a.kill()  # raylet, agents, log monitor and its Ray workers (the GM tasks on it included)
        assert proc.poll() is None, "the build was over when the node went"  # really mid-build
        assert 3 <= len(before) < N_GMS, sorted(before)
        assert not a.pids()
        rc, text = _finish(proc, log)
    finally:
        _kill_group(proc)
    if rc != 0:  # the lost tasks ran out of Ray's retries: the build says so and keeps what it had
        assert RESUME_HINT in text, text[-4000:]
        assert not (out / "manifest.json").exists()
        kept = {p.name for p in _record_files(records)}
        assert set(before) <= kept, (sorted(before), sorted(kept))
        rc, text = _finish(_start_build(cluster, out, log), log)  # the same command, node b still up
        assert rc == 0, text[-4000:]

    col = open_collection(out)
    after = {p.name: p.read_bytes() for p in _record_files(out / "records")}
    assert len(after) == N_GMS, sorted(after)
    for name, data in before.items():  # no GM written before the loss was lost, nor rewritten
        assert after.get(name) == data, name
    assert len(col.manifest["gm_timings"]) == N_GMS
    nodes = _nodes_used(col)
    assert head.node_id not in nodes, nodes
    assert set(nodes) <= {a.node_id, b.node_id}, nodes
    assert nodes.get(b.node_id, 0) >= 1, nodes  # the surviving node built the rest
    assert_same_collection_files(col, smoke_collection)
    col.verify()


# --- the main job --------------------------------------------------------------------------------
TRAIN_WORKER_TITLE = "ray::RayTrainWorker"
JOB_TIMEOUT_S = 1500
JOB_EPOCHS = 3


def _train_worker_nodes(cluster: Cluster) -> set[str]:
    """The nodes on which a Ray Train worker process runs now."""
    procs = _procs()
    nodes = {"head": cluster.head, **cluster.workers}
    return {name for name, node in nodes.items() if node is not None
            and any(procs[p][2].startswith(TRAIN_WORKER_TITLE) for p in node.pids(procs))}


def _submit(cluster: Cluster, tmp_path: Path, script: str, *args: str, tracking: str | None = None,
            log_name: str = "job.log") -> tuple[subprocess.Popen, Path]:
    """``ray job submit --working-dir <checkout> -- python workflows/<script> <args>``, as the README
    says, tracked to ``tracking`` (default: a SQLite store of this test); the output of ``ray job
    submit`` (it follows the job's logs) to a file."""
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking or f"sqlite:///{tmp_path / 'mlflow.db'}",
                                "GMPARSE_HOME": str(tmp_path / "home"), "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                                "TQDM_DISABLE": "1"}}
    log = tmp_path / log_name
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [str(RAY), "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(REPO_ROOT),
             "--runtime-env-json", json.dumps(runtime_env), "--", "python", f"workflows/{script}", *args],
            env=dict(cluster.env, RAY_ADDRESS=cluster.dashboard_url), cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True)
    return proc, log


def _submit_main_job(cluster: Cluster, collection: str, tmp_path: Path, *extra: str,
                     tracking: str | None = None, log_name: str = "job.log") -> tuple[subprocess.Popen, Path]:
    """The README's cluster command for the main job, two training workers."""
    return _submit(cluster, tmp_path, "cv_folds.py", "--preset", "smoke", "--num-workers", "2", "--collection",
                   collection, "--storage-path", str(tmp_path / "runs"), "--epochs", str(JOB_EPOCHS), *extra,
                   tracking=tracking, log_name=log_name)


def _fold0_epochs(tmp_path: Path, store: str = "mlflow.db") -> int:
    """How many epochs fold 0 has logged to the job's SQLite store (0 before it exists)."""
    return max((len(v) for v in logged_epochs(tmp_path / store, "fold-0").values()), default=0)


def _check_job_runs(tmp_path: Path, tracking: str | None = None) -> dict[str, float]:
    """Every MLflow run FINISHED (parent, two folds, final), every epoch of every training run logged
    exactly once, the parser registered by the parent -> the parent's pooled metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking or f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gmparse-cv").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 4, [(r.info.run_name, r.info.status) for r in runs]
    for r in runs:
        if "fold" in r.data.tags:
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "epoch"))
            assert steps == list(range(JOB_EPOCHS)), (r.data.tags["fold"], steps)  # none lost, none repeated
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert client.get_model_version_by_alias("gm-parser", "champion").run_id in {r.info.run_id for r in runs}
    return {k: v for k, v in parent.data.metrics.items() if k.startswith("pooled.fen_pn.")}


def _watch(proc: subprocess.Popen, cluster: Cluster, until=None) -> set[str]:
    """Poll until the job ends (or ``until()`` is true): the nodes its training workers ran on."""
    seen: set[str] = set()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _train_worker_nodes(cluster)
        if until is not None and until():
            break
        time.sleep(0.3)
    return seen


def _watch_to_end(proc: subprocess.Popen, cluster: Cluster, log: Path) -> tuple[int | None, str, set[str]]:
    """Follow a submitted job to its end, then kill what is left of its ``ray job submit`` ->
    (exit status, its output, the nodes its training workers ran on)."""
    try:
        seen = _watch(proc, cluster)
        rc = proc.poll()
    finally:
        _kill_group(proc)
    return rc, log.read_text(), seen


def test_main_job_submitted_to_the_cluster_survives_a_lost_worker_node(smoke_collection, two_workers, tmp_path):
    """``ray job submit --working-dir`` of the README's main job, two training workers, tracking to a
    real ``mlflow server``. A worker node running a training worker is killed whole during fold 0's
    second epoch: Ray Train restarts the worker group from the last checkpoint on the surviving node
    and the node that joins in the lost one's place (as an autoscaler does). The training workers
    run on the worker nodes only (the head has no CPU), the job SUCCEEDS, every MLflow run is
    FINISHED with no epoch lost or repeated, and the registered parser loads from the server (a
    model from code) and parses."""
    import numpy as np
    from conftest import free_port
    from mlflow import MlflowClient, pyfunc
    from mlflow_server import start_mlflow_server, stop_mlflow_server, wait_http

    from gmparse.data_pipeline import schema

    cluster = two_workers
    uri = f"http://127.0.0.1:{free_port()}"
    server = start_mlflow_server(int(uri.rsplit(":", 1)[1]), tmp_path)
    try:
        wait_http(f"{uri}/health")
        proc, log = _submit_main_job(cluster, smoke_collection.path, tmp_path, "--max-failures", "3", tracking=uri)
        try:
            victim = None

            def mid_epoch() -> bool:  # a worker node running a training worker, fold 0 past its first epoch
                nonlocal victim
                nodes = sorted(_train_worker_nodes(cluster) & {"a", "b"})
                if nodes and _fold0_epochs(tmp_path, "server.db") >= 1:  # the server's store, read-only
                    victim = nodes[0]
                    return True
                return False

            seen = _watch(proc, cluster, until=mid_epoch)
            assert victim is not None, "no training worker after fold 0's first epoch:\n" + log.read_text()[-4000:]
            victim = cluster.workers[victim]
            assert proc.poll() is None, "the job ended before the node went"
            victim.kill()
            assert not victim.pids()
            cluster.ensure_workers()  # as an autoscaler replaces a reclaimed node: a new one joins under its name
            seen |= _watch(proc, cluster)
            rc = proc.poll()
        finally:
            _kill_group(proc)
        text = log.read_text()
        assert rc == 0, text[-5000:]
        assert "succeeded" in text.lower() and "Pooled over all" in text, text[-3000:]
        assert seen and seen <= {"a", "b"}, seen  # on the worker nodes (the survivor and the one that joined)
        _check_job_runs(tmp_path, uri)
        version = MlflowClient(uri).get_model_version_by_alias("gm-parser", "champion")
        assert version.tags["schema_version"] == schema.SCHEMA_VERSION
        with tracking_to(uri):
            model = pyfunc.load_model("models:/gm-parser@champion")
        pred = model.predict(np.zeros((1, 32, 32, 3), dtype=np.uint8))
        assert list(pred.columns[:9]) == list(schema.CONTINUOUS)
    finally:
        stop_mlflow_server(server)


def test_a_build_and_a_tune_sweep_submitted_to_the_cluster(smoke_collection, two_workers, tmp_path):
    """The other two entry points through ``ray job submit``: a collection build (its GM tasks spread
    over both worker nodes, never the head; the very files of the in-process build) and a Tune sweep
    (its trials train on the worker nodes; every trial's MLflow run ends, the best config is written)."""
    from mlflow import MlflowClient

    cluster = two_workers
    out = tmp_path / "col"
    rc, text = _finish(*_submit(cluster, tmp_path, "build_collection.py", "--preset", "smoke", "--out", str(out),
                                log_name="build.log"))
    assert rc == 0, text[-4000:]
    col = open_collection(out)  # alone in its folder: no collection of the smoke lineage beside it to reuse
    assert col.manifest["last_run"]["gms_built_here"] == N_GMS, col.manifest["last_run"]  # none reused
    assert len(col.manifest["gm_timings"]) == N_GMS, sorted(col.manifest["gm_timings"])
    nodes = _nodes_used(col)
    assert cluster.head.node_id not in nodes, nodes  # the head has no CPU: no GM ran there
    assert set(nodes) == {cluster.workers["a"].node_id, cluster.workers["b"].node_id}, nodes  # both built GMs
    assert_same_collection_files(col, smoke_collection)
    col.verify()

    best = tmp_path / "best.json"
    proc, log = _submit(cluster, tmp_path, "tune_sweep.py", "--preset", "smoke", "--collection", smoke_collection.path,
                        "--storage-path", str(tmp_path / "tune"), "--num-samples", "2", "--epochs", "1", "--search",
                        "random", "--out", str(best), log_name="tune.log")
    rc, text, seen = _watch_to_end(proc, cluster, log)
    assert rc == 0, text[-4000:]
    assert seen and seen <= {"a", "b"}, seen  # the trials' training workers on the worker nodes
    assert best.exists() and json.loads(best.read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gmparse-tune").experiment_id])
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert len(trials) == 2 and all(r.info.status in ("FINISHED", "KILLED") for r in runs), \
        [(r.info.run_name, r.info.status) for r in runs]


def test_the_head_node_lost_stops_the_job_and_resume_continues_it_on_a_new_cluster(smoke_collection, two_workers,
                                                                                   tmp_path):
    """The head node is lost whole during fold 0 (its GCS, raylet and dashboard, and with them the
    job's driver): Ray cannot recover that, and the job stops. A new cluster, on the same storage and
    tracking store, runs the same command with ``--resume``: it finds the run, closes the MLflow runs
    the lost driver left RUNNING, continues fold 0 from its last checkpoint (no epoch lost or
    repeated). Last in the module: it leaves a new cluster behind."""
    import re

    from mlflow import MlflowClient

    cluster = two_workers
    no_final = ("--final-model", "false")  # the parser's registration is the job test's (above)
    proc, log = _submit_main_job(cluster, smoke_collection.path, tmp_path, *no_final)
    try:
        _watch(proc, cluster, until=lambda: _fold0_epochs(tmp_path) >= 1)
        assert proc.poll() is None and _fold0_epochs(tmp_path) < JOB_EPOCHS, "fold 0 was over before the head went"
        cluster.head.kill()
        try:
            rc = proc.wait(timeout=240)  # `ray job submit` follows the job's logs through the head
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        _kill_group(proc)
    text = log.read_text()
    print(f"ray job submit after the head was lost: exit {rc}\n{text[-1500:]}")
    assert "Pooled over all" not in text, text[-3000:]
    name = re.search(r"; run (\S+)\n", text).group(1)

    cluster.restart()
    proc, log = _submit_main_job(cluster, smoke_collection.path, tmp_path, *no_final, "--resume",
                                 log_name="resume.log")
    rc, text, seen = _watch_to_end(proc, cluster, log)
    assert rc == 0, text[-5000:]
    assert f"; run {name}\n" in text and "Pooled over all" in text, text[-3000:]
    assert seen and seen <= {"a", "b"}, seen
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gmparse-cv").experiment_id])
    lost = [r for r in runs if r.data.tags.get("gmparse.closed_by") == "resume"]
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED"}, [(r.info.run_name, r.info.status) for r in runs]
    assert lost and {r.info.status for r in lost} == {"FAILED"}  # the lost driver's parent and fold-0 runs
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.data.tags.get("resumed")]
    children = {r.data.tags["fold"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"fold-0", "fold-1"} and {r.info.status for r in children.values()} == {"FINISHED"}
    for label, r in children.items():
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "epoch"))
        assert steps == list(range(JOB_EPOCHS)), (label, steps)  # none lost, none repeated
