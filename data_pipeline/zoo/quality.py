"""The GM quality gate: fixed image statistics that tell a learned GM from a collapsed one.

Features: ``data_pipeline.image_stats.image_features`` (fixed, no training), standardized by the real crops' statistics. Figures:

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

from gmparse.data_pipeline.image_stats import image_features

from .config import ZooTrainConfig

if TYPE_CHECKING:
    from gmparse.data_pipeline.realism import RealismReference

IMPROVEMENT_CAP = 1e6
_EPS = 1e-12


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
