"""The GM quality gate: fixed image statistics that tell a learned GM from a collapsed one.

Features (per image, fixed, no training): color moments (per-channel mean and std), a
histogram of gray-level gradient magnitudes, the radially averaged power spectrum (log,
relative to total power) and globally pooled responses of a fixed, seeded random conv net.
Features are standardized by the real crops' statistics. Figures:

* ``pixel_std``: mean per-image pixel std (0..255) - flat images fail;
* ``diversity_ratio``: mean pairwise feature distance among samples over that among
  real crops - a GM that emits one image fails;
* ``dist_real_trained`` / ``dist_real_untrained``: diagonal Frechet distance (mean of
  squared differences of per-feature means and stds) between samples and real crops, for
  the trained GM and for the same GM before training; ``improvement`` is their ratio;
* ``swd`` (when the gate has a realism threshold, ``max_swd``): the sliced Wasserstein
  distance of Laplacian-pyramid patches to the training crops (``data_pipeline.realism``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .config import ZooTrainConfig

if TYPE_CHECKING:
    from gmparse.data_pipeline.realism import RealismReference

GRADIENT_EDGES = np.array([0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, np.inf])
SPECTRUM_BINS = 8
RANDOM_NET_SEED = 20_240_607
IMPROVEMENT_CAP = 1e6
_EPS = 1e-12


def _random_net_weights() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(RANDOM_NET_SEED)
    w1 = torch.randn(16, 3, 5, 5, generator=g) / np.sqrt(3 * 25)
    w2 = torch.randn(32, 16, 3, 3, generator=g) / np.sqrt(16 * 9)
    return w1, w2


_W1, _W2 = _random_net_weights()


def _gray(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def image_features(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float64 [N, F] fixed statistics (see module docstring)."""
    x = np.asarray(images, dtype=np.float64) / 255.0
    n, s = x.shape[0], x.shape[1]
    color = np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)
    g = _gray(x)
    gy, gx = np.diff(g, axis=1)[:, :, :-1], np.diff(g, axis=2)[:, :-1, :]
    mag = np.sqrt(gx**2 + gy**2).reshape(n, -1)
    grad = np.stack([np.histogram(m, bins=GRADIENT_EDGES)[0] for m in mag]) / mag.shape[1]
    power = np.abs(np.fft.fft2(g - g.mean(axis=(1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(s), np.fft.fftfreq(s), indexing="ij")
    radius = np.sqrt(fx**2 + fy**2) / 0.5
    bins = np.clip(np.ceil(radius * SPECTRUM_BINS).astype(int) - 1, 0, SPECTRUM_BINS - 1)
    bins[0, 0] = -1  # the DC term is zero by construction
    total = power.reshape(n, -1).mean(axis=1) + 1e-8
    spec = np.stack([np.log(power[:, bins == b].mean(axis=1) + 1e-8) - np.log(total) for b in range(SPECTRUM_BINS)], 1)
    with torch.no_grad():
        t = torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)) * 2 - 1
        h = F.relu(F.conv2d(t, _W1, stride=2, padding=2))
        h = F.relu(F.conv2d(h, _W2, stride=2, padding=1))
        net = h.mean(dim=(2, 3)).double().numpy()
    return np.concatenate([color, grad, spec, net], axis=1)


def _mean_pairwise(f: np.ndarray) -> float:
    if len(f) < 2:
        return 0.0
    d = np.sqrt(np.maximum(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1), 0.0))
    return float(d.sum() / (len(f) * (len(f) - 1)))


class QualityReference:
    """Feature statistics of the real crops a GM is judged against."""

    def __init__(self, real_crops: np.ndarray) -> None:
        f = image_features(real_crops)
        self.mu = f.mean(axis=0)
        self.sd = np.maximum(f.std(axis=0), 1e-3)
        self.real = (f - self.mu) / self.sd
        self.diversity = _mean_pairwise(self.real)

    def standardize(self, images: np.ndarray) -> np.ndarray:
        return (image_features(images) - self.mu) / self.sd

    def distance(self, images: np.ndarray) -> float:
        """Diagonal Frechet distance between ``images`` and the real crops (0 = same)."""
        f = self.standardize(images)
        return float(np.mean((f.mean(0) - self.real.mean(0)) ** 2 + (f.std(0) - self.real.std(0)) ** 2))


def gate_figures(samples: np.ndarray, reference: QualityReference, untrained: np.ndarray,
                 realism: RealismReference | None = None) -> dict[str, float]:
    """The gate's figures for a GM's samples (uint8 NHWC) against real crops (with ``realism``:
    also their ``swd`` to its real images, for a gate with a realism threshold)."""
    d_trained = reference.distance(samples)
    d_untrained = reference.distance(untrained)
    extra = {"swd": realism.swd(samples)} if realism is not None else {}
    return extra | {
        "pixel_std": float(np.asarray(samples, dtype=np.float64).std(axis=(1, 2, 3)).mean()),
        "diversity_ratio": _mean_pairwise(reference.standardize(samples)) / max(reference.diversity, _EPS),
        "dist_real_trained": d_trained,
        "dist_real_untrained": d_untrained,
        "improvement": float(min(d_untrained / max(d_trained, _EPS), IMPROVEMENT_CAP)),
    }


def gate_passes(figures: dict[str, float], cfg: ZooTrainConfig) -> bool:
    """Whether the figures clear every threshold of ``cfg``."""
    return (
        figures["pixel_std"] >= cfg.min_pixel_std
        and figures["diversity_ratio"] >= cfg.min_diversity_ratio
        and figures["improvement"] >= cfg.min_improvement
        and (cfg.max_swd is None or figures.get("swd", np.inf) <= cfg.max_swd)
    )
