"""Parsing Network: an encoder over the fingerprint with hierarchical parsing heads.

Heads follow the schema: 9 continuous values, one classifier per discrete value
(schema.NUM_CLASSES), 3 loss groups and 10 loss types, each loss type's probability
multiplied by its group's (hierarchical learning, schema.LOSS_GROUP_INDEX).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gmparse.data_pipeline.preprocess import IMAGE_MEAN, IMAGE_STD
from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    GROUP_NAMES,
    LOSS_GROUP_INDEX,
    LOSS_TYPES,
    NUM_CLASSES,
    TargetArrays,
)

VARIANTS = ("direct", "cluster")


def _branch(fc: int, dims: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = fc
    for d in dims:
        layers += [nn.Linear(prev, d), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        prev = d
    return nn.Sequential(*layers)


class ParsingNetwork(nn.Module):
    """Encoder [conv3x3+ReLU+maxpool2] x len(widths) -> adaptive pool -> FC -> 3 branches.

    Max pooling uses ceil mode and the encoder ends in adaptive average pooling, so the
    network accepts 32x32 inputs with the paper's five stages. ``variant="cluster"`` is
    the journal version: a cluster classifier plus a deviation regressor, prediction =
    centre + deviation; centres are a buffer set by :meth:`set_centres`.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        fc: int = 512,
        branch: Sequence[int] = (256, 64),
        dropout: float = 0.5,
        variant: str = "direct",
        n_clusters: int = 12,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        layers: list[nn.Module] = []
        prev = channels
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            prev = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev, fc), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*layers)
        self.arch_branch = _branch(fc, branch, dropout)
        self.group_branch = _branch(fc, branch, dropout)
        self.loss_branch = _branch(fc, branch, dropout)
        out = branch[-1] if branch else fc
        self.variant = variant
        n_cont = len(CONTINUOUS)
        if variant == "direct":
            self.continuous_head = nn.Linear(out, n_cont)
        else:
            self.cluster_head = nn.Linear(out, n_clusters)
            self.deviation_head = nn.Linear(out, n_cont)
            self.register_buffer("centres", torch.full((n_clusters, n_cont), 0.5))
        self.discrete_heads = nn.ModuleList(nn.Linear(out, c) for c in NUM_CLASSES)
        self.group_head = nn.Linear(out, len(GROUP_NAMES))
        self.loss_head = nn.Linear(out, len(LOSS_TYPES))
        self.register_buffer("group_index", torch.tensor(LOSS_GROUP_INDEX, dtype=torch.long), persistent=False)

    def set_centres(self, centres: np.ndarray | torch.Tensor) -> None:
        """Install k-means centres [K, 9] (normalized units) for the cluster variant."""
        if self.variant != "cluster":
            raise ValueError("centres only apply to variant='cluster'")
        c = torch.as_tensor(np.asarray(centres), dtype=torch.float32)
        if c.shape != self.centres.shape:
            raise ValueError(f"centres must be {tuple(self.centres.shape)}, got {tuple(c.shape)}")
        self.centres.copy_(c)

    def forward(self, fingerprint: torch.Tensor, extra: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``extra``: features [B, fc] added to the encoder's (a :class:`SpectralBranch`'s output)."""
        h = self.encoder(fingerprint)
        if extra is not None:
            h = h + extra
        a, g, lt = self.arch_branch(h), self.group_branch(h), self.loss_branch(h)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        if self.variant == "direct":
            out["continuous"] = torch.sigmoid(self.continuous_head(a))
        else:
            logits = self.cluster_head(a)
            dev = torch.tanh(self.deviation_head(a))
            out["cluster_logits"] = logits
            out["deviation"] = dev
            out["centres"] = self.centres
            out["continuous"] = (self.centres[logits.argmax(dim=1)] + dev).clamp(0.0, 1.0)
        out["discrete_logits"] = [head(a) for head in self.discrete_heads]
        group_logits = self.group_head(g)
        group_prob = torch.sigmoid(group_logits)
        loss_logits = self.loss_head(lt)
        out["group_logits"] = group_logits
        out["group_prob"] = group_prob
        out["loss_logits"] = loss_logits
        out["loss_prob"] = torch.sigmoid(loss_logits) * group_prob[:, self.group_index]
        return out


class _LinearBranch(nn.Module):
    """The PN's side branches' head: features [B, dim] -> each standardized (BatchNorm1d) ->
    dropout -> linear -> ReLU, a [B, out] feature the PN adds to its encoder's."""

    def __init__(self, dim: int, out: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, out), nn.ReLU(inplace=True))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features))

    @staticmethod
    def check_size(x: torch.Tensor, size: int, what: str) -> None:
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(f"{what} branch built for {size}px, got {tuple(x.shape[-2:])}")


