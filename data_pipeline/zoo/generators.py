"""Generators in the styles real GM code is written in, beside the shared backbone.

Every zoo GM used to come from one module (``backbone.Backbone``); a parser trained on them may
learn that code's habits. ``ArchSpec.implementation`` picks how a family's network is written,
from the same knobs:

* ``backbone``: the configurable shared backbone (FC stem, up-sampling stages, blocks, U-Net).
* ``dcgan`` (GAN generator, VAE decoder): a plain ``nn.Sequential`` stack as in DCGAN code: a
  4x4 transposed conv from the latent (or an FC projection), then one (transposed conv |
  up-sample + conv) -> norm -> act per doubling, a 3x3 conv and the output non-linearity.
  No blocks, no skips.
* ``resnet`` (GAN generator, VAE decoder): SNGAN/BigGAN-style: an FC projection to 4x4, then
  one residual up-block per doubling (norm -> act -> up -> conv -> norm -> act -> conv, plus an
  up-sampled 1x1 shortcut), then norm -> act -> conv and the output non-linearity.
* ``stylegan`` (GAN generator): a style-based generator: a mapping MLP from the pixel-normed
  latent to a style ``w``, a learned constant 4x4 input, then per doubling a synthesis block of
  two (conv -> per-pixel noise -> act) layers styled by ``w`` -- through AdaIN after each
  layer (StyleGAN, ``norm=adaptive_instance``) or through modulated, demodulated convolutions
  (StyleGAN2, ``norm=none``) -- and a 1x1 toRGB conv with the output non-linearity.
* ``unet`` (autoencoder, diffusion denoiser): a U-Net written as image-to-image and diffusion
  code writes it: conv in, per level an encoder block then down-sampling (strided conv or
  pooling), bottleneck blocks, per level up-sampling then the encoder's features *concatenated*
  (not added) and a decoder block, conv out. The conditioning vector (colour statistics, or the
  diffusion timestep's embedding) goes through an MLP and is added inside every block, as in
  DDPM. Diffusion denoisers use residual blocks (DDPM), autoencoders plain conv-norm-act blocks
  (pix2pix).

The labels are measured from the built module as for the backbone (``introspect``): every block
here is a :class:`~.layers.Block` to it, every shortcut or concatenated skip a ``SkipConnection``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import MIN_RESOLUTION, ArchSpec, Backbone, channels_at
from .layers import OUTPUT_AFFINE, AdaIN, Block, OutputAffine, SkipConnection, make_act, make_norm, mlp

#: implementations each family can be written in (the first is the default)
IMPLEMENTATIONS: dict[str, tuple[str, ...]] = {
    "gan": ("backbone", "dcgan", "resnet", "stylegan"),
    "vae": ("backbone", "dcgan", "resnet"),
    "autoencoder": ("backbone", "unet"),
    "diffusion": ("backbone", "unet"),
}
ALL_IMPLEMENTATIONS: tuple[str, ...] = ("backbone", "dcgan", "resnet", "stylegan", "unet")
#: the discrete classes an implementation fixes or restricts (others: as the family allows)
RESTRICTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "dcgan": {"norm_type": ("batch", "none"), "skip_connection": ("no",), "downsampling": ("no",)},
    "resnet": {"norm_type": ("batch", "none"), "skip_connection": ("yes",), "downsampling": ("no",)},
    "stylegan": {"norm_type": ("adaptive_instance", "none"), "skip_connection": ("no",), "downsampling": ("no",)},
    "unet": {"norm_type": ("batch", "instance", "none"), "skip_connection": ("yes",), "downsampling": ("yes",)},
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
            mods += [*mlp(arch.z_dim, arch.fc_hidden, ch * res * res, arch.fc_layers, arch.act),
                     nn.Unflatten(1, (ch, res, res))]
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


class PixelNorm(nn.Module):
    """Normalizes each latent to unit mean square (StyleGAN's mapping input; not a norm layer)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise times a learned per-channel strength (StyleGAN). Random while
    training; a fixed noise map in eval mode (StyleGAN2's ``noise_mode='const'``), so sampling
    stays deterministic given the latents."""

    def __init__(self, channels: int, res: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("const", torch.randn(1, 1, res, res))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x[:, :1]) if self.training else self.const
        return x + self.strength * noise


class ModulatedConv2d(nn.Conv2d):
    """StyleGAN2's modulated convolution: the style ``w`` scales the kernel's input channels per
    sample (through an FC affine), then each output filter is demodulated to unit norm. The owner
    sets ``style`` before each forward (as for :class:`~.layers.AdaIN`)."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2)
        self.affine = nn.Linear(w_dim, cin)
        self.style: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.style is None:
            raise RuntimeError("ModulatedConv2d needs a style: set module.style before forward")
        b, cin, h, w = x.shape
        s = self.affine(self.style) + 1.0  # [B, cin], around 1 at initialization
        weight = self.weight[None] * s[:, None, :, None, None]  # [B, cout, cin, k, k]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(-1, cin, *weight.shape[3:]),
                       padding=self.padding, groups=b)
        return out.reshape(b, -1, h, w) + self.bias[None, :, None, None]


class StyleBlock(Block):
    """One synthesis block of a style-based generator: up-sample, then two (conv -> noise -> act
    [-> AdaIN]) layers; the second layer's act is the block's ``out_act``."""

    def __init__(self, cin: int, cout: int, res: int, w_dim: int, norm: str, act: str, upsampling: str) -> None:
        nn.Module.__init__(self)
        adain = norm == "adaptive_instance"

        def conv(ci: int) -> nn.Module:
            return nn.Conv2d(ci, cout, 3, padding=1) if adain else ModulatedConv2d(ci, cout, 3, w_dim)

        first = (nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1) if upsampling == "transposed_conv"
                 else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(cin)))
        self.layer1 = nn.Sequential(first, NoiseInjection(cout, res), make_act(act),
                                    *([AdaIN(cout, w_dim)] if adain else []))
        self.conv2 = nn.Sequential(conv(cout), NoiseInjection(cout, res))
        self.out_act = make_act(act)
        self.norm2 = AdaIN(cout, w_dim) if adain else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.out_act(self.conv2(self.layer1(x))))


