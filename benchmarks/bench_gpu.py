"""GPU: paper-size FEN+PN training at 64x64 through Ray Data -> Ray Train, beside a plain loop.

The paper's network (``ModelConfig.preset("paper")``: 17x64 FEN + PN) at 64x64, the paper
preset's batch 16 and learning rate scaled together by ``--batch-scale`` (16: batch 256), the
loop's GPU step (``models.engine.train_one_epoch``: bf16 autocast around forward + loss,
channels-last, uint8 batches normalized on the device by ``models.inputs.model_input``):

- plain loop: one process, the images already on the GPU as uint8 (the collection's, repeated
  to ``--images``), a random permutation per epoch - the ceiling of the step itself;
- Ray Data -> Ray Train: ``workflows.lib.train_loop.fit`` (the loop every job runs) with one GPU worker,
  the fold cache (``image_dataset().materialize()``, ``epoch_plan``) and ``prefetch_batches``;
  its per-epoch evaluation left out (bench_training's timed task);
- ``--compile``: the plain loop again under ``torch.compile``, its compile time reported;
- the ``large`` collection preset's GMs on the GPU (what its build runs, ``BuildConfig.gpus_per_gm``):
  one GM of each family trained, gated and sampled (1,000 images) by ``zoo.make_gm`` on CUDA,
  one at a time, beside the one-core CPU seconds of benchmarks/RESULTS.md section 7.

Steady state excludes the first epoch. GPU utilisation is ``nvidia-smi``'s, sampled every 0.5 s
during each run (mean); peak memory is ``torch.cuda.max_memory_allocated``. The projection is
4 folds x 20 epochs x 100k training images / the Ray path's images/s: training only (start-up,
per-epoch evaluation and the final model excluded, and said so).

Without CUDA nothing is measured: the section says "GPU: not measured". ``--cpu-check`` runs the
same code on the CPU with a few images (to prove the path runs); its rows are labelled as a CPU
check, never as GPU figures.

Usage: python benchmarks/bench_gpu.py [--collection-64 PATH] [--batch-scale 16] [--epochs 3]
       [--images 20000] [--compile] [--cpu-check]
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import common

PAPER_RUN = {"folds": 4, "epochs": 20, "train_images": 100_000}  # issue #15's paper-size experiment
TARGET_MINUTES = 30.0


class GpuSampler:
    """``nvidia-smi`` utilisation (%) and memory (MiB) every 0.5 s while in use; empty without it."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:  # type: ignore[union-attr]
            try:
                self.util.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def mean(self) -> float:
        busy = self.util[2:] or self.util  # the first second is start-up
        return sum(busy) / len(busy) if busy else float("nan")


def job(col, epochs: int, batch_scale: int):
    """The paper preset's task and loop at the collection's size, batch and lr scaled together."""
    from gmparse.workflows.lib.cli import with_overrides
    from gmparse.workflows.lib.job_config import job_config
    from gmparse.workflows.lib.parsing_task import parsing_task

    cfg = with_overrides(job_config("paper"), {"epochs": epochs, "image_size": col.image_size, "ema": 0.0,
                                               "batch_scale": batch_scale, "prefetch_batches": 4})
    task, loop = parsing_task(cfg, col.targets(list(col.gms["gm_id"])))
    return cfg, task, loop


