"""Ray Data readers: the collection's Parquet shards as decoded uint8 images with their labels.

Decoding and any resize happen in ``map_batches`` on Ray's CPU workers, not in the training
loop; the images stay uint8 [S, S, 3] (a quarter of float32's bytes through the object store
and onto the device) and the training device normalizes them (``models.inputs.model_input``).
Each Train worker gets a disjoint shard through ``ray.train.get_dataset_shard``; ``epoch_plan``
says how it draws an epoch from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.collection import REAL_GM_ID, Collection
from gmparse.data_pipeline.folds import image_split
from gmparse.data_pipeline.preprocess import decode_image, resize

Split = Literal["all", "train", "val"]


class DecodeBatch:
    """map_batches callable: PNG bytes -> uint8 [B, S, S, 3] images + label columns."""

    def __init__(self, labels: dict[str, dict[str, Any]], size: int, gm_index: dict[str, int],
                 split: Split = "all", val_fraction: float = 0.1, seed: int = 0):
        self.labels = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in labels.items()}
        self.size = size
        self.gm_index = gm_index
        self.split = split
        self.val_fraction = val_fraction
        self.seed = seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = batch["image_id"]
        keep = np.ones(len(ids), dtype=bool)
        if self.split != "all":
            keep = image_split(ids, self.val_fraction, self.seed) == self.split
        images, kept = [], []
        for i in np.flatnonzero(keep):
            images.append(resize(decode_image(batch["image"][i]), self.size))
            kept.append(i)
        kept_idx = np.asarray(kept, dtype=np.int64)
        gm_ids = batch["gm_id"][kept_idx] if len(kept_idx) else np.array([], dtype=object)
        out: dict[str, np.ndarray] = {
            "image": np.stack(images) if images else np.zeros((0, self.size, self.size, 3), np.uint8),
            "image_id": np.asarray(ids[kept_idx], dtype=object),
            "gm_id": np.asarray(gm_ids, dtype=object),
            "is_fake": np.asarray(batch["is_fake"][kept_idx], dtype=np.int64),
            "gm_index": np.array([self.gm_index.get(g, -1) for g in gm_ids], dtype=np.int64),
        }
        for name in ("continuous", "discrete", "loss", "group"):
            rows = [self.labels[g][name] for g in gm_ids]
            width = self.labels[REAL_GM_ID][name].shape[0] if REAL_GM_ID in self.labels else len(rows[0]) if rows else 0
            out[name] = np.stack(rows) if rows else np.zeros((0, width))
        out["continuous"] = out["continuous"].astype(np.float32)
        for name in ("discrete", "loss", "group"):
            out[name] = out[name].astype(np.int64)
        return out


def label_lookup(col: Collection) -> dict[str, dict[str, Any]]:
    """gm_id -> label vectors (normalized continuous, classes, loss and group bits)."""
    t = schema.targets_from_rows(col.gms.to_dict("records"))
    return {
        g: {"continuous": t.continuous[i], "discrete": t.discrete[i], "loss": t.loss[i], "group": t.group[i]}
        for i, g in enumerate(col.gms["gm_id"])
    }


def image_dataset(col: Collection, gm_ids: Sequence[str] | None = None, size: int | None = None,
                  split: Split = "all", val_fraction: float = 0.1, seed: int = 0,
                  gm_index: dict[str, int] | None = None, batch_size: int = 256):
    """A Ray Dataset of decoded images of ``gm_ids`` (all GMs when None), in a fixed block order
    (so a materialized copy, and every epoch drawn from it, is the same from run to run).

    Columns: image (uint8 [S,S,3]), image_id, gm_id, is_fake, gm_index (position of the
    GM in ``gm_index``, -1 otherwise; by default the GM's position in the collection's GM table,
    so a training loop can average per GM without string columns), continuous [9], discrete [6],
    loss [10], group [3].
    """
    from ray.data.expressions import col as column

    size = size or col.image_size
    ds = read_shards(col).select_columns(["image_id", "gm_id", "is_fake", "image"])
    if gm_ids is not None:  # an expression filter (Ray pushes it into the Parquet scan where it can)
        ds = ds.filter(expr=column("gm_id").is_in(list(gm_ids)))
    # a plain function runs as stateless tasks (cheap on small machines); the label table
    # travels with each task, which is small (one row per GM)
    ds = ds.map_batches(
        decode_batch, batch_size=batch_size, batch_format="numpy",
        fn_kwargs={"decoder": DecodeBatch(label_lookup(col), size, gm_index or default_gm_index(col),
                                          split, val_fraction, seed)},
    )
    ds.context.execution_options.preserve_order = True  # this dataset's own context copy
    return ds


def default_gm_index(col: Collection) -> dict[str, int]:
    return {str(g): i for i, g in enumerate(col.gms["gm_id"])}


def read_shards(col: Collection):
    """The collection's Parquet shards as a Ray Dataset, one read task per shard or so.

    Uses Ray Data's V1 Parquet reader: Ray 2.60's default V2 reader packs a collection's
    small shards (here 63 files, 39 MB) into one read task behind a single ListFiles task
    (about 10 s on the 2-core dev box), so decoding ran in one task and never in parallel;
    V1 reads them as ~40 tasks and ran 2.4-2.6x faster end to end on the default collection
    (``benchmarks/bench_pipeline.py`` compares them).
    The flag is read when the plan is built, so it is set only around this call.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    previous = ctx.use_datasource_v2
    ctx.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(col.shard_uris())
    finally:
        ctx.use_datasource_v2 = previous


