"""Ray and MLflow start-up shared by the entry points (local by default, cluster when told).

Local: ``ray.init`` with logical CPUs over-declared (training workers, data tasks and the
driver all fit on a small laptop) and MLflow in ``mlflow.db`` of the results home
(``data_pipeline.paths``: the checkout, or a per-user folder inside ``ray job submit``'s copy of
it). Cluster: ``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI`` and ``GMPARSE_STORAGE`` are honoured unchanged.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gmparse.data_pipeline.paths import in_ray_job_copy, results_home


class SetupError(RuntimeError):
    """A service the job needs is missing or unreachable."""


#: how a job rides out a tracking server that goes away for a while (restarted for an upgrade): MLflow's
#: own HTTP retries of every call, waits of 2, 4, 8, ... s (at most 120 s each) over 7 retries, about
#: 4 minutes in all; a call still failing after that fails the job with one line that names the
#: server (``tracking_server_outage``), and ``--resume`` continues it. Set for the driver and every
#: Ray worker it starts; a value already in the environment wins.
TRACKING_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}

#: lines Ray's driver repeats from the raylet that ask nothing of the user here: a local Ray
#: over-declares logical CPUs on purpose (init_ray), so the raylet starts more Python workers at
#: once than the machine has cores, and says so. They stay in Ray's session logs.
BENIGN_RAY_LINES = ("PYTHON worker processes have been started",)


def quiet_console(quiet: bool = True) -> None:
    """The terminal shows gmparse's own lines (stage lines, progress bars, tables) unless ``--verbose``:
    MLflow's and alembic's INFO lines (store creation, input-example validation), MLflow's download
    bars and "View run ... at" links (the job prints its run id), Ray's token-authentication notice
    and the raylet's worker-startup warnings are kept off it. Warnings and errors that ask something
    of the user still show."""
    if not quiet:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # this process and the ones it starts
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ... at: http://..."
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Token authentication is enabled for this Ray cluster": the secure default of a local Ray
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    if "ray" in sys.modules:  # (init_ray calls this again once Ray is imported; parse.py may never need it)
        _filter_ray_driver_lines(BENIGN_RAY_LINES)


def _filter_ray_driver_lines(benign: tuple[str, ...]) -> None:
    """Drop ``benign`` lines from what Ray's driver prints on behalf of its raylet and workers (Ray
    prints them from a background thread whatever ``log_to_driver`` says)."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # pragma: no cover - Ray is a dependency
        return
    print_lines = ray_worker.print_to_stdstream
    if getattr(print_lines, "gmparse_filtered", False):
        return

    def filtered(data: dict, ignore_prefix: bool) -> None:
        lines = [ln for ln in data.get("lines", []) if not any(b in ln for b in benign)]
        if lines:
            print_lines({**data, "lines": lines}, ignore_prefix)

    filtered.gmparse_filtered = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = filtered


def init_ray(num_cpus: int | None = None, quiet: bool = True) -> None:
    """Connect to RAY_ADDRESS if set, else start a local Ray with over-declared CPUs.

    ``quiet``: the workers' output, Ray's INFO lines and Ray Data's progress bars and INFO logs
    stay off the console (they are in Ray's session logs); the jobs print their own progress."""
    import ray

    if quiet:
        quiet_console()
        quiet_ray_data()
    if ray.is_initialized():
        return
    env = {"MLFLOW_TRACKING_URI": tracking_uri(), **{k: os.environ.get(k, v) for k, v in TRACKING_RETRIES.items()}}
    runtime_env = {"env_vars": env}
    level = logging.WARNING if quiet else logging.INFO
    if os.environ.get("RAY_ADDRESS"):
        # inside `ray job submit` the job's runtime env is already in force and cannot be merged
        # with another; the tracking URI reaches workers through the training configs anyway
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=not quiet, logging_level=level)
    else:
        cpus = num_cpus or max(8, 4 * (os.cpu_count() or 1))
        ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=not quiet,
                 logging_level=level)


def quiet_ray_data() -> None:
    """Ray Data in this process: no progress bars (nor the warning that they are off), no INFO lines
    (MLflow's download bars: ``quiet_console``, which ``init_ray`` calls first)."""
    from ray.data import DataContext
    from ray.util.debug import log_once

    DataContext.get_current().enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # spends the one-time "progress bars disabled" warning
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file in the results home."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{results_home() / 'mlflow.db'}"


def storage_path(given: str | None = None) -> str:
    """Ray Train / Tune storage: ``--storage-path``, else ``GMPARSE_STORAGE``, else ``runs/`` in the results home."""
    return given or os.environ.get("GMPARSE_STORAGE") or str(results_home() / "runs")


def where_results_go(storage: str) -> str:
    """One line for the console: where this job's MLflow runs and checkpoints will be found."""
    note = ""
    if in_ray_job_copy():  # (init_mlflow has set MLFLOW_TRACKING_URI by now: no telling defaults apart)
        note = " (this job runs in Ray's per-job copy of the checkout, which goes with the session; set " \
               "GMPARSE_HOME, MLFLOW_TRACKING_URI or GMPARSE_STORAGE to choose other places)"
    return f"results: MLflow {tracking_uri()}, checkpoints {storage}{note}"


