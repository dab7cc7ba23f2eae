"""Forensic models in pure torch: the fingerprint detector/attributor with an embedding,
the plain raw-pixel CNN baseline, feature statistics for linking, perturbations for
robustness checks, and ``ForensicModel`` (inference, state dict + JSON, ``weights_only``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmparse.data_pipeline.schema import SCHEMA_VERSION

WEIGHTS_FILE = "heads.pt"
META_FILE = "heads.json"
FORMAT_VERSION = 1
TRAIN_COLUMNS = ["image", "is_fake", "gm_index"]
PERTURBATIONS = ("clean", "jpeg", "resize")
MODEL_NAMES = ("fen", "cnn")


# --- models ------------------------------------------------------------------------------------
class PlainCNN(nn.Module):
    """Raw-pixel baseline: conv3x3 stack (first stride 1, then stride 2) + ReLU, global pool,
    linear heads for detection (1 logit) and attribution (``n_sources`` logits). No FEN."""

    def __init__(self, n_sources: int, widths: Sequence[int] = (16, 32, 48)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(prev, w, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU(inplace=True)]
            prev = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.detection = nn.Linear(prev, 1)
        self.attribution = nn.Linear(prev, n_sources) if n_sources > 0 else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.features(images)
        out = {"embedding": z, "detection_logit": self.detection(z).squeeze(1)}
        if self.attribution is not None:
            out["attribution_logits"] = self.attribution(z)
        return out


class FingerprintClassifier(nn.Module):
    """DetectionAttributionModel whose forward also returns the attribution head's pooled
    penultimate features (``embedding``), for same-source linking (DDP-safe: one forward)."""

    def __init__(self, n_sources: int, fen_depth: int, fen_width: int, head_widths: Sequence[int],
                 spectral_size: int = 0) -> None:
        super().__init__()
        from gmparse.models.fen import FEN
        from gmparse.models.heads import DetectionAttributionModel

        self.net = DetectionAttributionModel(n_sources, FEN(fen_depth, fen_width), tuple(head_widths), spectral_size)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        fp = self.net.fen(images)
        out = {"fingerprint": fp, "detection_logit": self.net.detection_head(fp, images).squeeze(1)}
        head = self.net.attribution_head
        if head is not None:
            z = head.embed(fp, images)
            out["embedding"] = z
            out["attribution_logits"] = head.net[-1](z)
        else:
            out["embedding"] = self.net.detection_head.embed(fp, images)
        return out


@dataclass(frozen=True)
class ForensicSpec:
    """What rebuilds a forensic model: its kind, attribution classes and widths. Travels to Ray
    workers as is (frozen) and is saved as JSON beside the weights (``to_dict``/``from_dict``)."""

    kind: str  # "fen" (FEN + detection/attribution heads) or "cnn" (plain raw-pixel CNN)
    sources: tuple[str, ...]  # attribution classes (training GMs + real); empty = detector only
    image_size: int
    fen_depth: int = 4
    fen_width: int = 16
    head_widths: tuple[int, ...] = (16, 32)
    cnn_widths: tuple[int, ...] = ()  # empty = (w, 2w, 3w) with w = fen_width
    spectral_head: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_NAMES:
            raise ValueError(f"unknown forensic model kind {self.kind!r}; known: {MODEL_NAMES}")
        w = self.fen_width
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        object.__setattr__(self, "head_widths", tuple(int(x) for x in self.head_widths))
        object.__setattr__(self, "cnn_widths", tuple(int(x) for x in self.cnn_widths or (w, 2 * w, 3 * w)))

    def build(self) -> nn.Module:
        if self.kind == "fen":
            return FingerprintClassifier(len(self.sources), self.fen_depth, self.fen_width, self.head_widths,
                                         self.image_size if self.spectral_head else 0)
        return PlainCNN(len(self.sources), self.cnn_widths)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"format_version": FORMAT_VERSION, "schema_version": SCHEMA_VERSION,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForensicSpec:
        if str(d.get("schema_version", "")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"forensic model saved with schema {d.get('schema_version')}, this code has {SCHEMA_VERSION}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


def balanced_class_weights(counts: Sequence[int]) -> np.ndarray:
    """scikit-learn's "balanced" weights, n / (k * count): every class weighs the same in the loss
    (the real class holds ~16x more images than one GM in the default collection; unweighted, the
    attributor learns to answer "real" for everything). Absent classes get weight 0."""
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    w = np.zeros_like(c)
    w[present] = c.sum() / (present.sum() * c[present])
    return w.astype(np.float32)


def n_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def task_loss(out: dict[str, torch.Tensor], is_fake: torch.Tensor, source: torch.Tensor | None,
              weights, task_scale: float, source_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """FEN model: models.heads.heads_loss (tasks x scale + constraints); plain CNN: the same task
    terms without constraints (it has no fingerprint). ``source_weight``: per-class CE weights."""
    if "fingerprint" in out:
        from gmparse.models.heads import heads_loss

        return heads_loss(out, is_fake, source, weights, task_scale, source_weight)
    det = F.binary_cross_entropy_with_logits(out["detection_logit"].float(), is_fake.float())
    total, log = task_scale * det, {"detection": float(det.detach())}
    if source is not None and "attribution_logits" in out:
        att = F.cross_entropy(out["attribution_logits"].float(), source.long(), weight=source_weight)
        total = total + task_scale * att
        log["attribution"] = float(att.detach())
    log["total"] = float(total.detach())
    return total, log


# --- features for linking ------------------------------------------------------------------------
def fingerprint_stats(fp: torch.Tensor, bins: int = 12) -> np.ndarray:
    """Pooled statistics of fingerprints [B,3,H,W]: per-channel mean |F| and std, and the
    radially averaged log spectrum of the gray fingerprint (``bins`` rings)."""
    from gmparse.models.constraints import spectrum, to_gray

    fp = fp.detach().float()
    spec = torch.log1p(spectrum(to_gray(fp)))  # [B,H,W], centred
    h, w = spec.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    r = torch.sqrt(yy.float() ** 2 + xx.float() ** 2)
    ring = torch.clamp((r / (r.max() + 1e-6) * bins).long(), max=bins - 1).flatten()
    flat = spec.flatten(1)
    radial = torch.zeros(len(fp), bins).index_add_(1, ring, flat) / torch.bincount(ring, minlength=bins).clamp(min=1)
    stats = torch.cat([fp.abs().mean(dim=(2, 3)), fp.std(dim=(2, 3)), radial], dim=1)
    return stats.numpy()


def pixel_stats(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Raw-pixel baseline features of uint8 [N,H,W,3]: per-channel mean, std and histograms."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    mean, std = x.mean(axis=(1, 2)), x.std(axis=(1, 2))
    idx = np.minimum((x * bins).astype(np.int64), bins - 1)
    hist = np.stack([np.stack([np.bincount(idx[i, :, :, c].ravel(), minlength=bins) for c in range(3)])
                     for i in range(len(x))]).reshape(len(x), -1) / float(x.shape[1] * x.shape[2])
    return np.concatenate([mean, std, hist], axis=1).astype(np.float32)


def perturb(images: torch.Tensor, kind: str, jpeg_quality: int = 75, resize_factor: float = 0.5) -> torch.Tensor:
    """uint8 [B,3,H,W] -> the same after 'clean' (nothing), 'jpeg' (torchvision v2.JPEG) or
    'resize' (down by ``resize_factor`` and back, antialiased)."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    if kind == "clean":
        return images
    if kind == "jpeg":
        return v2.JPEG(quality=int(jpeg_quality))(images)
    if kind == "resize":
        h, w = images.shape[-2:]
        small = TF.resize(images, [max(1, round(h * resize_factor)), max(1, round(w * resize_factor))], antialias=True)
        return TF.resize(small, [h, w], antialias=True)
    raise ValueError(f"unknown perturbation {kind!r}; known: {PERTURBATIONS}")


