"""How real a GM's images look, measured against real images with no downloaded network.

Two measures, both computed from uint8 [N, S, S, 3] arrays:

* ``swd``: the sliced Wasserstein distance between 7x7 patches of the Laplacian pyramids
  of the GM's images and of real images (Karras et al. 2018, "Progressive growing of
  GANs", appendix D), times 1e3 and averaged over pyramid levels (finest first, down to
  8 px). Unlike that paper, patches are normalized by the *real* images' per-level,
  per-channel mean and std (not each set by its own), so a colour or contrast error counts.
  0 = the same patch distribution; lower is more real.
* ``c2st``: a classifier two-sample test: the 5-fold cross-validated accuracy of a
  logistic regression telling the GM's images from real ones on fixed image statistics
  (``image_stats.image_features``: colour moments, gradient histogram, power spectrum,
  a seeded random conv net). 0.5 = indistinguishable, 1.0 = told apart every time.

Calibration (:func:`calibration`): the same measures of some real images against the other,
disjoint real images (the floor a perfect GM would reach at that sample size) and, per zoo GM, of
the same GM untrained (the ceiling it started from, recorded as ``swd_untrained``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

PATCH = 7
MIN_LEVEL_SIZE = 8
PATCHES_PER_IMAGE = 32
PROJECTIONS = 128  # 32 x 128: ~1 s a GM on one core, +-2% between seeds (64 x 256: 5 s, the same)
REPEATS = 4
SWD_SCALE = 1e3
C2ST_FOLDS = 5
MAX_IMAGES = 512  # per side: more buys little precision and costs time

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
_KERNEL = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).expand(3, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _KERNEL, groups=3)


def laplacian_pyramid(images: np.ndarray) -> list[torch.Tensor]:
    """Levels of float NCHW in [-1, 1]: band-pass details finest first, then the low-pass
    residual (the last level, at least ``MIN_LEVEL_SIZE`` px)."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))).float() / 127.5 - 1.0
    levels = []
    while x.shape[-1] >= 2 * MIN_LEVEL_SIZE:
        down = _blur(x)[..., ::2, ::2]
        up = torch.zeros_like(x)
        up[..., ::2, ::2] = down
        up = 4.0 * _blur(up)  # zero insertion, then the same kernel (Burt & Adelson)
        levels.append(x - up)
        x = down
    levels.append(x)
    return levels


