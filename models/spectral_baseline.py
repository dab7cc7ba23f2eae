"""The classical baseline: hand-made frequency features of the image residual + linear models.

Prior art: spectral-artifact detectors (Durall et al. 2020, "Watch your up-convolution";
Frank et al. 2020; Dzanic et al. 2020) read GM up-sampling artefacts from the Fourier
spectrum of an image's high-pass residual. Here the same features feed one linear model per
label (scikit-learn): standardize -> PCA -> ridge regression for the 9 continuous values,
class-balanced logistic regression for each discrete value, loss type and loss group.
It is trained on a fold's training GMs and scored with the same metrics as FEN+PN, so every
table can say how much the network adds over a cheap, transparent model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gmparse.data_pipeline.schema import CONTINUOUS, GROUP_NAMES, LOSS_TYPES, NUM_CLASSES, TargetArrays

from .constraints import GRAY_COEFFS
from .predictions import Predictions

GRAY = np.array(GRAY_COEFFS, dtype=np.float32)  # the luma the fingerprint constraints use
HIST_BINS = 16


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 box blur over axes (1, 2) of [N, H, W, ...] with reflected borders."""
    pad = [(0, 0), (1, 1), (1, 1)] + [(0, 0)] * (x.ndim - 3)
    p = np.pad(x, pad, mode="reflect")
    h, w = x.shape[1], x.shape[2]
    return sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _radial_profile(power: np.ndarray, bins: int) -> np.ndarray:
    """Azimuthal mean of a centred 2-D spectrum [N, H, W] into ``bins`` radius bins -> [N, bins]."""
    h, w = power.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h // 2, xx - w // 2)
    idx = np.minimum((r / r.max() * bins).astype(np.int64), bins - 1).ravel()
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    flat = power.reshape(len(power), -1)
    out = np.stack([np.bincount(idx, weights=row, minlength=bins) for row in flat])
    return out / np.maximum(counts, 1)


