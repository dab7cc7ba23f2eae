"""Tagged building blocks of zoo networks: introspection recognises GMs by these classes.

A ``Block`` marks a network block (its conv layers are the "layers per block"), a
``SkipConnection`` marks a skip path (residual or U-Net), ``AdaIN`` is a real adaptive
instance norm whose style comes from a latent through an FC layer, ``CausalConv2d`` keeps
the autoregressive model causal over rows, and ``OutputAffine`` maps the last
non-linearity's range onto what a family needs without adding a layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmparse.data_pipeline.schema import DISCRETE, NONLINEARITIES

NORM_TYPES: tuple[str, ...] = DISCRETE["norm_type"]

#: hidden non-linearities (the last layer / last block may use any of NONLINEARITIES)
HIDDEN_ACTS: tuple[str, ...] = ("relu", "leaky_relu")


def make_act(name: str) -> nn.Module:
    """A non-linearity module by its schema name."""
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown non-linearity {name!r}; known: {list(NONLINEARITIES)}")


class AdaIN(nn.Module):
    """Adaptive instance norm: instance-normalize, then scale/shift predicted from a style
    vector by an FC layer (StyleGAN/MUNIT). The owner sets ``style`` before each forward."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.style_fc = nn.Linear(style_dim, 2 * channels)
        self.style: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style is None:
            raise RuntimeError("AdaIN needs a style vector: set module.style before forward")
        gamma, beta = self.style_fc(self.style).chunk(2, dim=1)
        return F.instance_norm(x) * (1 + gamma[..., None, None]) + beta[..., None, None]


def make_norm(kind: str, channels: int, style_dim: int) -> nn.Module | None:
    """A normalization layer by its schema name (None for "none")."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "adaptive_instance":
        return AdaIN(channels, style_dim)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm type {kind!r}; known: {list(NORM_TYPES)}")


class CausalConv2d(nn.Conv2d):
    """Conv whose kernel never looks at rows below its centre (row-autoregressive models)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        mask = torch.ones_like(self.weight)
        kh = self.weight.shape[2]
        mask[:, :, kh // 2 + 1 :, :] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class SkipConnection(nn.Module):
    """A skip path (identity, or a 1x1 projection when widths differ). Its presence is what
    introspection reports as ``skip_connection = yes``."""

    def __init__(self, in_ch: int, out_ch: int, conv_cls: type[nn.Conv2d] = nn.Conv2d) -> None:
        super().__init__()
        self.proj: nn.Module = conv_cls(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def mlp(d_in: int, hidden: int, d_out: int, layers: int, act: str) -> nn.Sequential:
    """``layers`` (Linear -> act) pairs, ``d_in`` -> ``hidden`` ... -> ``d_out``: the FC stems,
    embeddings and mapping networks of the zoo's generators."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, d_out if i == layers - 1 else hidden), make_act(act)]
    return nn.Sequential(*mods)


def conv_unit(
    in_ch: int, out_ch: int, norm: str, act: str, style_dim: int, conv_cls: type[nn.Conv2d] = nn.Conv2d
) -> nn.Sequential:
    """A plain (non-block) layer: conv3x3 -> norm -> act."""
    mods: list[nn.Module] = [conv_cls(in_ch, out_ch, 3, padding=1)]
    n = make_norm(norm, out_ch, style_dim)
    if n is not None:
        mods.append(n)
    mods.append(make_act(act))
    return nn.Sequential(*mods)


class Block(nn.Module):
    """A network block of ``layers`` conv(-norm) layers; residual when ``residual``.

    Registration order equals forward order (body, skip, out_act), so the block's final
    non-linearity is its last registered activation module.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        layers: int,
        norm: str,
        act: str,
        style_dim: int,
        residual: bool,
        conv_cls: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("a Block needs at least one layer")
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(conv_cls(in_ch if i == 0 else out_ch, out_ch, 3, padding=1))
            n = make_norm(norm, out_ch, style_dim)
            if n is not None:
                mods.append(n)
            if i < layers - 1:
                mods.append(make_act(act))
        self.body = nn.Sequential(*mods)
        self.skip = SkipConnection(in_ch, out_ch, conv_cls) if residual else None
        self.out_act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.out_act(y)


#: (scale, shift) applied after the last non-linearity, per output kind, so that every
#: non-linearity can end a network: images live in [-1, 1], noise in about [-3, 3],
#: logits anywhere.
OUTPUT_AFFINE: dict[str, dict[str, tuple[float, float]]] = {
    "image": {"tanh": (1.0, 0.0), "sigmoid": (2.0, -1.0), "relu": (1.0, -1.0), "leaky_relu": (1.0, 0.0)},
    "noise": {"tanh": (3.0, 0.0), "sigmoid": (6.0, -3.0), "relu": (1.0, -3.0), "leaky_relu": (1.0, 0.0)},
    "logits": {"tanh": (8.0, 0.0), "sigmoid": (16.0, -8.0), "relu": (1.0, 0.0), "leaky_relu": (1.0, 0.0)},
}


class OutputAffine(nn.Module):
    """Fixed scale and shift (no parameters, not a layer): y = scale * x + shift."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"
