"""Where a job's results go by default: the checkout, or a per-user folder when the checkout is
Ray's per-job copy.

``ray job submit --working-dir .`` runs the entry point in a copy of the checkout under Ray's
session folder (``.../runtime_resources/working_dir_files/...``), which goes with the session.
Defaults relative to that copy (the MLflow SQLite store and its artifacts, the checkpoints, a
collection built on first use) would be lost with it and invisible from the user's checkout, so
there the defaults move to ``$XDG_DATA_HOME/gmparse`` (``~/.local/share/gmparse``). The job is
told by its working directory (Ray starts the entry point there; the package itself is imported
from wherever it is installed). An install that is not a checkout (a wheel, a cluster image) has no
folder of its own to write beside, so it uses the per-user folder too.
``GMPARSE_HOME`` overrides both; ``MLFLOW_TRACKING_URI``, ``GMPARSE_STORAGE`` and
``GMPARSE_COLLECTION`` still override each default on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the folders that install as ``gmparse.<name>`` (pyproject.toml's package-dir)
PACKAGES = ("data_pipeline", "models", "workflows")
HOME_ENV = "GMPARSE_HOME"
#: set by a job that started in Ray's per-job copy and left it (workflows.lib.job.leave_ray_job_copy)
LEFT_COPY_ENV = "GMPARSE_STARTED_IN_RAY_JOB_COPY"
#: the folder Ray unpacks a job's ``working_dir`` into (ray._private.runtime_env.working_dir)
RAY_JOB_COPY_DIR = "working_dir_files"


def in_ray_job_copy(root: Path | None = None) -> bool:
    """True when ``root`` (default: the working directory) is Ray's per-job copy of a submitted
    working directory. A working directory that no longer exists counts as such a copy, and so does
    one that a job moved to after leaving the copy (``LEFT_COPY_ENV``)."""
    if root is None:
        if os.environ.get(LEFT_COPY_ENV):
            return True
        try:
            root = Path.cwd()
        except FileNotFoundError:  # Ray removed the job's copy under it
            return True
    return RAY_JOB_COPY_DIR in Path(root).parts


def is_checkout(root: Path = REPO_ROOT) -> bool:
    """True when the package is imported from a source checkout (editable install), not a wheel."""
    return (Path(root) / "pyproject.toml").is_file()


def user_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "gmparse"


def results_home(root: Path | None = None) -> Path:
    """``$GMPARSE_HOME``; else the per-user data folder inside a Ray job's copy or for an installed
    wheel; else ``root`` (default: the checkout)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    if in_ray_job_copy(root):
        return user_data_home()
    if root is None:
        return REPO_ROOT if is_checkout() else user_data_home()
    return Path(root)


def collections_root() -> Path:
    """Where preset collections are built on first use and found again."""
    return results_home() / "data" / "collections"
