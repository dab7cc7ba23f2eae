"""The classical baseline learns a planted spectral artefact on unseen GMs, and checks its input."""

from __future__ import annotations

import numpy as np
import pytest

from gmparse.data_pipeline.schema import CONTINUOUS, LOSS_TYPES, NUM_CLASSES, TargetArrays, groups_from_losses
from gmparse.models.spectral_baseline import SpectralBaseline, spectral_features


def _gm_images(upsampled: bool, n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise images; 'up-sampled' ones are 16x16 noise repeated 2x (a nearest-neighbour grid)."""
    if upsampled:
        small = rng.integers(0, 256, (n, 16, 16, 3))
        return np.repeat(np.repeat(small, 2, axis=1), 2, axis=2).astype(np.uint8)
    return rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _collection(n_gms: int, per_gm: int, seed: int):
    rng = np.random.default_rng(seed)
    ups = np.arange(n_gms) % 2
    images = np.concatenate([_gm_images(bool(u), per_gm, rng) for u in ups])
    disc = np.zeros((n_gms, len(NUM_CLASSES)), np.int64)
    disc[:, 3] = ups  # 'upsampling' column
    disc[:, 0] = rng.integers(0, 4, n_gms)  # unrelated to the images
    loss = np.zeros((n_gms, len(LOSS_TYPES)), np.int64)
    loss[:, 0] = ups
    cont = np.tile(0.5, (n_gms, len(CONTINUOUS)))
    cont[:, 0] = 0.2 + 0.6 * ups
    t = TargetArrays(cont, disc, loss, groups_from_losses(loss))
    rows = np.repeat(np.arange(n_gms), per_gm)
    return images, TargetArrays(*(np.asarray(a)[rows] for a in (t.continuous, t.discrete, t.loss, t.group))), ups, rows


def test_baseline_reads_upsampling_of_unseen_gms() -> None:
    tr_img, tr_t, _, _ = _collection(8, 20, 0)
    te_img, _, te_ups, te_rows = _collection(6, 20, 1)
    pred = SpectralBaseline(n_components=16).fit(tr_img, tr_t).predict(te_img)
    _, gm = pred.aggregate(te_rows)
    assert (gm.discrete[:, 3] == te_ups).all()
    assert np.abs(gm.continuous[:, 0] - (0.2 + 0.6 * te_ups)).max() < 0.15
    assert ((gm.loss_prob[:, 0] > 0.5) == te_ups).all()


def test_features_and_bad_input() -> None:
    f = spectral_features(np.zeros((3, 32, 32, 3), np.uint8))
    assert f.shape[0] == 3 and np.isfinite(f).all()
    with pytest.raises(ValueError, match="expected uint8"):
        spectral_features(np.zeros((3, 32, 32), np.uint8))
    img, t, _, _ = _collection(4, 5, 2)
    base = SpectralBaseline(n_components=4).fit(img, t)
    with pytest.raises(ValueError, match="fitted on"):
        base.predict(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(RuntimeError, match="before fit"):
        SpectralBaseline().predict(img)
