"""Build a GM collection from the zoo: one Ray task per GM, written atomically.

Each task trains one GM briefly on real crops, passes it through the quality gate and
returns its PNG-encoded samples, measured labels and gate figures; the driver writes one
shard per GM as results arrive (content depends only on the seed, not on finish order),
then the real-image shards, gms.parquet and the manifest, and renames the folder into place.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from data_pipeline import schema
from data_pipeline.collection import (
    REAL_GM_ID,
    Collection,
    CollectionError,
    CollectionWriter,
    gms_row,
    image_rows,
    open_collection,
)
from data_pipeline.paths import collections_root
from data_pipeline.preprocess import encode_png
from data_pipeline.real_images import REAL_SOURCES, PhotoPool, load_photo_dir, random_crops
from data_pipeline.realism import RealismReference, calibration, realism_summary
from data_pipeline.realism import caption as realism_caption

if TYPE_CHECKING:
    from data_pipeline import zoo


@dataclass(frozen=True)
class BuildConfig:
    """What a collection is built from; its hash decides whether a built one is reused."""

    preset: str = "smoke"
    n_gms: int = 16
    images_per_gm: int = 64
    image_size: int = 32
    real_images: int = 256
    train_crops: int = 1024
    zoo_preset: str = "smoke"
    seed: int = 0
    real_dir: str | None = None  # the user's own photos (replaces real_source)
    real_source: str = "photos"  # bundled real images: photos (17 photos, multi-scale crops) | faces (LFW, one domain)
    max_rows_per_shard: int = 4096
    implementations: str = "backbone"  # comma-separated: how each family may be written (zoo.generators.IMPLEMENTATIONS)
    #: the hidden layers' activation: "tied" to the last-block label where it can be (a ReLU or
    #: LeakyReLU last block makes the network's), as real GM code does, or "independent" of it
    #: (drawn on its own; the builds before 2026-11-24, e.g. default-s0-6c855534)
    hidden_act: str = "tied"
    #: share of a GPU each GM's task asks Ray for (0: one CPU core per GM). How a build runs, not
    #: what it builds: not in key()
    gpus_per_gm: float = 0.0

    def __post_init__(self) -> None:
        # the zoo owns the modes; imported late, as elsewhere in this module
        from data_pipeline.zoo.specs import HIDDEN_ACT_MODES

        if self.real_source not in REAL_SOURCES:
            raise ValueError(f"unknown real_source {self.real_source!r}; known: {sorted(REAL_SOURCES)}")
        if self.hidden_act not in HIDDEN_ACT_MODES:
            raise ValueError(f"hidden_act must be one of {HIDDEN_ACT_MODES}, got {self.hidden_act!r}")
        if not 0.0 <= self.gpus_per_gm <= 1.0:
            raise ValueError(f"gpus_per_gm must be in [0, 1] (a share of one GPU), got {self.gpus_per_gm}")

    def implementation_tuple(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.implementations.split(",") if w.strip())

    def key(self) -> str:
        """Hash of these fields and of the zoo preset's settings (not just its name), so a
        collection built before a preset changed is rebuilt, not reused. ``implementations``
        and ``real_source`` enter only when not the default, and ``hidden_act`` only when not
        "independent" (its first default), so collections built before they existed keep their keys;
        ``gpus_per_gm`` never does (a GPU build of a key is the same GMs, not bitwise the same images)."""
        from data_pipeline.zoo.config import ZOO_PRESETS

        zoo = ZOO_PRESETS.get(self.zoo_preset)
        d = {**asdict(self), "zoo": asdict(zoo) if zoo is not None else None}
        d.pop("gpus_per_gm")
        if self.implementation_tuple() == ("backbone",):
            d.pop("implementations")
        if self.real_source == "photos":
            d.pop("real_source")
        if self.hidden_act == "independent":
            d.pop("hidden_act")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def default_path(self) -> Path:
        return collections_root() / f"{self.preset}-s{self.seed}-{self.key()[:8]}"


BUILD_PRESETS: dict[str, BuildConfig] = {
    "smoke": BuildConfig(),
    "default": BuildConfig(
        preset="default", n_gms=64, images_per_gm=256, image_size=32, real_images=4096,
        train_crops=4096, zoo_preset="default",
    ),
    "large": BuildConfig(
        preset="large", n_gms=400, images_per_gm=1000, image_size=64, real_images=20000,
        train_crops=20000, zoo_preset="large", gpus_per_gm=0.25,  # four GMs per GPU (cluster/aws.yaml: 4 CPUs, 1 GPU)
    ),
}


def build_config(preset: str, **overrides: Any) -> BuildConfig:
    if preset not in BUILD_PRESETS:
        raise ValueError(f"unknown build preset {preset!r}; choose from {sorted(BUILD_PRESETS)}")
    return replace(BUILD_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def _check_gpus(cfg: BuildConfig) -> None:
    """A GPU build on a Ray without GPUs: an error on a local Ray (its tasks would wait forever),
    a warning on a cluster (they wait for the autoscaler's GPU workers)."""
    import os

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

    from data_pipeline import zoo

    res = zoo.make_gm(spec, real_crops, n_images, train_cfg, device="cuda" if use_gpu else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per task, as in make_gm
    try:
        realism = realism_ref.measure(res.images)
        realism["swd_untrained"] = realism_ref.swd(res.untrained)
    finally:
        torch.set_num_threads(threads)
    return {
        "gm_id": spec.gm_id,
        "family": spec.family,
        "spec": spec.to_json(),
        "labels": {
            "continuous": res.labels.continuous,
            "discrete": res.labels.discrete,
            "loss_types": sorted(res.labels.loss_types),
        },
        "pngs": [encode_png(im) for im in res.images],
        "quality": {k: float(v) for k, v in res.quality.items()},
        "passed": bool(res.passed),
        "attempts": int(res.attempts),
        "steps": int(res.steps),
        "train_seconds": float(res.train_seconds),
        "implementation": spec.arch.implementation,
        "realism": realism,
        "grid": zoo.sample_grid_png(res.images[:32], real_crops[:32], caption=realism_caption(realism)),
    }


def build_collection(cfg: BuildConfig, out: str | Path, overwrite: bool = False, progress: bool = True) -> Collection:
    """Build ``cfg``'s collection at ``out`` with one Ray task per GM (starts Ray if needed)."""
    import ray
    from tqdm.auto import tqdm

    from data_pipeline import zoo

    if not ray.is_initialized():
        ray.init()
    _check_gpus(cfg)
    t0 = time.time()
    pool = _photo_pool(cfg)
    train_crops = random_crops(pool, cfg.train_crops, cfg.image_size, seed=cfg.seed)
    real_crops = random_crops(pool, cfg.real_images, cfg.image_size, seed=cfg.seed + 1_000_003)
    specs = zoo.sample_specs(cfg.n_gms, cfg.seed, cfg.image_size, cfg.implementation_tuple(), cfg.hidden_act)
    crops_ref = ray.put(train_crops)
    realism_ref = ray.put(RealismReference(real_crops, seed=cfg.seed))
    task = ray.remote(num_cpus=1, num_gpus=cfg.gpus_per_gm, max_retries=3)(_make_gm_task)
    pending = {
        task.remote(s, crops_ref, cfg.images_per_gm, zoo.ZOO_PRESETS[cfg.zoo_preset], realism_ref,
                    cfg.gpus_per_gm > 0): i
        for i, s in enumerate(specs)
    }
    results: dict[int, dict[str, Any]] = {}
    failed: list[dict[str, str]] = []
    shard_stride = max(1, -(-cfg.images_per_gm // cfg.max_rows_per_shard))
    with CollectionWriter(out, overwrite=overwrite) as writer, tqdm(
        total=len(specs), desc="building GMs", unit="GM", disable=not progress
    ) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            idx = pending.pop(done[0])
            try:
                r = ray.get(done[0])
            except Exception as e:  # a GM whose code raised (after Ray's retries for crashes)
                failed.append({"gm_id": specs[idx].gm_id, "error": f"{type(e).__name__}: {e}"[:500]})
                bar.update(1)
                continue
            bar.update(1)
            bar.set_postfix(gm=r["gm_id"], gate="pass" if r["passed"] else "FAIL")
            if not r["passed"]:
                failed.append({"gm_id": r["gm_id"], "error": f"quality gate failed after {r['attempts']} attempts",
                               "quality": r["quality"]})
                results[idx] = r
                continue
            pngs = r.pop("pngs")
            for c in range(shard_stride):
                chunk = pngs[c * cfg.max_rows_per_shard : (c + 1) * cfg.max_rows_per_shard]
                if chunk:
                    writer.write_shard(
                        idx * shard_stride + c,
                        image_rows(r["gm_id"], chunk, [(cfg.image_size,) * 2] * len(chunk), True,
                                   start=c * cfg.max_rows_per_shard),
                    )
            writer.write_grid(r["gm_id"], r.pop("grid"))
            results[idx] = r

        kept = [results[i] for i in sorted(results) if results[i]["passed"]]
        if not kept:
            raise CollectionError(f"no GM passed the quality gate: {failed}")
        labels = [
            schema.GMLabels(r["labels"]["continuous"], r["labels"]["discrete"], frozenset(r["labels"]["loss_types"]))
            for r in kept
        ]
        ranges = schema.Ranges.fit(np.stack([lab.continuous_vector() for lab in labels]))
        rows = []
        for r, lab in zip(kept, labels):
            extra = {f"gate_{k}": v for k, v in r["quality"].items()}
            extra.update({f"realism_{k}": v for k, v in r["realism"].items()})
            extra.update({"gate_attempts": r["attempts"], "train_steps": r["steps"], "train_seconds": r["train_seconds"],
                          "implementation": r["implementation"]})
            rows.append(gms_row(r["gm_id"], r["family"], "zoo", lab, ranges, r["spec"], extra))
        rows.append(gms_row(REAL_GM_ID, "real", "bundled" if not cfg.real_dir else "folder", None, ranges))
        gms = pd.DataFrame(rows)

        base = len(specs) * shard_stride
        for c in range(-(-len(real_crops) // cfg.max_rows_per_shard)):
            chunk = real_crops[c * cfg.max_rows_per_shard : (c + 1) * cfg.max_rows_per_shard]
            writer.write_shard(
                base + c,
                image_rows(REAL_GM_ID, [encode_png(im) for im in chunk], [(cfg.image_size,) * 2] * len(chunk),
                           False, start=c * cfg.max_rows_per_shard),
            )

        improvements = np.array([r["quality"].get("improvement", np.nan) for r in kept])
        per_gm = pd.DataFrame([{"gm_id": r["gm_id"], "family": r["family"], **r["realism"]} for r in kept])
        manifest = {
            "kind": "zoo",
            "build_key": cfg.key(),
            "build": asdict(cfg),
            "image_size": cfg.image_size,
            "ranges": ranges.to_dict(),
            "real_sources": pool.sources,
            "counts": {
                "real_images": int(len(real_crops)),
                "gms_requested": len(specs),
                "gms_rejected": len(failed),
                "gate_retries": int(sum(r["attempts"] - 1 for r in results.values())),
            },
            "rejected": failed,
            "quality": {
                "improvement_median": float(np.nanmedian(improvements)) if len(improvements) else None,
                "improvement_worst": float(np.nanmin(improvements)) if len(improvements) else None,
            },
            "realism": realism_summary(per_gm, calibration(real_crops, cfg.images_per_gm, cfg.seed)),
            "build_seconds": round(time.time() - t0, 1),
            "device": "cuda" if cfg.gpus_per_gm > 0 else "cpu",  # where the GMs trained
        }
        path = writer.commit(gms, manifest)
    return open_collection(path)


def ensure_collection(cfg: BuildConfig, path: str | Path | None = None, progress: bool = True) -> Collection:
    """Reuse the collection at ``path`` when its manifest matches ``cfg``; build it otherwise."""
    path = Path(path) if path else cfg.default_path()
    try:
        col = open_collection(path)
        if col.manifest.get("build_key") == cfg.key():
            return col
        return build_collection(cfg, path, overwrite=True, progress=progress)
    except CollectionError:
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
