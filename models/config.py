"""ModelConfig: the architecture knobs of FEN + PN, with named presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

TASKS = ("parsing", "detection", "attribution")
MODEL_PRESETS = ("smoke", "default", "paper")


def check_known(cls: type, d: Mapping[str, Any], what: str) -> None:
    """A mapping's keys must be fields of the dataclass ``cls``: an unknown key is an error, not ignored."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(names)}")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (saved as JSON beside the weights)."""

    fen_depth: int = 10
    fen_width: int = 32
    pn_widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    pn_fc: int = 256
    pn_branch: tuple[int, ...] = (128, 32)
    image_size: int = 64
    variant: str = "direct"  # "direct" or "cluster" (journal version)
    n_clusters: int = 12
    dropout: float = 0.3
    #: what the PN reads: "fingerprint" (the paper), "spectrum" (the fingerprint's per-channel
    #: log-magnitude spectrum), "both" (6 channels) or "branch" (fingerprint + a linear spectral
    #: branch, models.pn.SpectralBranch); see models.parser.ParsingModel
    pn_input: str = "fingerprint"
    #: with pn_input="branch": the spectral branch also reads the input image's high-pass residual
    #: (image minus its 3x3 box blur), not only the fingerprint (not in the paper: docs/method.md)
    spectral_residual: bool = False
    #: also give the PN a position-aware linear branch over the fingerprint and the image's
    #: high-pass residual, pixel by pixel (models.pn.SpatialBranch; not in the paper: docs/method.md)
    spatial_branch: bool = False
    #: also give the PN the input image's pixel-value statistics (models.pn.ImageStatsBranch;
    #: not in the paper: docs/method.md)
    image_stats: bool = False
    #: train this many FEN+PN networks side by side, each from its own initialization and with
    #: its own loss, and predict with their average (a deep ensemble; not in the paper: docs/method.md)
    ensemble: int = 1

    @classmethod
    def preset(cls, name: str, task: str = "parsing") -> ModelConfig:
        """The networks the job presets train: 'smoke' (tiny, CPU tests), 'default' (what ``make run``
        trains and registers: a two-network ensemble, 6x24 FEN at 32 px, with the spectral and image
        statistics branches) and 'paper' (17 layers / 64 channels at 64 px). ``ModelConfig()`` itself
        is no preset: its fields' values are the neutral ones (every branch beyond the paper off)."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        smoke = cls(fen_depth=4, fen_width=16, pn_widths=(16, 32, 64), pn_fc=64, pn_branch=(32, 16),
                    image_size=32, dropout=0.0)
        if name == "smoke":
            cfg = smoke
        elif name == "default":
            cfg = replace(smoke, fen_depth=6, fen_width=24, pn_input="branch", spectral_residual=True,
                          image_stats=True, ensemble=2)
        elif name == "paper":
            cfg = cls(fen_depth=17, fen_width=64, pn_widths=(32, 64, 128, 256, 512), pn_fc=512,
                      pn_branch=(256, 64), image_size=64, dropout=0.5)
        else:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(MODEL_PRESETS)}")
        if task != "parsing" and name == "paper":
            cfg = replace(cfg, image_size=128)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        check_known(cls, d, "ModelConfig fields")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class ConstraintWeights:
    """Weights of the four constraints; defaults are the paper's parsing weights."""

    magnitude: float = 0.1
    spectrum: float = 0.05
    repetitive: float = 0.001
    symmetry: float = 1.0

    @classmethod
    def parsing(cls) -> ConstraintWeights:
        return cls()

    @classmethod
    def detection(cls) -> ConstraintWeights:
        """Weights the paper uses for deepfake detection and attribution."""
        return cls(magnitude=0.01, spectrum=0.05, repetitive=0.001, symmetry=0.1)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> ConstraintWeights:
        """Build from a (possibly partial) mapping; unknown keys are an error, not ignored."""
        check_known(cls, d, "constraint weights")
        return cls(**{k: float(v) for k, v in d.items()})
