"""A PNG contact sheet: GM samples beside real crops, for a person to eyeball a GM."""

from __future__ import annotations

import numpy as np

from data_pipeline.preprocess import encode_png


def _tile(images: np.ndarray, cols: int, pad: int) -> np.ndarray:
    n, s = len(images), images.shape[1]
    rows = max(1, -(-n // cols))
    out = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (s + pad) : pad + r * (s + pad) + s, pad + c * (s + pad) : pad + c * (s + pad) + s] = img
    return out


def sample_grid_png(images: np.ndarray, real_crops: np.ndarray, n: int = 16, cols: int = 4, pad: int = 2) -> bytes:
    """PNG bytes: up to ``n`` GM samples (left) beside ``n`` real crops (right)."""
    fake = _tile(np.asarray(images, dtype=np.uint8)[:n], cols, pad)
    real = _tile(np.asarray(real_crops, dtype=np.uint8)[:n], cols, pad)
    h = max(fake.shape[0], real.shape[0])
    sep = np.zeros((h, 3 * pad, 3), dtype=np.uint8)

    def fit(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255)

    return encode_png(np.concatenate([fit(fake), sep, fit(real)], axis=1))
