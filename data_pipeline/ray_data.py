"""Ray Data readers: the collection's Parquet shards as decoded, normalized tensors.

Decoding, resizing and normalization happen in ``map_batches`` on Ray's CPU workers, not
in the training loop, so a GPU trainer is fed ready batches; each Train worker then gets a
disjoint shard through ``ray.train.get_dataset_shard``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from data_pipeline import schema
from data_pipeline.collection import REAL_GM_ID, Collection
from data_pipeline.folds import image_split
from data_pipeline.preprocess import decode_image, normalize, resize

Split = Literal["all", "train", "val"]


class DecodeBatch:
    """map_batches callable: PNG bytes -> normalized float32 [B, 3, S, S] + label columns."""

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
            "image": normalize(np.stack(images)) if images else np.zeros((0, 3, self.size, self.size), np.float32),
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
    """A Ray Dataset of decoded, normalized images of ``gm_ids`` (all GMs when None).

    Columns: image (float32 [3,S,S]), image_id, gm_id, is_fake, gm_index (position of the
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
    return ds.map_batches(
        decode_batch, batch_size=batch_size, batch_format="numpy",
        fn_kwargs={"decoder": DecodeBatch(label_lookup(col), size, gm_index or default_gm_index(col),
                                          split, val_fraction, seed)},
    )


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
