"""The realism measures: calibrated ends, monotone in degradation, exact pyramid, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from gmparse.data_pipeline import realism
from gmparse.data_pipeline.real_images import load_bundled_photos, random_crops
from gmparse.data_pipeline.realism import RealismReference, calibration, laplacian_pyramid
from gmparse.data_pipeline.zoo import ZOO_PRESETS, QualityReference, gate_figures, gate_passes

S = 32


@pytest.fixture(scope="module")
def photos():
    return load_bundled_photos()


@pytest.fixture(scope="module")
def ref(photos) -> RealismReference:
    return RealismReference(random_crops(photos, 256, S, seed=1), seed=0)


@pytest.fixture(scope="module")
def held_out(photos) -> np.ndarray:
    return random_crops(photos, 128, S, seed=2)


def blurred(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images])


def test_pyramid_reconstructs_the_image(held_out: np.ndarray) -> None:
    levels = laplacian_pyramid(held_out[:8])
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    x = levels[-1]
    for band in reversed(levels[:-1]):
        up = torch.zeros_like(band)
        up[..., ::2, ::2] = x
        x = band + 4.0 * realism._blur(up)
    original = torch.from_numpy(held_out[:8].transpose(0, 3, 1, 2).copy()).float() / 127.5 - 1
    assert torch.allclose(x, original, atol=1e-5)


def test_swd_orders_real_blurred_and_noise(ref: RealismReference, held_out: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(0, 256, held_out.shape, dtype=np.uint8)
    real, soft, softer = ref.swd(held_out), ref.swd(blurred(held_out, 1.0)), ref.swd(blurred(held_out, 2.0))
    assert real < soft < softer < ref.swd(noise), (real, soft, softer)
    assert ref.swd(noise) > 5 * real
    shifted = np.clip(held_out.astype(int) + 40, 0, 255).astype(np.uint8)  # a colour error counts
    assert ref.swd(shifted) > 2 * real


def test_c2st_is_chance_for_real_and_certain_for_noise(ref: RealismReference, held_out: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(0, 256, held_out.shape, dtype=np.uint8)
    assert ref.c2st(held_out) < 0.7
    assert ref.c2st(noise) > 0.95
    assert ref.c2st(np.full_like(held_out, 128)) > 0.95


def test_measures_are_deterministic(photos, held_out: np.ndarray) -> None:
    real = random_crops(photos, 64, S, seed=1)
    a = RealismReference(real, seed=3).measure(held_out)
    b = RealismReference(real, seed=3).measure(held_out)
    assert a == b


def test_calibration_is_the_real_floor(photos, ref: RealismReference) -> None:
    real = random_crops(photos, 256, S, seed=5)
    cal = calibration(real, n_images=64)
    assert set(cal) == {"real_swd", "real_c2st"}
    noise = np.random.default_rng(0).integers(0, 256, (64, S, S, 3), dtype=np.uint8)
    assert cal["real_swd"] < ref.swd(blurred(real[:64], 1.5)) < ref.swd(noise)
    assert cal["real_c2st"] < 0.75


def test_bad_inputs_raise(ref: RealismReference, held_out: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        ref.swd(held_out.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        ref.swd(held_out[:, :16, :16])
    with pytest.raises(ValueError, match="at least"):
        ref.swd(held_out[:0])
    assert np.isnan(ref.c2st(held_out[:2])) and np.isfinite(ref.swd(held_out[:2]))  # too few to cross-validate
    with pytest.raises(ValueError, match="real images"):
        RealismReference(held_out[:4])
    with pytest.raises(ValueError, match="px"):
        RealismReference(held_out[:, :8, :8].copy())


def test_gate_with_a_realism_threshold(ref: RealismReference, held_out: np.ndarray) -> None:
    quality = QualityReference(held_out[:64])
    noise = np.random.default_rng(1).integers(0, 256, held_out[64:].shape, dtype=np.uint8)
    figs = gate_figures(held_out[64:], quality, untrained=noise, realism=ref)
    assert figs["swd"] == pytest.approx(ref.swd(held_out[64:]))
    cfg = ZOO_PRESETS["default"]
    assert gate_passes(figs, cfg.with_(max_swd=figs["swd"] + 1))
    assert not gate_passes(figs, cfg.with_(max_swd=figs["swd"] - 1))
    assert "swd" not in gate_figures(held_out[64:], quality, untrained=noise)  # off unless asked


def test_summarize_names_the_worst_gm() -> None:
    import pandas as pd

    t = pd.DataFrame({"gm_id": ["a", "b", "c"], "family": ["gan", "gan", "vae"], "swd": [1.0, 3.0, 2.0]})
    s = realism.summarize(t)
    assert s["median"] == 2.0 and s["worst"] == 3.0 and s["worst_gm"] == "b"
    assert s["per_family"] == {"gan": 2.0, "vae": 2.0}
