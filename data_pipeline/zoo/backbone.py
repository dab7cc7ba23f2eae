"""One configurable generator backbone shared by every zoo family.

Two input modes, one body:

* ``latent``: z -> [FC stem] -> up-sampling stages to the image size (a DCGAN/StyleGAN-like
  decoder; GAN generators and VAE decoders);
* ``image``: x (+ a conditioning vector through an FC embedding) -> conv in (an
  image-to-image network; autoencoders, diffusion denoisers, autoregressive models).

With ``downsampling`` both modes then run an hourglass at full resolution (down stages,
mid blocks at the bottom, up stages; U-Net skips when ``skip``). Without it, mid blocks sit
at the lowest resolution of the decoder (latent) or at full resolution (image). Every
schema knob (depth, blocks, layers per block, width, FC layers, pooling, normalization,
last-layer / last-block non-linearity, up-sampling type, skips, down-sampling) is a field
of :class:`ArchSpec`; the labels are measured from the built module, not read from here.
Modules are registered in forward order so introspection can rely on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmparse.data_pipeline.schema import DISCRETE

from .layers import (
    OUTPUT_AFFINE,
    AdaIN,
    Block,
    OutputAffine,
    SkipConnection,
    conv_unit,
    make_act,
    mlp,
)

UPSAMPLING: tuple[str, ...] = DISCRETE["upsampling"]
POOLING: tuple[str, ...] = ("none", "avg", "max")
#: smallest feature map the hourglass goes down to (instance norm needs > 1 element)
MIN_RESOLUTION = 4
MIN_CHANNELS = 8


def channels_at(width: int, res: int) -> int:
    """Channels of a feature map at resolution ``res``: ``width`` at 16x16, doubling per
    halving (capped at 4x width) and halving per doubling (floored at MIN_CHANNELS), so
    full-resolution layers stay cheap on a CPU (the DCGAN pattern)."""
    return int(min(4 * width, max(MIN_CHANNELS, width * 16 // res)))


@dataclass(frozen=True)
class ArchSpec:
    """Architecture knobs of one zoo network (what the builder is asked to build)."""

    width: int = 32  # channels at 16x16, see channels_at
    fc_layers: int = 1
    fc_hidden: int = 64
    stage_blocks: bool = False  # resampling stages are Blocks (else plain conv units)
    mid_blocks: int = 1
    layers_per_block: int = 2
    norm: str = "batch"
    act: str = "relu"  # hidden non-linearity
    block_act: str = "relu"  # final non-linearity of the last block (or last hidden layer)
    last_act: str = "tanh"
    upsampling: str = "nearest"
    skip: bool = False
    downsampling: bool = False
    down_stages: int = 1
    pool: str = "none"  # how down-sampling happens: strided conv ("none") or a pooling layer
    z_dim: int = 32
    implementation: str = "backbone"  # how the network is written: generators.ALL_IMPLEMENTATIONS

    def to_dict(self) -> dict:
        return asdict(self)


class Backbone(nn.Module):
    """The shared generator network; see the module docstring for its layout."""

    def __init__(
        self,
        arch: ArchSpec,
        image_size: int,
        mode: str = "latent",
        in_channels: int = 3,
        out_channels: int = 3,
        cond_dim: int = 0,
        output_kind: str = "image",
        conv_cls: type[nn.Conv2d] = nn.Conv2d,
    ) -> None:
        super().__init__()
        if mode not in ("latent", "image"):
            raise ValueError(f"mode must be latent or image, got {mode!r}")
        if image_size < MIN_RESOLUTION or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= {MIN_RESOLUTION}, got {image_size}")
        if arch.upsampling not in UPSAMPLING or arch.pool not in POOLING:
            raise ValueError(f"bad upsampling {arch.upsampling!r} or pool {arch.pool!r}")
        self.arch, self.mode, self.image_size = arch, mode, image_size
        a = arch
        w = arch.width
        n_down = a.down_stages if a.downsampling else 0
        if image_size >> n_down < MIN_RESOLUTION:
            raise ValueError(f"{n_down} down stages take {image_size}px below {MIN_RESOLUTION}px")

        self.fc: nn.Module | None = None
        self.emb: nn.Module | None = None
        if mode == "latent":
            style_dim = a.z_dim
            if a.fc_layers > 0:
                ch = channels_at(w, MIN_RESOLUTION)
                self.fc = mlp(a.z_dim, a.fc_hidden, ch * MIN_RESOLUTION**2, a.fc_layers, a.act)
                res = MIN_RESOLUTION
            else:
                res, ch = 1, a.z_dim
            self.stem_res, self.stem_ch = res, ch
            self.bottom_ch = 0
        else:
            if a.fc_layers > 0:
                if cond_dim <= 0:
                    raise ValueError("FC embedding layers in image mode need a conditioning vector")
                self.bottom_ch = channels_at(w, image_size >> n_down)
                self.emb = mlp(cond_dim, a.fc_hidden, self.bottom_ch, a.fc_layers, a.act)
                style_dim = self.bottom_ch
            else:
                style_dim = cond_dim
            if a.norm == "adaptive_instance" and style_dim <= 0:
                raise ValueError("AdaIN in image mode needs a conditioning vector")
            res, ch = image_size, channels_at(w, image_size)
            self.conv_in = conv_unit(in_channels, ch, a.norm, a.act, style_dim, conv_cls)

        def unit(cin: int, cout: int) -> nn.Module:
            if a.stage_blocks:
                return Block(cin, cout, a.layers_per_block, a.norm, a.act, style_dim, a.skip, conv_cls)
            return conv_unit(cin, cout, a.norm, a.act, style_dim, conv_cls)

        def up_stage(cin: int, cout: int) -> nn.Module:
            if a.upsampling == "transposed_conv":
                return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), unit(cout, cout))
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), unit(cin, cout))

        def down_stage(cin: int, cout: int) -> nn.Module:
            if a.pool == "avg":
                op: nn.Module = nn.AvgPool2d(2)
            elif a.pool == "max":
                op = nn.MaxPool2d(2)
            else:
                op = conv_cls(cin, cin, 4, stride=2, padding=1)
            return nn.Sequential(op, unit(cin, cout))

        def mid(cin: int, cout: int) -> list[nn.Module]:
            return [
                Block(cin if i == 0 else cout, cout, a.layers_per_block, a.norm, a.act, style_dim, a.skip, conv_cls)
                for i in range(a.mid_blocks)
            ]

        stages: list[nn.Module] = []
        kinds: list[str] = []
        if mode == "latent":
            mid_placed = n_down > 0
            while res < image_size:
                if not mid_placed and res >= MIN_RESOLUTION:
                    stages += mid(ch, channels_at(w, res))
                    kinds += ["mid"] * a.mid_blocks
                    ch = channels_at(w, res) if a.mid_blocks else ch
                    mid_placed = True
                stages.append(up_stage(ch, channels_at(w, res * 2)))
                kinds.append("up")
                res, ch = res * 2, channels_at(w, res * 2)
            if not mid_placed:
                stages += mid(ch, ch)
                kinds += ["mid"] * a.mid_blocks
        skip_channels = []
        for _ in range(n_down):
            skip_channels.append(ch)
            stages.append(down_stage(ch, channels_at(w, res // 2)))
            kinds.append("down")
            res, ch = res // 2, channels_at(w, res // 2)
        if mode == "image" or n_down > 0:
            stages += mid(ch, ch)
            kinds += ["mid"] * a.mid_blocks
        for _ in range(n_down):
            stages.append(up_stage(ch, channels_at(w, res * 2)))
            kinds.append("up_skip")
            res, ch = res * 2, channels_at(w, res * 2)
        self.stages = nn.ModuleList(stages)
        self._kinds = kinds
        self.unet_skips = nn.ModuleList(
            [SkipConnection(c, c, conv_cls) for c in reversed(skip_channels)] if a.skip else []
        )
        self._bias_at = n_down  # image mode: the embedding is added at the bottleneck
        scale, shift = OUTPUT_AFFINE[output_kind][a.last_act]
        self.head = nn.Sequential(
            conv_cls(ch, out_channels, 3, padding=1), make_act(a.last_act), OutputAffine(scale, shift)
        )
        self._set_last_hidden_act(a.block_act)
        self._adains = [m for m in self.modules() if isinstance(m, AdaIN)]

    def _set_last_hidden_act(self, name: str) -> None:
        """Give the last Block (or, without blocks, the last hidden layer) its non-linearity."""
        blocks = [m for m in self.modules() if isinstance(m, Block)]
        if blocks:
            blocks[-1].out_act = make_act(name)
            return
        head_ids = {id(m) for m in self.head.modules()}
        acts = [
            (n, m)
            for n, m in self.named_modules()
            if isinstance(m, nn.ReLU | nn.LeakyReLU | nn.Tanh | nn.Sigmoid) and id(m) not in head_ids
        ]
        if not acts:
            return
        path, _ = acts[-1]
        parent_path, _, attr = path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        setattr(parent, attr, make_act(name))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        bias = None
        if self.mode == "latent":
            style = x
            if self.fc is not None:
                h = self.fc(x).view(b, self.stem_ch, MIN_RESOLUTION, MIN_RESOLUTION)
            else:
                h = x.view(b, -1, 1, 1)
        else:
            style = cond
            if self.emb is not None:
                style = self.emb(cond)
                bias = style[..., None, None]
        for m in self._adains:
            m.style = style
        if self.mode == "image":
            h = self.conv_in(x)
        saved: list[torch.Tensor] = []
        j = 0
        for i, (stage, kind) in enumerate(zip(self.stages, self._kinds)):
            if i == self._bias_at and bias is not None:
                h = h + bias
                bias = None
            if kind == "down":
                saved.append(h)
            h = stage(h)
            if kind == "up_skip":
                skip_in = saved.pop()
                if len(self.unet_skips):
                    h = h + self.unet_skips[j](skip_in)
                j += 1
        if bias is not None:
            h = h + bias
        return self.head(h)


def stage_count(image_size: int) -> int:
    """How many factor-2 steps separate the image size from the minimum resolution."""
    return int(math.log2(image_size // MIN_RESOLUTION))