def spectral_features(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 features [N, D].

    - log1p |FFT2| of the grey high-pass residual (image minus its 3x3 box blur), the half
      spectrum of a real signal (H x (W/2+1) values): up-sampling grids and checkerboards;
    - the radial (azimuthal mean) log spectrum of each colour channel's residual;
    - per channel: 16-bin histogram, mean, std, residual std, share of pixels at 0 and 255
      (the output non-linearity shapes the value distribution: Tanh/Sigmoid saturate, ReLU clips).
    """
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got shape {x.shape}")
    gray = x @ GRAY
    res = gray - _box3(gray)
    spec = np.log1p(np.abs(np.fft.rfft2(res, axes=(1, 2))) * 10.0).reshape(len(x), -1)
    cres = x - _box3(x)
    cspec = np.abs(np.fft.fftshift(np.fft.fft2(cres, axes=(1, 2)), axes=(1, 2)))
    bins = max(4, min(x.shape[1], x.shape[2]) // 2)
    radial = np.concatenate([np.log1p(_radial_profile(cspec[..., c] * 10.0, bins)) for c in range(3)], axis=1)
    hist = np.concatenate(
        [np.stack([np.histogram(im[..., c], bins=HIST_BINS, range=(0, 1))[0] for im in x]) for c in range(3)], axis=1
    ) / float(x.shape[1] * x.shape[2])
    stats = np.concatenate(
        [x.mean(axis=(1, 2)), x.std(axis=(1, 2)), cres.std(axis=(1, 2)),
         (x <= 0.5 / 255).mean(axis=(1, 2)), (x >= 254.5 / 255).mean(axis=(1, 2))], axis=1
    )
    return np.concatenate([spec, radial, hist, stats], axis=1).astype(np.float32)


@dataclass
class _Binary:
    """A logistic regression on one 0/1 column, or the constant when training saw one value."""

    model: object | None
    constant: float

    def prob(self, z: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.full(len(z), self.constant)
        return self.model.predict_proba(z)[:, 1]  # type: ignore[attr-defined]


@dataclass
class SpectralBaseline:
    """Residual-spectrum features -> standardize -> PCA -> one linear model per label.

    ``fit`` takes per-image uint8 images and per-image targets (each image carries its GM's
    labels); ``predict`` returns per-image :class:`Predictions`, averaged per GM by the
    same metrics code as the network's.
    """

    n_components: int = 64
    c: float = 0.1  # inverse L2 strength of the logistic regressions (tuned on training GMs only)
    alpha: float = 10.0  # ridge strength of the continuous regression
    seed: int = 0
    _fitted: dict[str, object] = field(default_factory=dict, repr=False)

    def _embed(self, images: np.ndarray, fit: bool) -> np.ndarray:
        f = spectral_features(images)
        if fit:
            from sklearn.decomposition import PCA
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            k = min(self.n_components, f.shape[0] - 1, f.shape[1])
            pipe = make_pipeline(StandardScaler(), PCA(k, random_state=self.seed), StandardScaler())
            self._fitted["embed"] = pipe.fit(f)
            self._fitted["size"] = images.shape[1:3]
        elif tuple(images.shape[1:3]) != tuple(self._fitted["size"]):  # type: ignore[arg-type]
            raise ValueError(f"baseline fitted on {self._fitted['size']} images, got {images.shape[1:3]}")
        return self._fitted["embed"].transform(f)  # type: ignore[attr-defined]

    def _binary(self, z: np.ndarray, y: np.ndarray) -> _Binary:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y).astype(np.int64)
        if len(np.unique(y)) < 2:
            return _Binary(None, float(y[0]) if len(y) else 0.0)
        m = LogisticRegression(C=self.c, class_weight="balanced", max_iter=2000)
        return _Binary(m.fit(z, y), 0.0)

    def fit(self, images: np.ndarray, targets: TargetArrays) -> SpectralBaseline:
        from sklearn.linear_model import LogisticRegression, Ridge

        if len(images) != len(targets.continuous):
            raise ValueError(f"{len(images)} images but {len(targets.continuous)} target rows")
        z = self._embed(images, fit=True)
        self._fitted["continuous"] = Ridge(alpha=self.alpha).fit(z, np.asarray(targets.continuous, np.float64))
        disc = np.asarray(targets.discrete, np.int64)
        heads = []
        for j in range(len(NUM_CLASSES)):
            present = np.unique(disc[:, j])
            if len(present) < 2:
                heads.append((None, present))
                continue
            m = LogisticRegression(C=self.c, class_weight="balanced", max_iter=2000)
            heads.append((m.fit(z, disc[:, j]), present))
        self._fitted["discrete"] = heads
        self._fitted["loss"] = [self._binary(z, np.asarray(targets.loss)[:, j]) for j in range(len(LOSS_TYPES))]
        self._fitted["group"] = [self._binary(z, np.asarray(targets.group)[:, j]) for j in range(len(GROUP_NAMES))]
        return self

    def predict(self, images: np.ndarray) -> Predictions:
        if "embed" not in self._fitted:
            raise RuntimeError("SpectralBaseline.predict before fit")
        z = self._embed(images, fit=False)
        cont = np.clip(self._fitted["continuous"].predict(z), 0.0, 1.0).reshape(len(z), len(CONTINUOUS))  # type: ignore[attr-defined]
        probs = []
        for (m, present), n_cls in zip(self._fitted["discrete"], NUM_CLASSES):  # type: ignore[arg-type]
            p = np.zeros((len(z), n_cls))
            if m is None:
                p[:, present[0]] = 1.0
            else:
                p[:, m.classes_] = m.predict_proba(z)
            probs.append(p)
        group = np.stack([b.prob(z) for b in self._fitted["group"]], axis=1)  # type: ignore[attr-defined]
        loss = np.stack([b.prob(z) for b in self._fitted["loss"]], axis=1)  # type: ignore[attr-defined]
        return Predictions(cont, tuple(probs), group, loss)
