"""A collection's images decoded into memory (uint8), with each image's GM label rows.

For the work that wants plain arrays rather than a Ray Dataset: the classical baseline of
every fold (a few thousand images) and the in-process diagnosis of FEN+PN training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from gmparse.data_pipeline import schema
from gmparse.data_pipeline.collection import Collection
from gmparse.data_pipeline.preprocess import decode_image, normalize, resize
from gmparse.data_pipeline.schema import TARGET_FIELDS


@dataclass
class ImageArrays:
    images: np.ndarray  # uint8 [N, S, S, 3]
    gm_ids: np.ndarray  # [N] str
    image_ids: np.ndarray  # [N] str
    targets: schema.TargetArrays  # one row per image (its GM's labels)

    def take(self, idx: np.ndarray) -> ImageArrays:
        return ImageArrays(self.images[idx], self.gm_ids[idx], self.image_ids[idx], self.targets.take(idx))

    def of_gms(self, gms: Iterable[str]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.gm_ids, list(gms)))

    def batches(self, idx: np.ndarray, batch_size: int, drop_last: bool = False) -> Iterator[dict]:
        """Normalized torch batches (``models.engine`` format) of the rows ``idx``, in order."""
        import torch

        for i in range(0, len(idx), batch_size):
            j = idx[i : i + batch_size]
            if drop_last and len(j) < batch_size:
                return
            b = {"image": torch.from_numpy(normalize(self.images[j]))}
            for k in TARGET_FIELDS:
                b[k] = torch.as_tensor(getattr(self.targets, k)[j])
            yield b


def sample_per_gm(gm_ids: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of up to ``k`` random rows of each GM in ``gm_ids``, GM after GM (all rows, in
    order, when ``k`` <= 0)."""
    if k <= 0:
        return np.arange(len(gm_ids))
    return np.concatenate([rng.permutation(np.flatnonzero(gm_ids == g))[:k] for g in np.unique(gm_ids)])


def load_images(col: Collection, gm_ids: Iterable[str] | None = None, size: int | None = None,
                per_gm: int = 0, seed: int = 0) -> ImageArrays:
    """Decode the images of ``gm_ids`` (all GMs when None), resized to ``size``; with
    ``per_gm`` > 0 keep that many random images of each GM (seeded)."""
    size = size or col.image_size
    t = col.read_images(gm_ids, columns=["image_id", "gm_id", "image"]).to_pydict()
    gms = np.asarray(t["gm_id"], dtype=str)
    keep = np.sort(sample_per_gm(gms, per_gm, np.random.default_rng(seed)))
    images = np.stack([resize(decode_image(t["image"][i]), size) for i in keep]) if len(keep) else \
        np.zeros((0, size, size, 3), np.uint8)
    ids, row = np.unique(gms[keep], return_inverse=True)
    targets = col.targets(ids).take(row)
    return ImageArrays(images, gms[keep], np.asarray(t["image_id"], dtype=str)[keep], targets)
