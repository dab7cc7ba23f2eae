"""FEN + PN as one nn.Module (``ParsingModel``, DDP-wrappable) and the ``Parser`` convenience wrapper.

``Parser`` turns images into named, de-normalized hyperparameters (plain dicts) and
saves/loads itself as state dicts + a small JSON, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gmparse.data_pipeline import preprocess
from gmparse.data_pipeline.schema import (
    CONTINUOUS,
    DISCRETE,
    DISCRETE_NAMES,
    GROUP_NAMES,
    LOSS_TYPES,
    SCHEMA_VERSION,
    Ranges,
    TargetArrays,
)

from .config import ModelConfig
from .fen import FEN
from .pn import ImageStatsBranch, ParsingNetwork, SpatialBranch, SpectralBranch, fit_clusters
from .predictions import Predictions

WEIGHTS_FILE = "model.pt"
META_FILE = "parser.json"
FORMAT_VERSION = 1


PN_INPUTS = ("fingerprint", "spectrum", "both", "branch")


def log_spectrum(fingerprint: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> centred log1p |FFT2| per channel, same shape (differentiable).

    GM artefacts (transposed-convolution checkerboards, up-sampling grids) are periodic, so
    they are peaks at fixed places of the spectrum wherever they sit in the image.
    """
    return torch.log1p(torch.fft.fftshift(torch.fft.fft2(fingerprint.float()), dim=(-2, -1)).abs())


def high_pass(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] minus its 3x3 box blur (reflected borders): the residual spectral detectors read."""
    blur = nn.functional.avg_pool2d(nn.functional.pad(images, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    return images - blur


class ParsingModel(nn.Module):
    """FEN followed by PN; ``forward`` returns the PN outputs plus 'fingerprint'.

    ``config.pn_input`` picks what the PN reads: the fingerprint (the paper), its
    log-magnitude spectrum, both stacked as 6 channels (the spectrum through a BatchNorm so its
    scale is learned), or ``branch``: the fingerprint through the conv encoder plus a
    :class:`~models.pn.SpectralBranch` over its spectrum (with ``spectral_residual``, over the
    image's high-pass residual's spectrum too). ``image_stats`` adds an
    :class:`~models.pn.ImageStatsBranch` over the input's values, ``spatial_branch`` a
    :class:`~models.pn.SpatialBranch` over the fingerprint and residual pixel by pixel. All beyond
    the paper: docs/method.md, "What differs from the paper".
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        if c.pn_input not in PN_INPUTS:
            raise ValueError(f"pn_input must be one of {PN_INPUTS}, got {c.pn_input!r}")
        if c.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {c.ensemble}")
        self.members: nn.ModuleList | None = None
        if c.ensemble > 1:  # K independent networks; see forward
            self.members = nn.ModuleList(ParsingModel(replace(c, ensemble=1)) for _ in range(c.ensemble))
            return
        self.fen = FEN(c.fen_depth, c.fen_width)
        channels = 6 if c.pn_input == "both" else 3
        self.spectrum_norm = nn.BatchNorm2d(3) if c.pn_input in ("spectrum", "both") else None
        self.spectral = (SpectralBranch(c.image_size, c.pn_fc, c.dropout, channels=6 if c.spectral_residual else 3)
                         if c.pn_input == "branch" else None)
        self.image_stats = ImageStatsBranch(c.pn_fc, c.dropout) if c.image_stats else None
        self.spatial = SpatialBranch(c.image_size, c.pn_fc, c.dropout) if c.spatial_branch else None
        self.pn = ParsingNetwork(c.pn_widths, c.pn_fc, c.pn_branch, c.dropout, c.variant, c.n_clusters, channels)

    def pn_input(self, fingerprint: torch.Tensor) -> torch.Tensor:
        if self.spectrum_norm is None:
            return fingerprint
        spec = self.spectrum_norm(log_spectrum(fingerprint))
        return spec if self.config.pn_input == "spectrum" else torch.cat([fingerprint, spec], dim=1)

    def set_centres(self, centres: np.ndarray | torch.Tensor) -> None:
        """Cluster variant: the continuous vectors' k-means centres, into the PN (of every member)."""
        for m in self.members if self.members is not None else [self]:
            m.pn.set_centres(centres)

    def fit_centres(self, gm_targets: TargetArrays, seed: int = 0) -> np.ndarray:
        """Cluster variant: k-means the training GMs' continuous vectors (one row per GM) into the PN."""
        centres = fit_clusters(gm_targets, self.config.n_clusters, seed)
        self.set_centres(centres)
        return centres

    def fingerprint(self, images: torch.Tensor) -> torch.Tensor:
        """The FEN's fingerprint of normalized images (an ensemble's: its first member's, for figures)."""
        return (self.members[0] if self.members is not None else self).fen(images)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """Normalized images [B,3,H,W] -> PN outputs + 'fingerprint' (what compute_loss takes).

        An ensemble returns its members' average prediction (continuous values and class, group
        and loss-type probabilities; the discrete logits are the log of the averaged
        probabilities), the first member's fingerprint (for figures) and ``members``, every
        member's own outputs, which ``compute_loss`` trains each on."""
        if self.members is not None:
            return average_outputs([m(images) for m in self.members])
        fingerprint = self.fen(images)
        with_residual = (torch.cat([fingerprint, high_pass(images)], dim=1)  # computed once for both branches
                         if self.spatial is not None or (self.spectral is not None and self.config.spectral_residual)
                         else None)
        extras = []
        if self.spectral is not None:
            extras.append(self.spectral(with_residual if self.config.spectral_residual else fingerprint))
        if self.image_stats is not None:
            extras.append(self.image_stats(images))
        if self.spatial is not None:
            extras.append(self.spatial(with_residual))
        extra = sum(extras[1:], extras[0]) if extras else None  # left to right, as before
        out = self.pn(self.pn_input(fingerprint), extra)
        out["fingerprint"] = fingerprint
        return out