# --- inference wrapper ---------------------------------------------------------------------------
class ForensicModel:
    """Detector / attributor for inference: ``predict(images)`` -> fake probability, source
    probabilities, embedding; ``save``/``load`` as state dict + JSON (``weights_only=True``)."""

    def __init__(self, module: nn.Module, spec: ForensicSpec, batch_size: int = 128) -> None:
        self.module = module.eval()
        self.spec = spec
        self.batch_size = batch_size

    @property
    def sources(self) -> list[str]:
        return list(self.spec.sources)

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @torch.no_grad()
    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """uint8 [N,H,W,3] (or a list of [H,W,3] of any sizes) -> {'fake_prob' [N], 'source_probs'
        [N,K] (when it has an attribution head), 'embedding' [N,D]}."""
        from gmparse.data_pipeline.preprocess import normalize, resize

        arr = np.stack([resize(np.asarray(a, dtype=np.uint8), self.image_size) for a in images])
        outs: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(arr), self.batch_size):
            o = self.module(torch.from_numpy(normalize(arr[i : i + self.batch_size])))
            outs.setdefault("fake_prob", []).append(torch.sigmoid(o["detection_logit"]).numpy())
            outs.setdefault("embedding", []).append(o["embedding"].numpy())
            if "attribution_logits" in o:
                outs.setdefault("source_probs", []).append(torch.softmax(o["attribution_logits"], 1).numpy())
        return {k: np.concatenate(v) for k, v in outs.items()}

    def fingerprint(self, images: np.ndarray) -> np.ndarray | None:
        """float [N,3,S,S] fingerprints (FEN models only)."""
        if self.spec.kind != "fen":
            return None
        from gmparse.data_pipeline.preprocess import normalize, resize

        arr = np.stack([resize(np.asarray(a, dtype=np.uint8), self.image_size) for a in images])
        with torch.no_grad():
            return self.module.net.fen(torch.from_numpy(normalize(arr))).numpy()

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.module.state_dict().items()}, d / WEIGHTS_FILE)
        (d / META_FILE).write_text(json.dumps(self.spec.to_dict(), indent=2))
        return d

    @classmethod
    def from_state(cls, spec: ForensicSpec, state: dict[str, Any]) -> ForensicModel:
        module = spec.build()
        module.load_state_dict(state)
        return cls(module, spec)

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> ForensicModel:
        d = Path(directory)
        spec = ForensicSpec.from_dict(json.loads((d / META_FILE).read_text()))
        state = torch.load(d / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        return cls.from_state(spec, state)


