"""Build a GM collection from the zoo: one Ray task per GM, each GM persisted as it finishes.

Each task trains one GM briefly on real crops (a budget of steps, never of seconds), passes it
through the quality gate and returns its PNG-encoded samples, measured labels and gate figures;
the driver persists each GM at once in the build's staging folder (``data_pipeline.partial``:
a killed build resumes, a larger one reuses a smaller one's GMs), and when every GM is there
writes the real-image shards, gms.parquet and, last, the manifest, and renames the folder into
place. The content depends only on the settings and the seed: not on the finish order, the
number of runs or workers, or the machine's speed.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.build_config import BUILD_PRESETS, BuildConfig, build_config  # noqa: F401  (re-exported)
from gmparse.data_pipeline.collection import (
    GMS_FILE,
    MANIFEST,
    REAL_GM_ID,
    Collection,
    CollectionError,
    atomic_write_bytes,
    gms_row,
    image_rows,
    is_local,
    open_collection,
    sha256_file,
    validate_gms_table,
    write_shard,
)
from gmparse.data_pipeline.partial import GMRecord, PartialBuild, lineage_donors
from gmparse.data_pipeline.preprocess import encode_png
from gmparse.data_pipeline.real_images import REAL_SOURCES, PhotoPool, load_photo_dir, random_crops
from gmparse.data_pipeline.realism import RealismReference, calibration, realism_summary
from gmparse.data_pipeline.realism import caption as realism_caption

if TYPE_CHECKING:
    from gmparse.data_pipeline import zoo


def _check_gpus(cfg: BuildConfig) -> None:
    """A GPU build on a Ray without GPUs: an error on a local Ray (its tasks would wait forever),
    a warning on a cluster (they wait for the autoscaler's GPU workers)."""
    import ray

    if cfg.gpus_per_gm <= 0 or ray.cluster_resources().get("GPU", 0) > 0:
        return
    if not os.environ.get("RAY_ADDRESS"):
        raise CollectionError(f"the {cfg.preset} preset trains each GM on {cfg.gpus_per_gm} of a GPU, and this "
                              "machine's Ray has no GPU; build it with workflows/build_collection.py "
                              f"--preset {cfg.preset} --gpus-per-gm 0 to train on CPU cores")
    print(f"build: no GPU in the cluster yet; the GM tasks ({cfg.gpus_per_gm} GPU each) wait for GPU workers "
          "(--gpus-per-gm 0 trains on CPU workers)", flush=True)


def _photo_pool(cfg: BuildConfig) -> PhotoPool:
    return load_photo_dir(cfg.real_dir) if cfg.real_dir else REAL_SOURCES[cfg.real_source]()


def _make_gm_task(spec: zoo.GMSpec, real_crops: np.ndarray, n_images: int, train_cfg: zoo.ZooTrainConfig,
                  realism_ref: RealismReference, use_gpu: bool = False) -> dict[str, Any]:
    """Runs in a Ray worker: train + gate + sample one GM (on the task's GPU with ``use_gpu``),
    measure its realism against the held-out real images (and the same GM untrained), return
    compact results."""
    import torch

    from gmparse.data_pipeline import zoo

    res = zoo.make_gm(spec, real_crops, n_images, train_cfg, device="cuda" if use_gpu else "cpu")
    phases = dict(res.phase_seconds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per task, as in make_gm
    try:
        t = time.thread_time()
        realism = realism_ref.measure(res.images)
        realism["swd_untrained"] = realism_ref.swd(res.untrained)
        phases["realism"] = time.thread_time() - t
    finally:
        torch.set_num_threads(threads)
    t = time.thread_time()
    pngs = [encode_png(im) for im in res.images]
    phases["encode"] = time.thread_time() - t
    t = time.thread_time()
    grid = zoo.sample_grid_png(res.images[:32], real_crops[:32], caption=realism_caption(realism))
    phases["grid"] = time.thread_time() - t
    return {
        "gm_id": spec.gm_id,
        "family": spec.family,
        "spec": spec.to_json(),
        "labels": res.labels.to_dict(),
        "pngs": pngs,
        "quality": {k: float(v) for k, v in res.quality.items()},
        "passed": bool(res.passed),
        "attempts": int(res.attempts),
        "steps": int(res.steps),
        "train_seconds": float(res.train_seconds),
        "implementation": spec.arch.implementation,
        "realism": realism,
        "grid": grid,
        "phase_seconds": {k: round(float(v), 4) for k, v in phases.items()},
    }


#: families by their measured cost per GM, costliest first (benchmarks/RESULTS.md section 8): the
#: order a build submits its GM tasks in
SUBMIT_ORDER = {"autoregressive": 0, "gan": 1, "vae": 2, "diffusion": 3, "autoencoder": 4}


def _shard_rows(cfg: BuildConfig, idx: int, gm_id: str, pngs: list[bytes]) -> list[tuple[int, dict[str, list[Any]]]]:
    """A GM's images as (shard index, rows): shard indices depend only on the GM's index."""
    stride = _shard_stride(cfg)
    out = []
    for c in range(stride):
        chunk = pngs[c * cfg.max_rows_per_shard : (c + 1) * cfg.max_rows_per_shard]
        if chunk:
            out.append((idx * stride + c, image_rows(gm_id, chunk, [(cfg.image_size,) * 2] * len(chunk), True,
                                                     start=c * cfg.max_rows_per_shard)))
    return out


def _shard_stride(cfg: BuildConfig) -> int:
    return max(1, -(-cfg.images_per_gm // cfg.max_rows_per_shard))


def _record(idx: int, r: dict[str, Any], node: str, worker: int) -> GMRecord:
    """A finished task's result as the record a build persists (images and grid go in files)."""
    status = "kept" if r["passed"] else "rejected"
    timing = {"train_seconds": r.pop("train_seconds"), "phase_seconds": r.pop("phase_seconds"),
              "node": node, "pid": worker}
    r.pop("pngs", None)
    r.pop("grid", None)
    return GMRecord(index=idx, gm_id=r["gm_id"], status=status, result=r, shards=[], grid=False, timing=timing)


def _cores() -> float:
    """The cores GM tasks can use: the cluster's CPUs, or on a local Ray (which over-declares its
    logical CPUs) the machine's."""
    import ray

    cores = float(ray.cluster_resources().get("CPU", 1))
    if not os.environ.get("RAY_ADDRESS"):
        cores = min(cores, float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))
    return cores


def _is_system_failure(e: BaseException) -> bool:
    """A task lost to its worker, node or object store (retry later), not to its own code."""
    import ray.exceptions as rex

    return isinstance(e, rex.WorkerCrashedError | rex.NodeDiedError | rex.ObjectLostError | rex.TaskCancelledError
                      | rex.RaySystemError | rex.OutOfMemoryError)


def _gm_task_with_node(*args: Any) -> tuple[dict[str, Any], str, int]:
    """The GM task, returning also where it ran (the node id and the worker's pid)."""
    import ray

    return _make_gm_task(*args), ray.get_runtime_context().get_node_id(), os.getpid()


def build_collection(cfg: BuildConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Collection:
    """Build ``cfg``'s collection at ``out`` with one Ray task per GM (starts Ray if needed).

    Resumable and growable (``data_pipeline.partial``): each GM is persisted as soon as its task
    returns; a rerun builds only the GMs that are missing, and GMs of the same lineage already
    built beside ``out`` (a smaller or larger collection, or a partial build) are reused. ``out``
    may hold a collection of the same lineage (it grows or shrinks to ``cfg.n_gms``); another one
    is replaced only with ``overwrite``. The finished collection depends on the GMs alone, not on
    how many runs, machines or workers built it."""
    import ray
    from tqdm.auto import tqdm

    from gmparse.data_pipeline import zoo

    out = Path(out).resolve()
    if not is_local(str(out)):
        raise CollectionError(f"collections are built on a local or mounted path, then copied; got {out}")
    lineage = cfg.lineage_key()
    if (out / MANIFEST).exists():
        try:
            existing = json.loads((out / MANIFEST).read_text())
        except ValueError:
            existing = {}
        if existing.get("build_key") == cfg.key():
            return open_collection(out)
        if existing.get("lineage_key") != lineage and not overwrite:
            raise CollectionError(f"{out} already holds a collection of other settings (pass overwrite)")
    if not ray.is_initialized():
        ray.init()
    _check_gpus(cfg)
    t0 = time.time()
    specs = zoo.sample_specs(cfg.n_gms, cfg.seed, cfg.image_size, cfg.implementation_tuple(), cfg.hidden_act,
                             cfg.family_mix)
    wanted = {i: s.gm_id for i, s in enumerate(specs)}
    partial = PartialBuild(out, lineage, cfg.lineage_fields())
    adopted = sum(partial.adopt(d, wanted) for d in lineage_donors(out, lineage))
    partial.prune(cfg.n_gms)
    done = partial.done()
    records = dict(done)  # every finished GM's record, the ones this run writes added as they come
    todo = [i for i in range(len(specs)) if i not in done]
    if progress and (done or adopted):
        print(f"build: {len(done)} of {len(specs)} GMs already built ({adopted} taken from collections of the "
              f"same settings); building {len(todo)}", flush=True)
    pool = _photo_pool(cfg)
    train_crops = random_crops(pool, cfg.train_crops, cfg.image_size, seed=cfg.seed)
    real_crops = random_crops(pool, cfg.real_images, cfg.image_size, seed=cfg.seed + 1_000_003)
    train_cfg = zoo.ZOO_PRESETS[cfg.zoo_preset]
    if cfg.max_gm_seconds is not None:
        train_cfg = train_cfg.with_(max_seconds=cfg.max_gm_seconds)
    lost: list[str] = []
    over_guard: list[str] = []
    busy = 0.0  # the GM tasks' CPU seconds, for the idle share
    cores = _cores()  # before the tasks: a node lost mid-build must not shrink the denominator
    t_tasks = time.time()
    if todo:
        crops_ref = ray.put(train_crops)
        realism_ref = ray.put(RealismReference(real_crops, seed=cfg.seed))
        task = ray.remote(num_cpus=1, num_gpus=cfg.gpus_per_gm, max_retries=3)(_gm_task_with_node)
        # the costliest families first (longest-processing-time order), so the build does not end on a
        # few long GMs with the other cores idle; what is built does not depend on the order
        order = sorted(todo, key=lambda i: (SUBMIT_ORDER.get(specs[i].family, len(SUBMIT_ORDER)), i))
        pending = {task.remote(specs[i], crops_ref, cfg.images_per_gm, train_cfg, realism_ref, cfg.gpus_per_gm > 0): i
                   for i in order}
        with tqdm(total=len(specs), initial=len(done), desc="building GMs", unit="GM", disable=not progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                idx = pending.pop(ready[0])
                try:
                    r, node, pid = ray.get(ready[0])
                except Exception as e:  # sorted below: the GM's own error, the guard, or the system
                    cause = getattr(e, "cause", None) or e
                    if isinstance(cause, zoo.GMBudgetExceeded):
                        over_guard.append(str(cause))
                    elif _is_system_failure(e):
                        lost.append(f"{specs[idx].gm_id}: {type(e).__name__}")
                    else:  # the GM's code raised: deterministic, so recorded like a rejection
                        rec = GMRecord(idx, specs[idx].gm_id, "failed",
                                       {"gm_id": specs[idx].gm_id, "error": f"{type(cause).__name__}: {cause}"[:500]},
                                       [], False, {})
                        records[idx] = partial.write_gm(rec, [], None)
                    bar.update(1)
                    continue
                pngs, grid = r["pngs"], r["grid"]
                rec = _record(idx, r, node, pid)
                busy += float(rec.timing["train_seconds"]) + sum(
                    v for k, v in rec.timing["phase_seconds"].items() if k in ("realism", "encode", "grid"))
                if rec.status == "kept":
                    records[idx] = partial.write_gm(rec, _shard_rows(cfg, idx, rec.gm_id, pngs), grid)
                else:
                    records[idx] = partial.write_gm(rec, [], None)
                bar.update(1)
                bar.set_postfix(gm=rec.gm_id, gate="pass" if rec.status == "kept" else "FAIL")
    task_wall = time.time() - t_tasks
    if over_guard or lost:
        kept = len(records)
        why = "; ".join(over_guard + [f"lost to a worker or node: {g}" for g in lost])
        raise CollectionError(f"build of {out} stopped with {len(specs) - kept} of {len(specs)} GMs missing "
                              f"({why}). The {kept} finished GMs are kept in {partial.dir}; run the same build "
                              "again to resume it")
    return _finalize(cfg, partial, [records[i] for i in range(len(specs))], pool, real_crops, t0,
                     {"task_wall_seconds": round(task_wall, 1), "task_cpu_seconds": round(busy, 1), "cores": cores,
                      "gms_built_here": len(todo), "gms_reused": len(specs) - len(todo)})


def _finalize(cfg: BuildConfig, partial: PartialBuild, records: list[GMRecord], pool: PhotoPool,
              real_crops: np.ndarray, t0: float, run: dict[str, Any]) -> Collection:
    """gms.parquet, the real-image shards and the manifest from the records (one per GM, in
    order), then into place."""
    kept = [rec for rec in records if rec.status == "kept"]
    failed = [{"gm_id": rec.gm_id, **({"error": rec.result["error"]} if rec.status == "failed" else
                                      {"error": f"quality gate failed after {rec.result['attempts']} attempts",
                                       "quality": rec.result["quality"]})}
              for rec in records if rec.status != "kept"]
    if not kept:
        raise CollectionError(f"no GM passed the quality gate: {failed}")
    labels = [schema.GMLabels.from_dict(r.result["labels"]) for r in kept]
    ranges = schema.Ranges.fit(np.stack([lab.continuous_vector() for lab in labels]))
    rows = []
    for rec, lab in zip(kept, labels):
        r = rec.result
        extra = {f"gate_{k}": v for k, v in r["quality"].items()}
        extra.update({f"realism_{k}": v for k, v in r["realism"].items()})
        extra.update({"gate_attempts": r["attempts"], "train_steps": r["steps"], "implementation": r["implementation"]})
        rows.append(gms_row(r["gm_id"], r["family"], "zoo", lab, ranges, r["spec"], extra))
    rows.append(gms_row(REAL_GM_ID, "real", "bundled" if not cfg.real_dir else "folder", None, ranges))
    gms = pd.DataFrame(rows)
    validate_gms_table(gms)
    folder = partial.dir
    base = len(records) * _shard_stride(cfg)
    real_shards = []
    for c in range(-(-len(real_crops) // cfg.max_rows_per_shard)):
        chunk = real_crops[c * cfg.max_rows_per_shard : (c + 1) * cfg.max_rows_per_shard]
        real_shards.append(write_shard(folder, base + c, image_rows(
            REAL_GM_ID, [encode_png(im) for im in chunk], [(cfg.image_size,) * 2] * len(chunk), False,
            start=c * cfg.max_rows_per_shard)))
    gms.to_parquet(folder / GMS_FILE, index=False)
    shards = sorted([s for rec in kept for s in rec.shards] + real_shards, key=lambda s: s["file"])
    improvements = np.array([rec.result["quality"].get("improvement", np.nan) for rec in kept])
    per_gm = pd.DataFrame([{"gm_id": rec.gm_id, "family": rec.result["family"], **rec.result["realism"]}
                           for rec in kept])
    timings = {rec.gm_id: rec.timing for rec in records if rec.timing}
    if run["task_wall_seconds"] > 0 and run["gms_built_here"]:
        run["idle_share"] = round(max(0.0, 1 - run["task_cpu_seconds"] / (run["task_wall_seconds"] * min(
            run["cores"], run["gms_built_here"]))), 3)
    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "kind": "zoo",
        "build_key": cfg.key(),
        "lineage_key": cfg.lineage_key(),
        "build": asdict(cfg),
        "image_size": cfg.image_size,
        "ranges": ranges.to_dict(),
        "real_sources": pool.sources,
        "counts": {
            "gms": len(kept),
            "images": int(sum(s["rows"] for s in shards)),
            "shards": len(shards),
            "real_images": int(len(real_crops)),
            "gms_requested": len(records),
            "gms_rejected": len(failed),
            "gate_retries": int(sum(rec.result.get("attempts", 1) - 1 for rec in records if rec.status != "failed")),
        },
        "rejected": failed,
        "quality": {
            "improvement_median": float(np.nanmedian(improvements)) if len(improvements) else None,
            "improvement_worst": float(np.nanmin(improvements)) if len(improvements) else None,
        },
        "realism": realism_summary(per_gm, calibration(real_crops, cfg.images_per_gm, cfg.seed)),
        "build_seconds": round(time.time() - t0, 1),  # this run's (a resumed build: the last run's)
        "last_run": run,
        "gm_timings": timings,  # machine-dependent: CPU seconds by phase, node; never in gms.parquet
        "device": "cuda" if cfg.gpus_per_gm > 0 else "cpu",  # where the GMs trained
        "shards": shards,
        "gms_sha256": sha256_file(folder / GMS_FILE),
    }
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return open_collection(partial.commit())


def ensure_collection(cfg: BuildConfig, path: str | Path | None = None, progress: bool = True) -> Collection:
    """Reuse the collection at ``path`` when its manifest matches ``cfg``; otherwise build it
    (resuming a partial build there, and reusing the GMs of a collection of the same lineage)."""
    path = Path(path) if path else cfg.default_path()
    return build_collection(cfg, path, overwrite=True, progress=progress)


def summarize(col: Collection) -> dict[str, Any]:
    """What a person checks after a build: families, loss types and classes present."""
    fake = col.fake_gms
    out: dict[str, Any] = {
        "gms": len(fake),
        "images": col.manifest["counts"]["images"],
        "families": fake["family"].value_counts().to_dict(),
        "loss_types": {t: int(fake[schema.loss_column(t)].sum()) for t in schema.LOSS_TYPES},
        "discrete": {
            k: {schema.DISCRETE[k][c]: int((fake[k] == c).sum()) for c in range(len(schema.DISCRETE[k]))}
            for k in schema.DISCRETE_NAMES
        },
    }
    return out


__all__ = ["BUILD_PRESETS", "BuildConfig", "build_collection", "build_config", "ensure_collection", "summarize"]