class SpectralBranch(_LinearBranch):
    """Fingerprint -> per-channel log1p |rFFT2| -> every frequency bin standardized (BatchNorm1d)
    -> dropout -> linear -> ReLU, a [B, out] feature the PN adds to its encoder's.

    Not in the paper. The PN's conv encoder ends in global average pooling, so it cannot tell
    where in the spectrum energy sits, and GM up-sampling artefacts are exactly energy at fixed
    frequencies (a 2x transposed-conv checkerboard is a peak at Nyquist). This branch reads each
    frequency bin by position, as the classical spectral baseline does, but learns end to end,
    with gradients into the FEN.
    """

    def __init__(self, image_size: int, out: int, dropout: float = 0.0, channels: int = 3) -> None:
        super().__init__(channels * image_size * (image_size // 2 + 1), out, dropout)
        self.image_size = image_size

    def forward(self, fingerprint: torch.Tensor) -> torch.Tensor:
        self.check_size(fingerprint, self.image_size, "spectral")
        return self.project(torch.log1p(torch.fft.rfft2(fingerprint.float()).abs()).flatten(1))


class SpatialBranch(_LinearBranch):
    """Fingerprint and residual [B, C, H, W] -> every pixel standardized (BatchNorm1d) -> dropout
    -> linear -> ReLU, a [B, out] feature the PN adds to its encoder's.

    Not in the paper. The conv encoder's global pooling forgets *where* a pattern sits and the
    spectral branch keeps magnitudes only, so neither sees fixed-position traces: a generator's
    padding leaves its border, and its up-sampling grid its phase, at the same pixels in every
    image it makes. This branch reads each pixel by position.
    """

    def __init__(self, image_size: int, out: int, dropout: float = 0.0, channels: int = 6) -> None:
        super().__init__(channels * image_size * image_size, out, dropout)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x, self.image_size, "spatial")
        return self.project(x.float().flatten(1))


class ImageStatsBranch(_LinearBranch):
    """Normalized input image (``mean``/``std`` undo the normalization) -> per-channel value statistics -> BatchNorm1d -> dropout -> linear -> ReLU.

    Not in the paper. The fingerprint is a residual: it keeps an image's high frequencies but
    not the distribution of its pixel values, and the output non-linearity (Tanh, Sigmoid,
    none) shapes exactly that distribution (saturation at 0 and 255, clipped or bell-shaped
    histograms). Per channel: a ``bins``-bin histogram, mean, std and the shares of pixels at
    0 and at 255, the same statistics the classical baseline reads. Fixed features of the
    input (no gradient into the FEN); the linear layer over them is learned end to end.
    """

    def __init__(self, out: int, dropout: float = 0.0, bins: int = 16, channels: int = 3,
                 mean: float = IMAGE_MEAN, std: float = IMAGE_STD) -> None:
        super().__init__(channels * (bins + 4), out, dropout)
        self.bins, self.mean, self.std = bins, mean, std

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images [B, C, H, W] -> statistics [B, C * (bins + 4)]."""
        x = (images.float() * self.std + self.mean).clamp(0.0, 1.0).flatten(2)  # [B, C, HW] in [0, 1]
        idx = (x * self.bins).long().clamp_(max=self.bins - 1)
        hist = torch.zeros(*x.shape[:2], self.bins, device=x.device).scatter_add_(2, idx, torch.ones_like(x))
        hist /= x.shape[-1]
        stats = torch.stack([x.mean(-1), x.std(-1), (x <= 0.5 / 255).float().mean(-1),
                             (x >= 254.5 / 255).float().mean(-1)], dim=-1)
        return torch.cat([hist, stats], dim=-1).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(images))


def class_weights(targets: TargetArrays) -> list[torch.Tensor]:
    """Inverse-class-frequency weights per discrete value: n / (C_present * count).

    Classes absent from the training labels get weight 0 (they never occur as a
    training target; a present class keeps the 'balanced' weight of scikit-learn).
    """
    disc = np.asarray(targets.discrete, dtype=np.int64).reshape(-1, len(NUM_CLASSES))
    out = []
    for j, c in enumerate(NUM_CLASSES):
        counts = np.bincount(disc[:, j], minlength=c).astype(np.float64)
        present = counts > 0
        w = np.zeros(c)
        w[present] = len(disc) / (present.sum() * counts[present])
        out.append(torch.tensor(w, dtype=torch.float32))
    return out


def binary_weights(targets: TargetArrays) -> dict[str, torch.Tensor]:
    """'Balanced' weights of the group and loss-type BCE terms: ``{"group": [2, G], "loss": [2, T]}``.

    Row 0 weighs a negative label, row 1 a positive one: n / (2 * count), as scikit-learn's
    ``class_weight="balanced"``, so a type's rare label weighs as much as its common one. Under
    GM-disjoint folds a held-out type is rarer in the training GMs, and an unweighted BCE learns
    that prior, which is anti-informative on the unseen GMs. A label that is always or never set
    keeps weight 1 (nothing to balance).
    """
    out = {}
    for key, values in (("group", targets.group), ("loss", targets.loss)):
        y = np.asarray(values, dtype=np.float64)
        y = y.reshape(len(y), -1)
        n, pos = len(y), y.sum(axis=0)
        w = np.ones((2, y.shape[1]))
        ok = (pos > 0) & (pos < n)
        w[0, ok] = n / (2.0 * (n - pos[ok]))
        w[1, ok] = n / (2.0 * pos[ok])
        out[key] = torch.tensor(w, dtype=torch.float32)
    return out


def fit_clusters(targets: TargetArrays, n_clusters: int = 12, seed: int = 0) -> np.ndarray:
    """k-means centres [K, 9] of the training GMs' normalized continuous vectors.

    Pass one row per GM (not per image) so every GM counts once. With fewer distinct GMs
    than K, the remaining centres repeat existing ones (harmless: ties go to the first).
    """
    from sklearn.cluster import KMeans

    x = np.unique(np.asarray(targets.continuous, dtype=np.float64).reshape(-1, len(CONTINUOUS)), axis=0)
    k = min(n_clusters, len(x))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    centres = km.cluster_centers_
    if k < n_clusters:
        centres = np.concatenate([centres, np.repeat(centres[:1], n_clusters - k, axis=0)])
    return centres.astype(np.float32)


def assign_clusters(continuous: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre for each row of [B, 9]."""
    return torch.cdist(continuous.float(), centres.float()).argmin(dim=1)