def plain_loop(task, loop, images, labels: dict[str, Any], device, compile_model: bool) -> dict[str, float]:
    """The loop's step (``train_one_epoch``) over uint8 images resident on ``device``."""
    import torch

    from gmparse.models.engine import autocast_dtype, train_one_epoch
    from gmparse.models.parser import ParsingModel

    torch.manual_seed(0)
    model = ParsingModel(task.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats()
    step_model = torch.compile(model) if compile_model else model
    opt = torch.optim.Adam(model.parameters(), lr=loop.lr)
    cw = [torch.as_tensor(w, dtype=torch.float32, device=device) for w in task.class_weights]
    amp = autocast_dtype(task.precision, device)  # the paper preset's "auto": bf16 on CUDA
    images, labels = images.to(device), {k: v.to(device) for k, v in labels.items()}
    b, gen = loop.batch_size, torch.Generator(device=device).manual_seed(0)
    epochs, first_step = [], None
    t_start = time.time()
    for _ in range(loop.epochs):
        perm = torch.randperm(len(images), generator=gen, device=device)
        batches = ({"image": images[perm[i : i + b]], **{k: v[perm[i : i + b]] for k, v in labels.items()}}
                   for i in range(0, len(perm) - b + 1, b))
        marks: list[float] = []
        t0 = time.time()
        out = train_one_epoch(step_model, opt, batches, task.weights, cw, amp_dtype=amp,
                              on_step=lambda s, m=marks: m.append(time.time()))
        if device.type == "cuda":
            torch.cuda.synchronize()
        first_step = first_step if first_step is not None else marks[0] - t_start
        epochs.append({"seconds": time.time() - t0, "images": out["images"]})
    steady = epochs[1:] or epochs
    return {"images_per_s": sum(e["images"] for e in steady) / sum(e["seconds"] for e in steady),
            "first_step_s": first_step,
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")}


def ray_path(col, cfg, task, loop, use_gpu: bool, out_root: Path, max_images: int | None = None) -> dict[str, float]:
    """``workflows.lib.train_loop.fit`` on one worker over the fold cache, as ``cv_folds`` feeds it (the
    first ``max_images`` rows only, for the CPU check)."""
    from bench_training import ray_train_run

    from gmparse.data_pipeline.ray_data import epoch_plan, image_dataset
    from gmparse.workflows.lib.parsing_task import TRAIN_COLUMNS

    ds = image_dataset(col, split="all", size=cfg.image_size).select_columns(TRAIN_COLUMNS)
    ds = (ds.limit(max_images) if max_images else ds).materialize()
    ds, plan = epoch_plan(ds, cached=True, seed=0, fraction=1.0, batch_size=loop.batch_size, num_workers=1)
    return ray_train_run(ds, task, dataclasses.replace(loop, plan=plan), 1, out_root, use_gpu=use_gpu)


def resident_images(col, n: int):
    """The collection's decoded uint8 images and labels as tensors, repeated up to ``n`` rows."""
    import numpy as np
    import torch

    from gmparse.data_pipeline.in_memory import load_images

    arr = load_images(col)
    reps = max(1, -(-n // len(arr.images)))
    idx = np.tile(np.arange(len(arr.images)), reps)[:n]
    t = arr.targets.take(idx)
    labels = {"continuous": torch.as_tensor(t.continuous, dtype=torch.float32), "discrete": torch.as_tensor(t.discrete),
              "loss": torch.as_tensor(t.loss), "group": torch.as_tensor(t.group)}
    return torch.from_numpy(np.ascontiguousarray(arr.images[idx])), labels


def collection_64(path: str | None):
    """``--collection-64``; else a smoke zoo built at 64x64 (once, under data/collections/)."""
    from gmparse.data_pipeline.build import build_config, ensure_collection
    from gmparse.data_pipeline.collection import open_collection

    if path:
        return open_collection(path)
    cfg = build_config("smoke", image_size=64, images_per_gm=1024, real_images=1024)
    print(f"building a 64x64 smoke collection under {cfg.default_path()} (once) ...", flush=True)
    return ensure_collection(cfg, common.REPO_ROOT / cfg.default_path(), progress=False)


def zoo_gm_seconds(device, cuda: bool) -> list[str]:
    """Seconds to train, gate and sample one ``large``-preset GM of each family on ``device``, one at a
    time (on the CPU check: the smoke zoo settings at 32 px, a few images)."""
    from gmparse.data_pipeline.build import _photo_pool, build_config
    from gmparse.data_pipeline.real_images import random_crops
    from gmparse.data_pipeline.zoo import ZOO_PRESETS, make_gm, sample_specs

    cfg = build_config("large")
    size, n_images, zoo_cfg = (cfg.image_size, cfg.images_per_gm, ZOO_PRESETS["large"]) if cuda else \
        (32, 16, ZOO_PRESETS["smoke"])
    crops = random_crops(_photo_pool(cfg), 4096 if cuda else 256, size, seed=cfg.seed)
    specs = sample_specs(cfg.n_gms, cfg.seed, size)
    parts = []
    for family in sorted({s.family for s in specs}):
        spec = next(s for s in specs if s.family == family)
        t0 = time.perf_counter()
        r = make_gm(spec, crops, n_images, zoo_cfg, device=device)
        parts.append(f"{family} {time.perf_counter() - t0:.1f} s ({r.steps} steps, gate {'pass' if r.passed else 'FAIL'})")
    return parts


def not_measured(reason: str) -> common.Section:
    return common.Section(
        name="gpu", title="GPU (paper-size FEN+PN at 64x64)",
        how=f"GPU: not measured. {reason} Nothing here is extrapolated from CPU figures.",
        columns=["what", "value"], rows=[["GPU", "not measured"]])


def main() -> None:
    t_start = time.time()
    ap = common.base_args(__doc__)
    ap.add_argument("--collection-64", default=None, help="a 64x64 collection (default: a smoke zoo at 64x64)")
    ap.add_argument("--batch-scale", type=int, default=16, help="x the paper's batch 16 and its learning rate")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run, the first excluded")
    ap.add_argument("--images", type=int, default=20000, help="training images per plain-loop epoch")
    ap.add_argument("--compile", action="store_true", help="also time the plain loop under torch.compile")
    ap.add_argument("--cpu-check", action="store_true", help="no GPU: run the code path on the CPU, tiny")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_check:
        common.finish(not_measured("No CUDA device on this machine (python benchmarks/bench_gpu.py on one "
                                   "writes the table)."), args, t_start)
        return
    device = torch.device("cuda" if cuda else "cpu")
    col = collection_64(args.collection_64)
    epochs, n_images, scale = (args.epochs, args.images, args.batch_scale) if cuda else (2, 256, 1)
    where = torch.cuda.get_device_name() if cuda else "CPU check (tiny; not a GPU figure)"
    rows: list[list[Any]] = []
    out_root = common.WORK_DIR / "gpu"
    out_root.mkdir(parents=True, exist_ok=True)
    with common.ray_session(max(8, 4 * common.n_cores()), **({"num_gpus": 1} if cuda else {})):
        cfg, task, loop = job(col, epochs, scale)
        images, labels = resident_images(col, n_images)
        runs = {"plain loop, images resident on the device": False}
        if args.compile:
            runs["plain loop, torch.compile"] = True
        for name, compiled in runs.items():
            with GpuSampler() as gpu:
                r = plain_loop(task, loop, images, labels, device, compiled)
            rows.append([where, name, r["images_per_s"], gpu.mean(), r["peak_mb"], r["first_step_s"]])
        with GpuSampler() as gpu:
            r = ray_path(col, cfg, task, loop, cuda, out_root, None if cuda else n_images)
        rows.append([where, "Ray Data -> Ray Train (workflows.lib.train_loop.fit, 1 worker)", r["images_per_s"], gpu.mean(),
                     r.get("gpu_peak_mb", float("nan")), r["startup_s"]])
    gm_parts = zoo_gm_seconds(device, cuda)
    ray_ips = rows[-1][2]
    total = PAPER_RUN["folds"] * PAPER_RUN["epochs"] * PAPER_RUN["train_images"]
    notes = [f"{common.collection_label(col)}; batch {loop.batch_size} (paper 16 x {scale}), lr {loop.lr:g}, "
             f"{epochs} epochs a run; plain loop epochs of {len(images)} images."]
    notes.append(("Zoo GMs of the large preset (64 px, 1,000 samples each) on this GPU, one at a time, wall seconds "
                  "to train + gate + sample: " if cuda else "Zoo GM code path on the CPU (smoke settings, 32 px; no GPU "
                  "figure): ") + ", ".join(gm_parts) + (". One CPU core's seconds for the same work: RESULTS.md "
                  "section 7. The build shares each GPU among four GMs (gpus_per_gm 0.25), not timed here." if cuda else "."))
    targets = []
    if cuda:
        minutes = total / ray_ips / 60
        notes.append(f"Projected paper-size run (4 folds x 20 epochs x 100k images = {total:,} training images) at "
                     f"the Ray path's {ray_ips:,.0f} images/s: {minutes:.1f} min of training (start-up, per-epoch "
                     "evaluation and the final model not included).")
        targets.append(common.Target("paper-size 4-fold training minutes on one GPU (projected from the Ray path)",
                                     round(minutes, 1), f"< {TARGET_MINUTES:g}", minutes < TARGET_MINUTES))
    else:
        notes.append("GPU: not measured. These rows ran the code path on the CPU with a few images; they are no "
                     "GPU figure and nothing is projected from them.")
    section = common.Section(
        name="gpu", title="GPU (paper-size FEN+PN at 64x64)",
        how=("The paper's 17x64 FEN + PN at 64x64, bf16 autocast + channels-last on CUDA; images/s in steady state "
             "(first epoch excluded); utilisation = mean of nvidia-smi samples; first step = seconds to the first "
             "optimizer step (with torch.compile: the compilation; Ray: fit() called, workers and data included)."),
        columns=["device", "path", "images/s", "GPU util %", "peak GPU MiB", "first step s"],
        rows=rows, notes=notes, targets=targets)
    common.finish(section, args, t_start)


if __name__ == "__main__":
    main()
