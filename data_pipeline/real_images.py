"""Real photos that ship inside installed packages, cut into random multi-scale crops.

Nothing here downloads: every source is a file inside a wheel the project already depends
on (scikit-image's, scikit-learn's and matplotlib's sample photos, listed in ``BUNDLED_SOURCES`` below
with their licences). ``--real-dir`` swaps in the user's own photos
(CelebA, FFHQ, ...) for real-world use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gmparse.data_pipeline.preprocess import to_rgb_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


@dataclass(frozen=True)
class PhotoSource:
    """One bundled photo: where it comes from and under which licence."""

    name: str
    package: str
    license: str
    load: Callable[[], np.ndarray]


def _skimage(name: str, fn: str, license: str = "CC0 / public domain (scikit-image docstrings)") -> PhotoSource:
    def load() -> np.ndarray:
        import skimage.data

        img = getattr(skimage.data, fn)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
        return img

    return PhotoSource(f"skimage.{name}", "scikit-image", license, load)


def _sklearn(name: str) -> PhotoSource:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")

    return PhotoSource(f"sklearn.{name}", "scikit-learn", "CC-BY-2.0 (scikit-learn sample images)", load)


def _hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


#: Photos only (no illustrations), de-duplicated (skimage camera == pywt camera).
BUNDLED_SOURCES: tuple[PhotoSource, ...] = (
    _skimage("astronaut", "astronaut"),
    _skimage("camera", "camera"),
    _skimage("chelsea", "chelsea"),
    _skimage("coffee", "coffee"),
    _skimage("coins", "coins"),
    _skimage("rocket", "rocket"),
    _skimage("clock", "clock"),
    _skimage("moon", "moon"),
    _skimage("grass", "grass"),
    _skimage("gravel", "gravel"),
    _skimage("brick", "brick"),
    _skimage("motorcycle_left", "stereo_motorcycle", "Middlebury stereo data set (research use)"),
    _skimage("page", "page"),
    _skimage("text", "text"),
    _sklearn("china"),
    _sklearn("flower"),
    PhotoSource("matplotlib.grace_hopper", "matplotlib", "public domain (US Navy)", _hopper),
)


@dataclass
class PhotoPool:
    """Loaded photos plus the provenance recorded in a collection's manifest."""

    photos: list[np.ndarray]
    sources: list[dict[str, str]]


def load_bundled_photos() -> PhotoPool:
    """Every bundled photo that loads here; a source that fails is skipped, not fatal."""
    photos, sources = [], []
    for src in BUNDLED_SOURCES:
        try:
            arr = np.asarray(src.load())
        except Exception:  # a package version without that file
            continue
        img = to_rgb_uint8(Image.fromarray(arr))
        photos.append(img)
        sources.append({"name": src.name, "package": src.package, "license": src.license, "shape": str(img.shape)})
    if not photos:
        raise RuntimeError("no bundled photo could be loaded; install scikit-image or pass --real-dir")
    return PhotoPool(photos, sources)


def load_lfw_faces() -> PhotoPool:
    """One homogeneous domain: the 100 face images of scikit-image's ``lfw_subset`` (Labeled Faces
    in the Wild, 25x25 grey, shipped in the wheel), as RGB.

    RED116's GMs were mostly trained on one domain each (faces, CIFAR, MNIST), so a zoo can be
    too. At the default preset's training budget it did not make the GMs more real (docs/decisions.md,
    2026-11-24: ``--real-source faces``). The faces are smaller than the collection's 32px, so every crop is a whole
    face, bicubically enlarged, flipped at random.
    """
    import skimage.data

    faces = np.asarray(skimage.data.lfw_subset()[:100])  # rows 100..199 are the subset's non-faces
    photos = [to_rgb_uint8(Image.fromarray(np.round(f * 255).astype(np.uint8))) for f in faces]
    src = {"name": "skimage.lfw_subset faces", "package": "scikit-image",
           "license": "Labeled Faces in the Wild (no explicit licence; research use)", "shape": f"100 x {photos[0].shape}"}
    return PhotoPool(photos, [src])


#: the bundled real-image sources a build can draw from (BuildConfig.real_source)
REAL_SOURCES: dict[str, Callable[[], PhotoPool]] = {"photos": load_bundled_photos, "faces": load_lfw_faces}


def load_photo_dir(root: str | Path, min_side: int = 16) -> PhotoPool:
    """The user's own photos (recursively); unreadable files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--real-dir {root} is not a directory")
    photos, sources = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(p) as im:
                im.load()
                img = to_rgb_uint8(im)
        except Exception:
            continue
        if min(img.shape[:2]) < min_side:
            continue
        photos.append(img)
        sources.append({"name": str(p.relative_to(root)), "package": f"user dir {root}", "license": "user-provided"})
    if not photos:
        raise ValueError(f"--real-dir {root} holds no readable image of at least {min_side}px")
    return PhotoPool(photos, sources)


def random_crops(pool: PhotoPool, n: int, size: int, seed: int, min_scale: float = 0.08) -> np.ndarray:
    """``n`` random square crops at random scales, resized to ``size``, random h-flip.

    Scale is drawn log-uniformly between ``size`` pixels (native resolution) and
    ``min_scale``..1 of the photo's short side, so crops mix fine texture and whole scenes.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = pool.photos[rng.integers(len(pool.photos))]
        h, w = img.shape[:2]
        short = min(h, w)
        lo = min(size, short)
        hi = max(lo, short)
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        side = int(np.clip(side, max(lo, int(min_scale * short)), short))
        y = rng.integers(0, h - side + 1)
        x = rng.integers(0, w - side + 1)
        crop = Image.fromarray(img[y : y + side, x : x + side])
        if side != size:
            crop = crop.resize((size, size), Image.Resampling.BICUBIC if side < size else Image.Resampling.BOX)
        arr = np.asarray(crop, dtype=np.uint8)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = arr
    return out
