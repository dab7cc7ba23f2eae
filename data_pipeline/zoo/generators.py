"""Latent generators in the styles real GM code is written in, beside the shared backbone.

Every zoo GM used to come from one module (``backbone.Backbone``); a parser trained on them may
learn that code's habits. ``ArchSpec.implementation`` picks how a GAN generator or VAE decoder
is written, from the same knobs:

* ``backbone``: the configurable shared backbone (FC stem, up-sampling stages, blocks, U-Net).
* ``dcgan``: a plain ``nn.Sequential`` stack as in DCGAN code: a 4x4 transposed conv from the
  latent (or an FC projection), then one (transposed conv | up-sample + conv) -> norm -> act per
  doubling, a 3x3 conv and the output non-linearity. No blocks, no skips.
* ``resnet``: SNGAN/BigGAN-style: an FC projection to 4x4, then one residual up-block per
  doubling (norm -> act -> up -> conv -> norm -> act -> conv, plus an up-sampled 1x1 shortcut),
  then norm -> act -> conv and the output non-linearity.

The labels are measured from the built module as for the backbone (``introspect``): the
residual up-block is a :class:`~.layers.Block` to it, its shortcut a ``SkipConnection``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import MIN_RESOLUTION, ArchSpec, Backbone, channels_at
from .layers import OUTPUT_AFFINE, Block, OutputAffine, SkipConnection, make_act, make_norm

#: implementations each family can be written in (the first is the default)
IMPLEMENTATIONS: dict[str, tuple[str, ...]] = {
    "gan": ("backbone", "dcgan", "resnet"),
    "vae": ("backbone", "dcgan", "resnet"),
}
ALL_IMPLEMENTATIONS: tuple[str, ...] = ("backbone", "dcgan", "resnet")
#: the discrete classes an implementation fixes or restricts (others: as the family allows)
RESTRICTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "dcgan": {"norm_type": ("batch", "none"), "skip_connection": ("no",), "downsampling": ("no",)},
    "resnet": {"norm_type": ("batch", "none"), "skip_connection": ("yes",), "downsampling": ("no",)},
}


def _up(kind: str, cin: int, cout: int) -> list[nn.Module]:
    if kind == "transposed_conv":
        return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1)]


def _norm(kind: str, ch: int) -> list[nn.Module]:
    n = make_norm(kind, ch, 0)
    return [n] if n is not None else []


def _head(arch: ArchSpec, ch: int) -> list[nn.Module]:
    scale, shift = OUTPUT_AFFINE["image"][arch.last_act]
    return [nn.Conv2d(ch, 3, 3, padding=1), make_act(arch.last_act), OutputAffine(scale, shift)]


class DCGANGenerator(nn.Sequential):
    """z [B, z_dim] -> image: the plain stack of DCGAN reference code (see module docstring)."""

    def __init__(self, arch: ArchSpec, image_size: int) -> None:
        w, res = arch.width, MIN_RESOLUTION
        ch = channels_at(w, res)
        mods: list[nn.Module] = []
        if arch.fc_layers > 0:  # "project and reshape"
            for i in range(arch.fc_layers):
                last = i == arch.fc_layers - 1
                mods += [nn.Linear(arch.z_dim if i == 0 else arch.fc_hidden, ch * res * res if last else arch.fc_hidden),
                         make_act(arch.act)]
            mods.append(nn.Unflatten(1, (ch, res, res)))
        else:
            mods += [nn.Unflatten(1, (arch.z_dim, 1, 1)), nn.ConvTranspose2d(arch.z_dim, ch, 4, 1, 0),
                     *_norm(arch.norm, ch), make_act(arch.act)]
        while res < image_size:
            out = channels_at(w, res * 2)
            mods += [*_up(arch.upsampling, ch, out), *_norm(arch.norm, out), make_act(arch.act)]
            ch, res = out, res * 2
        mods[-1] = make_act(arch.block_act)  # the last hidden layer's non-linearity
        super().__init__(*mods, *_head(arch, ch))


class ResidualUpBlock(Block):
    """Pre-activation residual up-sampling block (SNGAN / BigGAN generators): body
    norm -> act -> up -> conv -> norm -> act -> conv, shortcut up -> 1x1 conv, then ``out_act``.

    A :class:`Block` to introspection (it counts its convs, shortcut included), written here
    rather than through ``Block.__init__``, which builds the backbone's plain conv stack."""

    def __init__(self, cin: int, cout: int, norm: str, act: str, upsampling: str, out_act: str) -> None:
        nn.Module.__init__(self)
        self.body = nn.Sequential(*_norm(norm, cin), make_act(act), *_up(upsampling, cin, cout),
                                  *_norm(norm, cout), make_act(act), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = SkipConnection(cin, cout)
        self.out_act = make_act(out_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out_act(self.body(x) + shortcut)


class ResNetGenerator(nn.Module):
    """z [B, z_dim] -> image: SNGAN/BigGAN-style residual generator (see module docstring)."""

    def __init__(self, arch: ArchSpec, image_size: int) -> None:
        super().__init__()
        w, res = arch.width, MIN_RESOLUTION
        ch = channels_at(w, res)
        self.stem = nn.Sequential(nn.Linear(arch.z_dim, ch * res * res), nn.Unflatten(1, (ch, res, res)))
        blocks = []
        while res < image_size:
            out = channels_at(w, res * 2)
            blocks.append(ResidualUpBlock(ch, out, arch.norm, arch.act, arch.upsampling, arch.act))
            ch, res = out, res * 2
        blocks[-1].out_act = make_act(arch.block_act)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_norm(arch.norm, ch), *_head(arch, ch))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(z)))


def latent_generator(arch: ArchSpec, image_size: int) -> nn.Module:
    """The GAN generator / VAE decoder of ``arch``, written as ``arch.implementation`` says."""
    if arch.implementation == "backbone":
        return Backbone(arch, image_size, mode="latent", output_kind="image")
    if arch.implementation == "dcgan":
        return DCGANGenerator(arch, image_size)
    if arch.implementation == "resnet":
        return ResNetGenerator(arch, image_size)
    raise ValueError(f"unknown implementation {arch.implementation!r}; known: {list(ALL_IMPLEMENTATIONS)}")
