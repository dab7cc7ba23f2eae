"""What every entry point does before it trains, in one place.

Input checks before Ray starts (a wrong path or a bad collection is an error in a second, with
nothing started), SIGTERM handling, MLflow and Ray start-up, the collection opened or built,
GPU detection, the storage folder (printed), and the stable base of the run's name, so that
``cv_folds.py``, ``forensics.py`` and ``tune_sweep.py`` differ only in what they train.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmparse.data_pipeline.collection import Collection, CollectionError, open_collection
from gmparse.data_pipeline.folds import FoldError
from gmparse.data_pipeline.paths import LEFT_COPY_ENV, in_ray_job_copy, results_home
from gmparse.workflows.lib.runtime import (
    SetupError,
    die,
    init_mlflow,
    init_ray,
    resumable_run_name,
    storage_path,
    where_results_go,
)

#: errors that mean "bad input or a missing service": a one-line message and exit code 2
INPUT_ERRORS = (CollectionError, FoldError, SetupError)


@dataclass(frozen=True)
class Job:
    col: Collection
    storage: str  # Ray Train / Tune storage (checkpoints)
    use_gpu: bool
    base: str  # "<prefix>-<preset>-<collection key>-<config key>": what is trained, on what

    def run_name(self, resume: bool) -> str:
        """A new ``base-<timestamp>``, or with ``resume`` the newest earlier run of ``base``."""
        return resumable_run_name(self.base, self.storage, resume)


def run_base(prefix: str, cfg: Any, build_key: str) -> str:
    """``<prefix>-<preset>-<collection key>-<config key>``: what is trained, on what. Every run of
    the same job on the same collection starts with it (``-<timestamp>`` follows)."""
    return f"{prefix}-{cfg.preset}-{build_key[:8]}-{cfg.key()}"


#: the options that name a file or folder: made absolute before a job leaves Ray's per-job copy
PATH_OPTIONS = ("collection", "test_collection", "storage_path", "out", "config")


def leave_ray_job_copy(args: argparse.Namespace) -> None:
    """Inside ``ray job submit --working-dir``, the entry point starts in Ray's copy of that folder,
    which Ray deletes when no process on the node holds it any more (seen with several nodes on one
    machine: MLflow's ``log_model`` then failed in ``os.getcwd()``). The package is imported from its
    install, not from the copy; here the relative paths the user gave are made absolute and the
    process moves to the results home, so nothing the job writes or reads later depends on the copy."""
    if not in_ray_job_copy():
        return
    try:
        here = Path.cwd()
    except FileNotFoundError:
        here = None
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            if here is None:
                raise SetupError(f"--{name.replace('_', '-')} {value} is relative to Ray's copy of the working "
                                 "directory, which no longer exists: give an absolute path")
            setattr(args, name, str(here / value))
    home = results_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ[LEFT_COPY_ENV] = str(here or "(removed)")  # still a job from the copy (where results go)
    os.chdir(home)


def stop_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, a scheduler) unwinds like Ctrl-C, so MLflow runs end as KILLED/FAILED;
    and neither is lost in a finalizer (``redeliver_lost_interrupts``)."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))
    redeliver_lost_interrupts()


def redeliver_lost_interrupts() -> None:
    """A Ctrl-C that lands while Python runs a finalizer or a weakref callback (garbage collection
    runs them at any moment) is printed as "Exception ignored" and dropped, and the job went on
    training (seen once in the Ctrl-C test, now in ``tests/test_object_store.py``). Such an
    interrupt is sent again a moment later, outside the finalizer, so the job stops as asked."""
    previous = sys.unraisablehook
    if getattr(previous, "redelivers_interrupts", False):
        return

    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous(unraisable)

    hook.redelivers_interrupts = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def open_or_build(collection: str | None, preset: str, seed: int) -> Collection:
    """The given collection, else the preset's zoo collection (built on first use, then reused)."""
    if collection:
        return open_collection(collection)
    from gmparse.data_pipeline.build import build_config, ensure_collection  # the zoo (torch): only to build

    return ensure_collection(build_config(preset, seed=seed))


def start_job(args: argparse.Namespace, cfg: Any, prefix: str,
              validate: Callable[[Collection], object] = lambda col: None) -> Job:
    """Set up a job from its parsed ``args`` (``collection``, ``experiment``, ``storage_path``,
    ``verbose``) and config (``collection_preset``, ``seed``, ``use_gpu``, ``num_workers``, ``preset``,
    ``key()``). ``validate`` checks the collection for this job (e.g. that it has enough GMs for the
    folds) once: before Ray starts when the user named one, else after it is built. Bad input or an
    unreachable service exits with code 2 and one line."""
    stop_on_sigterm()
    try:
        leave_ray_job_copy(args)
        given = open_collection(args.collection) if args.collection else None
        if given is not None:
            validate(given)
        quiet = not getattr(args, "verbose", False)
        init_mlflow(args.experiment, quiet=quiet)
        init_ray(quiet=quiet)
        col = given or open_or_build(None, cfg.collection_preset, cfg.seed)
        if given is None:
            validate(col)
    except INPUT_ERRORS as e:
        die(str(e))
    import ray

    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else ray.cluster_resources().get("GPU", 0) >= cfg.num_workers
    storage = storage_path(args.storage_path)
    print(where_results_go(storage), flush=True)
    key = str(col.manifest.get("build_key", col.manifest.get("gms_sha256", "")))
    return Job(col, storage, use_gpu, run_base(prefix, cfg, key))
