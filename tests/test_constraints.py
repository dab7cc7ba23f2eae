"""Constraint values on crafted inputs with known answers, weights (de)serialization, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from gmparse.models.constraints import (
    ConstraintWeights,
    constraint_loss,
    constraint_terms,
    low_window_mask,
    magnitude_loss,
    repetitive_loss,
    spectrum,
    spectrum_loss,
    symmetry_loss,
    to_gray,
    window_radius,
)


def _rgb(gray: torch.Tensor) -> torch.Tensor:
    """[B,H,W] -> [B,3,H,W] with equal channels (luma coefficients sum to 1)."""
    return gray[:, None].repeat(1, 3, 1, 1)


def test_gray_uses_luma_coefficients() -> None:
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0], x[:, 1], x[:, 2] = 1.0, 2.0, 3.0
    assert torch.allclose(to_gray(x), torch.full((1, 2, 2), 0.299 + 2 * 0.587 + 3 * 0.114))


def test_window_scales_with_size() -> None:
    assert window_radius(128) == 25
    assert window_radius(64) == 12  # round(12.5) -> banker's 12
    assert window_radius(256) == 50
    assert window_radius(32) == 6
    assert low_window_mask(128).sum() == 51 * 51
    assert low_window_mask(8)[4, 4]  # centre of the fftshifted spectrum is size//2


def test_magnitude_of_known_array() -> None:
    g = torch.tensor([[[1.0, -2.0], [3.0, 0.0]]])
    assert magnitude_loss(g).item() == pytest.approx((1 + 4 + 9 + 0) / 4)
    assert constraint_terms(_rgb(g))["magnitude"].item() == pytest.approx(3.5, rel=1e-5)


def test_constant_image_has_only_dc_energy() -> None:
    n, c = 64, 0.5
    s = spectrum(torch.full((1, n, n), c))
    assert s[0, n // 2, n // 2].item() == pytest.approx(c * n * n)
    assert repetitive_loss(s).item() == pytest.approx(0.0, abs=1e-3)  # nothing outside the window
    k = 2 * window_radius(n) + 1
    assert spectrum_loss(s).item() == pytest.approx((c * n * n) ** 2 / k**2, rel=1e-5)


def test_periodic_pattern_raises_high_frequency_peak() -> None:
    n, amp, freq = 64, 0.3, 20  # 20 cycles: outside the n=12 window
    gen = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(1, n, n, generator=gen)
    x = torch.arange(n, dtype=torch.float32)
    wave = amp * torch.cos(2 * math.pi * freq * x / n)[None, None, :].expand(1, n, n)
    base = repetitive_loss(spectrum(noise)).item()
    with_wave = repetitive_loss(spectrum(noise + wave)).item()
    assert with_wave < base - 100  # a stronger peak = a lower (more negative) loss
    # a pure cosine has its peak at amp * n^2 / 2
    assert repetitive_loss(spectrum(wave.contiguous())).item() == pytest.approx(-amp * n * n / 2, rel=1e-4)


def test_symmetric_spectrum_gives_zero_symmetry_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 32, 32, generator=gen)
    sym = a + a.transpose(-2, -1)  # F = F^T  =>  S = S^T
    assert symmetry_loss(spectrum(sym)).item() == pytest.approx(0.0, abs=1e-6)
    assert symmetry_loss(spectrum(a)).item() > 1.0  # a generic residual is not symmetric


def test_non_square_is_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        constraint_terms(torch.zeros(1, 3, 32, 16))


def test_weights_presets_and_roundtrip() -> None:
    w = ConstraintWeights()
    assert w.to_dict() == {"magnitude": 0.1, "spectrum": 0.05, "repetitive": 0.001, "symmetry": 1.0}
    assert ConstraintWeights.parsing() == w
    d = ConstraintWeights.detection()
    assert (d.magnitude, d.spectrum, d.repetitive, d.symmetry) == (0.01, 0.05, 0.001, 0.1)
    assert ConstraintWeights.from_dict(d.to_dict()) == d
    assert ConstraintWeights.from_dict({"symmetry": 2}).symmetry == 2.0
    with pytest.raises(ValueError, match="unknown"):
        ConstraintWeights.from_dict({"smoothness": 1.0})


def test_weighted_total_and_gradients() -> None:
    fp = torch.randn(2, 3, 32, 32, requires_grad=True)
    w = ConstraintWeights(magnitude=1.0, spectrum=0.0, repetitive=0.0, symmetry=0.0)
    total, terms = constraint_loss(fp, w)
    assert total.item() == pytest.approx(terms["magnitude"].item())
    total, terms = constraint_loss(fp, ConstraintWeights())
    expected = sum(ConstraintWeights().to_dict()[k] * v.item() for k, v in terms.items())
    assert total.item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    assert fp.grad is not None and torch.isfinite(fp.grad).all() and fp.grad.abs().sum() > 0