def average_outputs(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """An ensemble's prediction from its members' outputs (see ``ParsingModel.forward``)."""
    def mean(key: str) -> torch.Tensor:
        return torch.stack([o[key].float() for o in outs]).mean(dim=0)

    n_disc = len(outs[0]["discrete_logits"])
    probs = [torch.stack([o["discrete_logits"][j].float().softmax(dim=1) for o in outs]).mean(dim=0)
             for j in range(n_disc)]
    return {"continuous": mean("continuous"), "discrete_logits": [p.clamp_min(1e-12).log() for p in probs],
            "group_prob": mean("group_prob"), "loss_prob": mean("loss_prob"),
            "fingerprint": outs[0]["fingerprint"], "members": outs}


def prepare_images(images: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N,H,W,3] (or one [H,W,3]) -> resized, normalized float [N,3,size,size].

    Float tensors/arrays [N,3,H,W] are taken as already normalized and passed through.
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images if images.ndim == 4 else images.unsqueeze(0)
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if np.issubdtype(arr.dtype, np.floating):
        return torch.as_tensor(arr if arr.ndim == 4 else arr[None], dtype=torch.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N,H,W,3] images, got shape {arr.shape}")
    arr = np.stack([preprocess.resize(np.asarray(a, dtype=np.uint8), size) for a in arr])
    return torch.from_numpy(preprocess.normalize(arr))


class Parser:
    """Inference wrapper: ``predict(images)`` -> list of plain dicts, ``save``/``load``."""

    def __init__(self, model: ParsingModel, ranges: Ranges, batch_size: int = 64) -> None:
        self.model = model
        self.ranges = ranges
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, config: ModelConfig, ranges: Ranges) -> Parser:
        return cls(ParsingModel(config), ranges)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @torch.no_grad()
    def predict_arrays(self, images: np.ndarray | torch.Tensor) -> Predictions:
        """Images -> numpy Predictions (probabilities), in eval mode and batches."""
        x = prepare_images(images, self.config.image_size)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            parts = [
                Predictions.from_outputs(self.model(x[i : i + self.batch_size].to(device)))
                for i in range(0, len(x), self.batch_size)
            ]
        finally:
            self.model.train(was_training)
        return Predictions.concat(parts)

    def predict_fitted(self, images: Sequence[np.ndarray] | np.ndarray, fit_mode: str = "tile") -> Predictions:
        """uint8 images of any size -> one Predictions row per image.

        Each image is fitted to the model's input by :func:`data_pipeline.preprocess.fit_views`
        (``tile``: its native-resolution tiles, whose predictions are averaged; resizing
        low-passes away the artefacts the parser reads, benchmarks/bench_fit_mode.py).
        """
        views, owner = preprocess.fit_views(images, self.config.image_size, fit_mode)
        _, pred = self.predict_arrays(views).aggregate(owner)
        return pred

    def predict(self, images: np.ndarray | torch.Tensor, aggregate: bool = False) -> list[dict[str, Any]] | dict[str, Any]:
        """Named hyperparameters per image; with ``aggregate=True`` one dict averaged over all images
        (use it for images of one GM)."""
        pred = self.predict_arrays(images)
        if aggregate:
            _, pred = pred.aggregate(np.zeros(len(pred), dtype=np.int64))
            return self.describe(pred)[0]
        return self.describe(pred)

    def describe(self, pred: Predictions) -> list[dict[str, Any]]:
        """Predictions -> plain dicts with names, raw values (via the ranges) and probabilities."""
        raw = self.ranges.denormalize(pred.continuous)
        rows = []
        for i in range(len(pred)):
            discrete = {}
            for j, name in enumerate(DISCRETE_NAMES):
                probs = pred.discrete_probs[j][i]
                discrete[name] = {
                    "class": DISCRETE[name][int(probs.argmax())],
                    "probs": {c: float(p) for c, p in zip(DISCRETE[name], probs)},
                }
            rows.append(
                {
                    "continuous": {k: float(v) for k, v in zip(CONTINUOUS, pred.continuous[i])},
                    "continuous_raw": {k: float(v) for k, v in zip(CONTINUOUS, raw[i])},
                    "discrete": discrete,
                    "loss_types": {t: float(p) for t, p in zip(LOSS_TYPES, pred.loss_prob[i])},
                    "loss_groups": {g: float(p) for g, p in zip(GROUP_NAMES, pred.group_prob[i])},
                }
            )
        return rows

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, d / WEIGHTS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "ranges": self.ranges.to_dict(),
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Parser:
        d = Path(directory)
        meta = json.loads((d / META_FILE).read_text())
        if str(meta["schema_version"]).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"parser saved with schema {meta['schema_version']}, this code has {SCHEMA_VERSION}")
        model = ParsingModel(ModelConfig.from_dict(meta["config"]))
        state = torch.load(d / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        model.eval()
        return cls(model, Ranges.from_dict(meta["ranges"]))

