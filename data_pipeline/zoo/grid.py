"""A PNG contact sheet: GM samples beside real crops, for a person to eyeball a GM."""

from __future__ import annotations

import numpy as np

from gmparse.data_pipeline.preprocess import encode_png


def _tile(images: np.ndarray, cols: int, pad: int) -> np.ndarray:
    n, s = len(images), images.shape[1]
    rows = max(1, -(-n // cols))
    out = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (s + pad) : pad + r * (s + pad) + s, pad + c * (s + pad) : pad + c * (s + pad) + s] = img
    return out


def _caption(text: str, width: int) -> np.ndarray:
    """A white strip with ``text`` in PIL's built-in font (no font file needed)."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, 14), "white")
    ImageDraw.Draw(strip).text((2, 2), text, fill="black")
    return np.asarray(strip)


def sample_grid_png(images: np.ndarray, real_crops: np.ndarray, n: int = 16, cols: int = 4, pad: int = 2,
                    caption: str = "") -> bytes:
    """PNG bytes: up to ``n`` GM samples (left) beside ``n`` real crops (right), under an
    optional one-line ``caption`` (the GM's realism figures)."""
    fake = _tile(np.asarray(images, dtype=np.uint8)[:n], cols, pad)
    real = _tile(np.asarray(real_crops, dtype=np.uint8)[:n], cols, pad)
    h = max(fake.shape[0], real.shape[0])
    sep = np.zeros((h, 3 * pad, 3), dtype=np.uint8)

    def fit(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, h - a.shape[0]), (0, 0), (0, 0)), constant_values=255)

    grid = np.concatenate([fit(fake), sep, fit(real)], axis=1)
    if caption:
        grid = np.concatenate([_caption(caption, grid.shape[1]), grid], axis=0)
    return encode_png(grid)