class StyleGenerator(nn.Module):
    """z [B, z_dim] -> image: a style-based generator (StyleGAN / StyleGAN2, see module docstring)."""

    def __init__(self, arch: ArchSpec, image_size: int) -> None:
        super().__init__()
        w_dim, res = arch.fc_hidden, MIN_RESOLUTION
        ch = channels_at(arch.width, res)
        self.mapping = nn.Sequential(PixelNorm(), *mlp(arch.z_dim, w_dim, w_dim, max(1, arch.fc_layers), arch.act))
        self.const = nn.Parameter(torch.randn(1, ch, res, res))
        blocks = []
        while res < image_size:
            out = channels_at(arch.width, res * 2)
            blocks.append(StyleBlock(ch, out, res * 2, w_dim, arch.norm, arch.act, arch.upsampling))
            ch, res = out, res * 2
        blocks[-1].out_act = make_act(arch.block_act)
        self.blocks = nn.Sequential(*blocks)
        scale, shift = OUTPUT_AFFINE["image"][arch.last_act]
        self.to_rgb = nn.Sequential(nn.Conv2d(ch, 3, 1), make_act(arch.last_act), OutputAffine(scale, shift))
        self._styled = [m for m in self.modules() if isinstance(m, AdaIN | ModulatedConv2d)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)
        for m in self._styled:
            m.style = w
        return self.to_rgb(self.blocks(self.const.expand(len(z), -1, -1, -1)))


class ConcatSkip(SkipConnection):
    """A U-Net skip by concatenation (pix2pix, DDPM): the encoder's features join the decoder's
    channels. A :class:`SkipConnection` to introspection; it has no weights."""

    def __init__(self) -> None:
        super().__init__(1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.cat([x, skip], dim=1)


class UNetBlock(Block):
    """``layers`` conv -> norm -> act layers with the conditioning embedding added after the
    first conv (DDPM); ``residual`` adds a 1x1-projected shortcut (DDPM's ResBlock), else a plain
    stack (pix2pix)."""

    def __init__(self, cin: int, cout: int, layers: int, norm: str, act: str, emb_dim: int, residual: bool) -> None:
        nn.Module.__init__(self)
        self.first = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), *_norm(norm, cout))
        self.emb = nn.Linear(emb_dim, cout)
        rest: list[nn.Module] = []
        for _ in range(layers - 1):
            rest += [make_act(act), nn.Conv2d(cout, cout, 3, padding=1), *_norm(norm, cout)]
        self.rest = nn.Sequential(*rest)
        self.skip = SkipConnection(cin, cout) if residual else None
        self.out_act = make_act(act)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self.rest(self.first(x) + self.emb(emb)[..., None, None])
        return self.out_act(h + self.skip(x) if self.skip is not None else h)


