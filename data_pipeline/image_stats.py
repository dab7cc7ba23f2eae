"""Fixed per-image statistics (no training): what the zoo's quality gate and the realism C2ST compare.

Colour moments (per-channel mean and std), a histogram of gray-level gradient magnitudes, the
radially averaged power spectrum (log, relative to total power) and globally pooled responses of
a fixed, seeded random conv net. Its own module so that ``zoo.quality`` (the gate) and
``realism`` (which the gate calls for its SWD) share it without importing each other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

GRADIENT_EDGES = np.array([0.0, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, np.inf])
SPECTRUM_BINS = 8
RANDOM_NET_SEED = 20_240_607


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
