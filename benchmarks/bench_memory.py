"""Memory: peak resident memory of a training worker and of the driver, default preset.

A short training run as ``workflows/cv_folds.py --preset default`` does one fold: this process is
the driver (``image_dataset`` train/val splits, ``materialize()`` as with ``cache_decoded``, one
``TorchTrainer``), and the workers run the real ``workflows.lib.train_loop.run_worker`` (the parsing task)
(default JobConfig model, batch 64, validation and a checkpoint every epoch) wrapped so that,
after it returns, each worker writes its ``resource.getrusage`` ``ru_maxrss`` and
``/proc/self/status`` ``VmHWM``. The driver's are read at the end; run this script in its own
process (``run_all.py`` does) so the figures are this job's alone.

Usage: python benchmarks/bench_memory.py [--quick] [--collection PATH] [--epochs 2] [--workers 1]
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import common


def loop_with_memory(task: Any, loop: Any, out_dir: str) -> None:
    """The real training loop, then this worker's peak memory into ``out_dir`` (``common`` imports
    here because Ray gives its workers the driver's ``sys.path``, benchmarks/ first)."""
    import ray.train

    from gmparse.workflows.lib.train_loop import run_worker

    run_worker(task, loop)
    import common as bench_common

    rank = ray.train.get_context().get_world_rank()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(bench_common.peak_memory_mb()))


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (2; quick 1)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    epochs = args.epochs or (1 if args.quick else 2)
    common.one_torch_thread()
    before = common.peak_memory_mb()
    col = common.get_collection(args.collection)

    from gmparse.workflows.lib.cli import with_overrides
    from gmparse.workflows.lib.job_config import job_config
    from gmparse.workflows.lib.parsing_task import EVAL_COLUMNS, TRAIN_COLUMNS, parsing_task
    from gmparse.workflows.lib.train_loop import torch_trainer

    cfg = with_overrides(job_config("default"), {"epochs": epochs, "image_size": col.image_size, "num_workers": args.workers})
    out_dir = common.WORK_DIR / "memory" / f"run-{uuid.uuid4().hex[:8]}"
    out_dir.mkdir(parents=True)
    cores = common.n_cores()
    with common.ray_session(max(8, 4 * cores)):
        from gmparse.data_pipeline.ray_data import image_dataset

        gms = list(col.fake_gms["gm_id"])
        ds_args = {"size": cfg.image_size, "val_fraction": cfg.val_fraction, "seed": cfg.seed}
        train_ds = image_dataset(col, gms, split="train", **ds_args).materialize()
        val_ds = image_dataset(col, gms, split="val", **ds_args).materialize()
        after_data = common.peak_memory_mb()
        n_train, n_val = train_ds.count(), val_ds.count()
        task, loop = parsing_task(cfg, col.targets(gms))
        trainer = torch_trainer(
            functools.partial(loop_with_memory, task, loop, str(out_dir)),
            out_dir.name, {"train": train_ds.select_columns(TRAIN_COLUMNS), "val": val_ds.select_columns(EVAL_COLUMNS)},
            storage_path=str(common.WORK_DIR / "ray-train"), num_workers=cfg.num_workers, use_gpu=False,
            cpus_per_worker=cfg.cpus_per_worker, keep_checkpoints=cfg.keep_checkpoints, max_failures=0)
        t0 = time.time()
        result = trainer.fit()
        fit_s = time.time() - t0
        loop_rss = (result.metrics or {}).get("worker/max_rss_mb")
    driver = common.peak_memory_mb()
    workers = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]
    rows = [["driver (this process), before the collection", before["ru_maxrss_mb"], before.get("vmhwm_mb"), ""],
            ["driver, after materializing the train/val datasets", after_data["ru_maxrss_mb"],
             after_data.get("vmhwm_mb"), ""],
            ["driver, after trainer.fit() (peak of the run)", driver["ru_maxrss_mb"], driver.get("vmhwm_mb"), ""]]
    for r, w in enumerate(workers):
        rows.append([f"training worker rank {r}", w["ru_maxrss_mb"], w.get("vmhwm_mb"),
                     fmt_loop(loop_rss) if r == 0 else ""])
    if len(workers) != cfg.num_workers:
        rows.append([f"training workers: {len(workers)} of {cfg.num_workers} wrote their figures", None, None, ""])
    m = cfg.model
    section = common.Section(
        name="memory",
        title="Memory (peak resident, default preset training)",
        how=(f"Default JobConfig: FEN {m.fen_depth}x{m.fen_width} at {cfg.image_size}px, batch {cfg.batch_size}, "
             f"{cfg.num_workers} worker(s), {epochs} epoch(s) of the real training loop on "
             f"{common.collection_label(col)} ({n_train} train / {n_val} val images); "
             f"fit() took {fit_s:.0f} s. MiB."),
        columns=["process", "ru_maxrss MiB", "VmHWM MiB", "worker/max_rss_mb logged by the loop"],
        rows=rows,
        notes=["The training loop logs worker/max_rss_mb (ru_maxrss) per epoch; it does not log VmHWM or the "
               "driver's peak per fold (cv_folds logs driver_max_rss_mb once, at the end of the job).",
               "Linux keeps a parent's ru_maxrss across fork+exec, so a process started by a big one can show the "
               "parent's peak there; VmHWM is always the process's own.",
               "Decoded images live in Ray's object store (shared memory), counted here only as far as a process "
               "maps them; with the smoke collection they are small."],
    )
    common.finish(section, args, t_start)


def fmt_loop(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    main()
