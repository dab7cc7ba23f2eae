"""The four fingerprint constraints (docs/method.md) and their weights, the object Ray Tune sweeps.

All terms work on F_gray = 0.299 R + 0.587 G + 0.114 B and S = |fftshift(fft2(F_gray))|
(unnormalized FFT, as the reference code). Each term is returned separately so a sweep
can log them one by one.
"""

from __future__ import annotations

import torch

from .config import ConstraintWeights  # noqa: F401  (defined beside the other configs: no torch to import it)

GRAY_COEFFS = (0.299, 0.587, 0.114)
#: half-width of the low-frequency window at the reference size (docs/method.md: n=25 at 128x128)
WINDOW_N = 25
WINDOW_REF_SIZE = 128


def to_gray(fingerprint: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, H, W] luma."""
    r, g, b = fingerprint.unbind(dim=1)
    return GRAY_COEFFS[0] * r + GRAY_COEFFS[1] * g + GRAY_COEFFS[2] * b


def spectrum(gray: torch.Tensor) -> torch.Tensor:
    """[B, H, W] -> centred FFT magnitude [B, H, W]."""
    return torch.fft.fftshift(torch.fft.fft2(gray.float()), dim=(-2, -1)).abs()  # fp32 under autocast too


def window_radius(size: int) -> int:
    """n of the (2n+1)^2 low-frequency window, scaled from n=25 at 128.

    At least 1, but small enough that some spectrum lies outside the window (tiny inputs).
    """
    n = max(1, round(WINDOW_N * size / WINDOW_REF_SIZE))
    return max(0, min(n, size // 2 - 1))


def low_window_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean [size, size] mask of the central window (centre at size//2 after fftshift)."""
    n, c = window_radius(size), size // 2
    idx = torch.arange(size, device=device)
    inside = (idx - c).abs() <= n
    return inside[:, None] & inside[None, :]


def _check_square(x: torch.Tensor) -> int:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"constraints need square fingerprints, got {tuple(x.shape[-2:])}")
    return int(x.shape[-1])


def magnitude_loss(gray: torch.Tensor) -> torch.Tensor:
    """mean(F_gray^2): keeps the fingerprint a low-energy residual."""
    return gray.pow(2).mean()


def spectrum_loss(spec: torch.Tensor) -> torch.Tensor:
    """mean(S_low^2) over the central window: suppress low-frequency energy."""
    mask = low_window_mask(_check_square(spec), spec.device)
    return spec[..., mask].pow(2).mean()


def repetitive_loss(spec: torch.Tensor) -> torch.Tensor:
    """-max(S outside the window), averaged over the batch: reward a periodic peak."""
    mask = low_window_mask(_check_square(spec), spec.device)
    return -spec[..., ~mask].amax(dim=-1).mean()


def symmetry_loss(spec: torch.Tensor) -> torch.Tensor:
    """mean((S - S^T)^2): spectrum close to its transpose."""
    _check_square(spec)
    return (spec - spec.transpose(-2, -1)).pow(2).mean()


def constraint_terms(fingerprint: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted constraint values of a fingerprint batch [B, 3, H, W], keyed like the weights."""
    gray = to_gray(fingerprint)
    spec = spectrum(gray)
    return {
        "magnitude": magnitude_loss(gray),
        "spectrum": spectrum_loss(spec),
        "repetitive": repetitive_loss(spec),
        "symmetry": symmetry_loss(spec),
    }


def constraint_loss(
    fingerprint: torch.Tensor, weights: ConstraintWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the four terms and the unweighted terms themselves."""
    terms = constraint_terms(fingerprint)
    w = weights.to_dict()
    total = sum((w[k] * v for k, v in terms.items()), start=fingerprint.new_zeros(()))
    return total, terms