class UNet(nn.Module):
    """(x [B, 3, S, S], cond [B, cond_dim]) -> image: the U-Net of image-to-image and diffusion
    code (see module docstring). Modules are registered by kind (every encoder block, then every
    down-sampler, ...), not interleaved as the forward pass runs them; introspection needs only
    the last decoder block to be the last Block and the head to come last, which they are."""

    def __init__(self, arch: ArchSpec, image_size: int, cond_dim: int, residual: bool) -> None:
        super().__init__()
        a, res = arch, image_size
        emb_dim = a.fc_hidden
        ch = channels_at(a.width, res)
        lpb = max(1, a.layers_per_block)

        def block(cin: int, cout: int) -> UNetBlock:
            return UNetBlock(cin, cout, lpb, a.norm, a.act, emb_dim, residual)

        self.cond_mlp = mlp(cond_dim, emb_dim, emb_dim, max(1, a.fc_layers), a.act)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.encoder, self.down, skip_ch = nn.ModuleList(), nn.ModuleList(), []
        for _ in range(a.down_stages):
            self.encoder.append(block(ch, ch))
            skip_ch.append(ch)
            out = channels_at(a.width, res // 2)
            if a.pool == "none":
                self.down.append(nn.Conv2d(ch, out, 4, stride=2, padding=1))
            else:
                self.down.append(nn.Sequential(nn.AvgPool2d(2) if a.pool == "avg" else nn.MaxPool2d(2),
                                               nn.Conv2d(ch, out, 1)))
            ch, res = out, res // 2
        self.middle = nn.ModuleList(block(ch, ch) for _ in range(max(1, a.mid_blocks)))
        self.up, self.skips, self.decoder = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for sc in reversed(skip_ch):
            self.up.append(nn.Sequential(*_up(a.upsampling, ch, sc)))
            self.skips.append(ConcatSkip())
            self.decoder.append(block(2 * sc, sc))
            ch = sc
        self.decoder[-1].out_act = make_act(a.block_act)
        self.head = nn.Sequential(*_head(a, ch))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        emb = self.cond_mlp(cond)
        h, saved = self.conv_in(x), []
        for enc, down in zip(self.encoder, self.down):
            h = enc(h, emb)
            saved.append(h)
            h = down(h)
        for mid in self.middle:
            h = mid(h, emb)
        for up, skip, dec in zip(self.up, self.skips, self.decoder):
            h = dec(skip(up(h), saved.pop()), emb)
        return self.head(h)


def latent_generator(arch: ArchSpec, image_size: int) -> nn.Module:
    """The GAN generator / VAE decoder of ``arch``, written as ``arch.implementation`` says."""
    if arch.implementation == "backbone":
        return Backbone(arch, image_size, mode="latent", output_kind="image")
    if arch.implementation == "dcgan":
        return DCGANGenerator(arch, image_size)
    if arch.implementation == "resnet":
        return ResNetGenerator(arch, image_size)
    if arch.implementation == "stylegan":
        return StyleGenerator(arch, image_size)
    latent = sorted(set(IMPLEMENTATIONS["gan"]) | set(IMPLEMENTATIONS["vae"]))
    raise ValueError(f"implementation {arch.implementation!r} does not write a latent generator; known: {latent}")


def image_network(arch: ArchSpec, image_size: int, cond_dim: int, residual: bool) -> nn.Module:
    """The image-to-image network (autoencoder, diffusion denoiser) of ``arch``, called as
    ``net(x, cond)``, written as ``arch.implementation`` says; ``residual`` picks the U-Net's
    block style (DDPM residual blocks for denoisers, pix2pix plain blocks otherwise)."""
    if arch.implementation == "backbone":
        return Backbone(arch, image_size, mode="image", cond_dim=cond_dim, output_kind="image")
    if arch.implementation == "unet":
        return UNet(arch, image_size, cond_dim, residual)
    image = sorted(set(IMPLEMENTATIONS["autoencoder"]) | set(IMPLEMENTATIONS["diffusion"]))
    raise ValueError(f"implementation {arch.implementation!r} does not write an image-to-image network; "
                     f"known: {image}")
