"""Image decoding and the input normalization every consumer shares (numpy + Pillow only).

The Ray Data reader, the parser's ``predict`` and the benchmarks all go through these
functions, so a model always sees images prepared the same way.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

#: per-channel input normalization of the reference implementation (docs/method.md)
IMAGE_MEAN = 0.649
IMAGE_STD = 0.1269


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> lossless PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any Pillow image (gray, RGBA, palette, 16-bit) -> uint8 [H, W, 3]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3]; raises ValueError on anything unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb_uint8(img)
    except Exception as e:  # Pillow raises many types for bad files
        raise ValueError(f"cannot decode image: {e}") from e


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize of uint8 [H, W, 3] to ``size`` (bicubic down, nearest-free up)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    img = Image.fromarray(image)
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] with the shared mean/std."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    x = (x - IMAGE_MEAN) / IMAGE_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def denormalize(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize` back to uint8 [N, H, W, 3]."""
    img = np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1) * IMAGE_STD + IMAGE_MEAN
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


FIT_MODES = ("resize", "crop", "tile")


def fit_to_size(image: np.ndarray, size: int, mode: str = "resize", max_side_tiles: int = 8) -> np.ndarray:
    """uint8 [H, W, 3] -> [k, size, size, 3] views a model of input ``size`` reads.

    ``resize``: the whole image resampled (k = 1); it low-passes a larger image, and with it the
    high-frequency artefacts a parser reads. ``crop``: the centre ``size`` crop at native
    resolution (k = 1). ``tile``: the non-overlapping ``size`` tiles at native resolution, a centred
    block of at most ``max_side_tiles`` a side (k <= 64 by default, so a large photo stays cheap;
    average the predictions). Images smaller than ``size`` are resized in every mode.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    h, w = image.shape[:2]
    if mode == "resize" or h < size or w < size:
        return resize(image, size)[None]
    if mode == "crop":
        top, left = (h - size) // 2, (w - size) // 2
        return np.ascontiguousarray(image[top : top + size, left : left + size])[None]
    ny, nx = min(h // size, max_side_tiles), min(w // size, max_side_tiles)
    top, left = (h - ny * size) // 2, (w - nx * size) // 2
    return np.stack([image[top + i * size : top + (i + 1) * size, left + j * size : left + (j + 1) * size]
                     for i in range(ny) for j in range(nx)])


def fit_views(images, size: int, mode: str = "resize") -> tuple[np.ndarray, np.ndarray]:
    """Each uint8 image -> its :func:`fit_to_size` views, stacked: (views [K, size, size, 3],
    owner [K]: the index of the image each view came from, to average predictions per image)."""
    views = [fit_to_size(np.asarray(im), size, mode) for im in images]
    owner = np.repeat(np.arange(len(views)), [len(v) for v in views])
    return np.concatenate(views), owner