def init_mlflow(experiment: str, timeout_s: float = 10.0, quiet: bool = True) -> str:
    """Point MLflow at the tracking store, failing fast and clearly if a server is unreachable."""
    quiet_console(quiet)
    import mlflow

    uri = tracking_uri()
    default = not os.environ.get("MLFLOW_TRACKING_URI")  # the SQLite file in the results home
    if default:
        results_home().mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        problem = server_problem(uri, timeout_s)
        if problem:
            raise SetupError(f"MLflow tracking server {uri} is unreachable ({problem}); start it (mlflow server "
                             "...) or unset MLFLOW_TRACKING_URI to use the local SQLite store")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    for k, v in TRACKING_RETRIES.items():  # this process, and the local Ray it starts next, inherit them
        os.environ.setdefault(k, v)
    mlflow.set_tracking_uri(uri)
    if default and mlflow.get_experiment_by_name(experiment) is None:
        # a SQLite store keeps artifacts under ./mlruns of the working directory unless told: put
        # them beside the database, so a job run from Ray's per-job copy keeps them too
        mlflow.create_experiment(experiment, artifact_location=(results_home() / "mlruns").as_uri())
    mlflow.set_experiment(experiment)
    return uri


def server_problem(uri: str, timeout_s: float = 10.0) -> str | None:
    """Why the MLflow server at ``uri`` does not answer its ``/health``, or None when it does."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            return None if r.status == 200 else f"HTTP {r.status} on /health"
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return str(e)


#: the exit status of a job stopped by a tracking server that stayed away (``--resume`` continues it)
TRACKING_LOST_EXIT = 3


@contextlib.contextmanager
def tracking_server_outage(storage: str | None = None) -> Iterator[None]:
    """A job that fails while its MLflow server is down (past ``TRACKING_RETRIES``) says so in one
    line, naming the server and how to continue, instead of the traceback of whichever call gave up
    first (the driver's, or the Ray Train controller's, wrapped). Any other failure passes unchanged.

    ``storage`` given: the entry point's outermost guard, which prints the line and exits. Not
    given: an inner guard (around a fold's training), which only makes the calls left in this
    process, ending the MLflow runs on the way out, fail at once instead of waiting through the
    retries again, and lets the failure go on to the outer guard."""
    try:
        yield
    except Exception as e:
        uri = tracking_uri()
        problem = server_problem(uri) if uri.startswith(("http://", "https://")) else None
        if problem is None:
            raise
        wait = _GAVE_UP.setdefault("retries", ", ".join(
            f"{k}={os.environ.get(k, TRACKING_RETRIES[k])}"
            for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")))
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # MLflow reads it on every call
        if storage is None:
            raise
        first: BaseException = e  # the call that gave up first: the chain's end (later ones failed ending runs)
        seen = {id(e)}
        while (earlier := first.__cause__ or first.__context__) is not None and id(earlier) not in seen:
            first = earlier
            seen.add(id(earlier))
        said = " ".join(str(first).split())[:300]
        die(f"the MLflow tracking server {uri} stopped answering ({problem}) and did not come back within "
            f"MLflow's retries ({wait}). The checkpoints are kept under {storage}: start the server again and "
            f"rerun the same command with --resume. (The call that gave up: {type(first).__name__}: {said})",
            TRACKING_LOST_EXIT)


#: the retry settings in force when a guard gave up on the server (then set to none, to leave fast)
_GAVE_UP: dict[str, str] = {}


def die(msg: str, code: int = 2) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def storage_entries(storage: Path | str) -> list[str]:
    """The names of the folders directly under ``storage``: a local path, or any URI pyarrow's
    filesystems open (``s3://``, ``gs://``, ``file://``; credentials and endpoint from the
    environment, as Ray's own storage). A storage that does not exist yet holds nothing."""
    if "://" not in str(storage):
        root = Path(storage)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    import pyarrow.fs as pafs

    try:
        fs, root_path = pafs.FileSystem.from_uri(str(storage))
        infos = fs.get_file_info(pafs.FileSelector(root_path, allow_not_found=True))
    except (OSError, ValueError) as e:
        raise SetupError(f"cannot list the storage {storage} to resume: {e}") from None
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def resumable_run_name(base: str, storage: Path | str, resume: bool) -> str:
    """``base-<timestamp>``; with ``resume``, the newest earlier run of ``base`` under ``storage``
    (local or an object store: its Ray Train folders ``<name>-fold-0`` or ``<name>-final``), so its
    trainers pick up their checkpoints."""
    if resume:
        entries = storage_entries(storage)
        previous = [e for e in entries if fnmatch.fnmatch(e, f"{base}-*-fold-0") or fnmatch.fnmatch(e, f"{base}-*-final")]
        if previous:
            names = {e.rsplit("-fold-", 1)[0].rsplit("-final", 1)[0] for e in previous}
            return max(names)  # the timestamps sort as text
        print(f"nothing to resume under {storage} for {base}; starting a new run", flush=True)
    return f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