def decode_batch(batch: dict[str, np.ndarray], decoder: DecodeBatch) -> dict[str, np.ndarray]:
    return decoder(batch)


def shuffle_each_epoch(ds, seed: int, fraction: float = 1.0):
    """``ds`` with its rows globally shuffled, in a new order each time it is iterated (each
    training epoch); seeded, though Ray Data's block order still varies from run to run.
    ``fraction`` < 1 keeps a fresh random share of the rows each epoch (shorter epochs: more
    evaluations, and so finer checkpoint choice, for the same number of steps).

    Needed because a collection's shards each hold one GM (the builder and ingest write them
    so), and Ray Data reads a shard as a block: iterating the plain dataset, even through a
    local shuffle buffer of a few batches, gave batches of one or two GMs. With the FEN's
    BatchNorm and a cross-entropy over GMs that trains on one GM at a time; measured on the
    default collection (in memory, FEN attributor, 2 epochs), held-out accuracy on fake
    images was 0.000 in GM order against 0.188 shuffled (chance 0.016).
    """
    from ray.data import RandomSeedConfig

    if fraction < 1.0:
        ds = ds.random_sample(fraction, seed=RandomSeedConfig(seed=seed + 1, reseed_after_execution=True))
    return ds.random_shuffle(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))


@dataclass(frozen=True)
class EpochPlan:
    """How a training worker draws each epoch from its shard (``workflows.lib.train_loop``'s ``iter_torch_batches``)."""

    shuffle_buffer: int | None = None  # rows in the worker's local shuffle buffer (None: four batches)
    steps: int | None = None  # batches per epoch and worker (None: the whole shard)


def epoch_plan(train_ds, *, cached: bool, seed: int, fraction: float, batch_size: int, num_workers: int):
    """The training set as the loop reads it, and how -> (dataset, EpochPlan).

    ``cached`` (``train_ds`` materialized, decoded once): every worker shuffles its whole shard in
    a local buffer each epoch, seeded by the epoch, and trains on the first ``fraction`` of that
    order - a fresh uniform sample every epoch, at memory speed, the same in every run. On the
    default collection, one core: 30-42k images/s against 5-6k for a global ``random_shuffle``
    of the cached set per epoch (whose order also followed Ray Data's block order, so reruns
    differed); ``benchmarks/bench_pipeline.py`` times this path. Each worker holds its shard in
    the buffer: 12 KB an image at 64x64.
    Otherwise (streamed; collections that do not fit): ``shuffle_each_epoch``.
    """
    if not cached:
        return shuffle_each_epoch(train_ds, seed, fraction), EpochPlan()
    per_worker = train_ds.count() // max(1, num_workers)
    steps = max(1, int(fraction * per_worker) // batch_size) if fraction < 1.0 else None
    return train_ds, EpochPlan(shuffle_buffer=max(per_worker, batch_size), steps=steps)


def epoch_batches(it, plan: EpochPlan, *, batch_size: int, epoch: int, seed: int, device: Any = "auto",
                  drop_last: bool = True, prefetch_batches: int = 1):
    """One epoch's torch batches from ``it`` (a Train worker's shard, or any Dataset) as ``plan``
    says: a local shuffle seeded by (seed, epoch), cut after ``plan.steps`` batches; moved to
    ``device`` (uint8) with ``prefetch_batches`` fetched ahead."""
    batches = it.iter_torch_batches(batch_size=batch_size, device=device, drop_last=drop_last,
                                    prefetch_batches=prefetch_batches,
                                    local_shuffle_buffer_size=plan.shuffle_buffer or 4 * batch_size,
                                    local_shuffle_seed=seed * 1000 + epoch)
    return itertools.islice(batches, plan.steps) if plan.steps else batches