def _patches(level: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """``per_image`` random 7x7 patches of every image, flattened: [N * per_image, 3 * 49]."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - PATCH + 1, (n, per_image), generator=gen)
    xs = torch.randint(0, w - PATCH + 1, (n, per_image), generator=gen)
    d = torch.arange(PATCH)
    rows = (ys[..., None] + d)[..., :, None].expand(n, per_image, PATCH, PATCH)
    cols = (xs[..., None] + d)[..., None, :].expand(n, per_image, PATCH, PATCH)
    flat = (rows * w + cols).reshape(n, 1, -1).expand(n, c, -1)
    out = level.reshape(n, c, h * w).gather(2, flat).reshape(n, c, per_image, PATCH * PATCH)
    return out.permute(0, 2, 1, 3).reshape(n * per_image, c * PATCH * PATCH)


def _swd(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> float:
    """Sliced Wasserstein-1 distance between two equal-size descriptor sets."""
    total = 0.0
    for _ in range(REPEATS):
        dirs = torch.randn(a.shape[1], PROJECTIONS, generator=gen)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa = _sorted_columns(a @ dirs)
        pb = _sorted_columns(b @ dirs)
        total += float((pa - pb).abs().mean())
    return total / REPEATS


def _sorted_columns(x: torch.Tensor) -> torch.Tensor:
    """Each column sorted: numpy's SIMD sort, ~2x torch's on CPU for the same values (sorting is
    exact), and the sorts are most of an SWD's time."""
    return torch.from_numpy(np.sort(x.numpy(), axis=0))


def _subsample(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return images if len(images) <= n else images[np.sort(rng.choice(len(images), n, replace=False))]


@dataclass
class RealismReference:
    """The real images a GM is compared with: their patch descriptors and image statistics.

    Build it once per collection (or per gate) and call :meth:`measure` per GM."""

    real: np.ndarray
    seed: int = 0

    def __post_init__(self) -> None:
        real = np.asarray(self.real)
        if real.dtype != np.uint8 or real.ndim != 4 or real.shape[-1] != 3 or real.shape[1] != real.shape[2]:
            raise ValueError(f"real images must be uint8 [N, S, S, 3], got {real.dtype} {real.shape}")
        if len(real) < 2 * C2ST_FOLDS or real.shape[1] < 2 * MIN_LEVEL_SIZE:
            raise ValueError(f"need >= {2 * C2ST_FOLDS} real images of >= {2 * MIN_LEVEL_SIZE} px, got {real.shape}")
        self.real = _subsample(real, MAX_IMAGES, np.random.default_rng(self.seed))
        self.size = real.shape[1]
        levels = laplacian_pyramid(self.real)
        self.stats = [(lv.mean(dim=(0, 2, 3)), lv.std(dim=(0, 2, 3)).clamp_min(1e-6)) for lv in levels]
        self._real_desc = self._descriptors(levels, torch.Generator().manual_seed(self.seed + 1))
        self._real_features: np.ndarray | None = None  # C2ST's statistics, computed on first use (a gate needs SWD only)

    def _descriptors(self, levels: list[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
        out = []
        for lv, (mu, sd) in zip(levels, self.stats):
            out.append(_patches((lv - mu[:, None, None]) / sd[:, None, None], PATCHES_PER_IMAGE, gen))
        return out

    def swd(self, images: np.ndarray) -> float:
        """SWD x 1e3 between ``images``' pyramid patches and the real ones (mean over levels)."""
        images = self._check(images)
        gen = torch.Generator().manual_seed(self.seed + 2)
        fake = self._descriptors(laplacian_pyramid(images), gen)
        dists = []
        for a, b in zip(self._real_desc, fake):
            m = min(len(a), len(b))
            ia = torch.randperm(len(a), generator=gen)[:m]
            ib = torch.randperm(len(b), generator=gen)[:m]
            dists.append(_swd(a[ia], b[ib], gen))
        return SWD_SCALE * float(np.mean(dists))

    def c2st(self, images: np.ndarray) -> float:
        """Cross-validated accuracy of a linear real-vs-``images`` classifier (0.5 = indistinguishable;
        NaN for fewer than ``C2ST_FOLDS`` images)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from gmparse.data_pipeline.image_stats import image_features

        images = self._check(images)
        rng = np.random.default_rng(self.seed + 3)
        n = min(len(images), len(self.real))
        if n < C2ST_FOLDS:
            return float("nan")  # too few images to cross-validate a classifier
        if self._real_features is None:
            self._real_features = image_features(self.real)
        fake_f = image_features(_subsample(images, n, rng))
        real_f = self._real_features[rng.choice(len(self.real), n, replace=False)]
        x = np.concatenate([real_f, fake_f])
        y = np.r_[np.zeros(n), np.ones(n)]
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        folds = StratifiedKFold(C2ST_FOLDS, shuffle=True, random_state=self.seed)
        return float(cross_val_score(clf, x, y, cv=folds).mean())

    def measure(self, images: np.ndarray) -> dict[str, float]:
        return {"swd": self.swd(images), "c2st": self.c2st(images)}

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"images must be uint8 [N, {self.size}, {self.size}, 3], got {images.dtype} {images.shape}")
        if len(images) < 1:
            raise ValueError("need at least 1 image, got none")
        return _subsample(images, MAX_IMAGES, np.random.default_rng(self.seed + 4))


def calibration(real: np.ndarray, n_images: int, seed: int = 0) -> dict[str, float]:
    """The measures of ``n_images`` real images against the other real images: what a GM as
    real as the real images scores at that sample size (the floor of ``swd``, ~0.5 for
    ``c2st``), keyed ``real_swd`` and ``real_c2st``."""
    real = np.asarray(real)
    perm = np.random.default_rng(seed).permutation(len(real))
    n = min(n_images, len(real) // 2)
    ref = RealismReference(real[perm[n:]], seed=seed)
    return {f"real_{k}": v for k, v in ref.measure(real[perm[:n]]).items()}


def summarize(table: pd.DataFrame, column: str = "swd") -> dict[str, object]:
    """Median, worst and per-family median of ``column`` over a per-GM table (pandas)."""
    if table.empty or column not in table:
        return {}
    worst = table[column].idxmax()  # both measures: higher is less real
    return {
        "median": float(table[column].median()),
        "worst": float(table[column].max()),
        "worst_gm": str(table.loc[worst, "gm_id"]) if "gm_id" in table else "",
        "per_family": {str(k): float(v) for k, v in table.groupby("family")[column].median().items()},
    }


def realism_summary(per_gm: pd.DataFrame, cal: dict[str, float]) -> dict[str, Any]:
    """A collection manifest's realism record: calibration ends, then median / worst / per family."""
    out: dict[str, Any] = {
        "measure": "swd: sliced Wasserstein distance x1e3 of Laplacian-pyramid 7x7 patches to held-out real "
                   "crops (lower = more real); c2st: linear real-vs-GM classifier accuracy (0.5 = indistinguishable)",
        **cal,
        "swd": summarize(per_gm, "swd"),
        "c2st": summarize(per_gm, "c2st"),
    }
    if "swd_untrained" in per_gm:
        out["swd_untrained_median"] = float(per_gm["swd_untrained"].median())
    return out


def caption(realism: dict[str, float]) -> str:
    """The line printed above a GM's grid."""
    return f"SWD {realism['swd']:.0f} (untrained {realism['swd_untrained']:.0f}) C2ST {realism['c2st']:.2f}"


def collection_realism(col, per_gm: int = 256, seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-GM ``swd`` and ``c2st`` of a built or ingested collection against its own real
    images (the ``real`` source), plus the real-vs-real calibration at ``per_gm`` images."""
    from gmparse.data_pipeline.collection import REAL_GM_ID, CollectionError
    from gmparse.data_pipeline.in_memory import load_images

    arr = load_images(col, per_gm=0)
    real = arr.images[arr.gm_ids == REAL_GM_ID]
    if len(real) < 4 * C2ST_FOLDS:
        raise CollectionError(f"{col.path} has {len(real)} real images; realism needs at least {4 * C2ST_FOLDS}")
    cal = calibration(real, per_gm, seed)
    ref = RealismReference(real, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for gm_id, family in zip(col.fake_gms["gm_id"], col.fake_gms["family"]):
        images = arr.images[arr.gm_ids == gm_id]
        if len(images) == 0:
            continue
        rows.append({"gm_id": gm_id, "family": family, **ref.measure(_subsample(images, per_gm, rng))})
    return pd.DataFrame(rows, columns=["gm_id", "family", "swd", "c2st"]), cal
