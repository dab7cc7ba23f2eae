"""What every zoo family shares: the trainable-GM interface, a discriminator, GAN losses."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ZooTrainConfig
from ..specs import GMSpec


class Family:
    """A trainable GM. ``net`` is the network that makes the images: the one measured."""

    net: nn.Module

    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        self.spec, self.cfg, self.size = spec, cfg, spec.image_size
        self.lr = cfg.family_lr(spec.family)
        self.n_steps = 0  # training steps taken (counted by the trainer)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Family:
        """Move every module and tensor of this GM to ``device``. Modules move in place, so the
        optimizers built in ``__init__`` keep their parameters; random draws that must not
        depend on the device (``gen``) stay on the CPU and are copied over."""
        for name, v in vars(self).items():
            if isinstance(v, nn.Module):
                v.to(device)
            elif isinstance(v, torch.Tensor):
                setattr(self, name, v.to(device))
        return self

    def train_step(self, real: torch.Tensor) -> None:
        """One optimisation step on a batch of real images (float NCHW in [-1, 1])."""
        raise NotImplementedError

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``n`` images as float NCHW in [-1, 1] (``real``: crops for image-to-image GMs)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, real: torch.Tensor, gen: torch.Generator, batch: int = 64) -> np.ndarray:
        """``n`` images as uint8 NHWC, in eval mode, deterministic given ``gen``."""
        self.net.eval()
        try:
            out = [self.generate(min(batch, n - i), real, gen) for i in range(0, n, batch)]
        finally:
            self.net.train()
        x = torch.cat(out).nan_to_num(0.0).clamp(-1, 1)
        return ((x.permute(0, 2, 3, 1).cpu().numpy() + 1) * 127.5 + 0.5).astype(np.uint8)


def pick_crops(real: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` real crops drawn with replacement, randomly flipped (deterministic by ``gen``)."""
    idx = torch.randint(len(real), (n,), generator=gen).to(real.device)
    x = real[idx]
    flip = (torch.rand(n, generator=gen) < 0.5).to(real.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def color_stats(x: torch.Tensor) -> torch.Tensor:
    """Per-image channel mean and std [B, 6]: the conditioning of image-mode families."""
    return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature std as one channel (ProGAN): a critic that sees it
    spots a collapsed generator at once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.std(dim=0, unbiased=False).mean() if len(x) > 1 else x.new_zeros(())
        return torch.cat([x, s.expand(len(x), 1, *x.shape[2:])], dim=1)


def discriminator(
    image_size: int, out_dim: int = 1, width: int = 16, spectral: bool = False, mbstd: bool = False
) -> nn.Sequential:
    """A fixed DCGAN-style critic: strided convs down to 4x4, then one FC layer (optionally
    spectrally normalized, which keeps a critic trained at a high learning rate Lipschitz,
    and with a minibatch-std channel before the FC layer)."""
    sn = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
    mods: list[nn.Module] = []
    ch, res, w = 3, image_size, width
    while res > 4:
        mods += [sn(nn.Conv2d(ch, w, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        ch, res, w = w, res // 2, min(2 * w, 128)
    if mbstd:
        mods.append(MinibatchStd())
        ch += 1
    mods += [nn.Flatten(), sn(nn.Linear(ch * res * res, out_dim))]
    return nn.Sequential(*mods)


@torch.no_grad()
def init_generator(net: nn.Module) -> None:
    """He-normal conv / FC weights (gain for leaky ReLU 0.2), zero biases: a deep generator
    without normalization keeps its latent's signal instead of emitting one bias-made image.
    Changes no module, so the measured labels are unaffected."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def adam(params, lr: float, betas: tuple[float, float] = (0.5, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=betas)


def d_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss of a GAN loss type (wasserstein: without its gradient penalty)."""
    if kind == "adversarial":
        return F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy_with_logits(
            d_fake, torch.zeros_like(d_fake)
        )
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if kind == "least_squares":
        return 0.5 * ((d_real - 1) ** 2).mean() + 0.5 * (d_fake**2).mean()
    if kind == "wasserstein":
        return d_fake.mean() - d_real.mean()
    raise ValueError(f"no discriminator loss for {kind!r}")


def g_loss(kind: str, d_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss of a GAN loss type (non-saturating for the cross-entropy GAN)."""
    if kind == "adversarial":
        return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    if kind in ("hinge", "wasserstein"):
        return -d_fake.mean()
    if kind == "least_squares":
        return 0.5 * ((d_fake - 1) ** 2).mean()
    raise ValueError(f"no generator loss for {kind!r}")


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)|| - 1)^2 on random interpolates."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device)
    x = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def mmd2(x: torch.Tensor, y: torch.Tensor, scales: tuple[float, ...] = (0.25, 1.0, 4.0)) -> torch.Tensor:
    """Biased MMD^2 with a mixture of RBF kernels (bandwidths around the median distance)."""
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    base = d2.detach().median().clamp_min(1e-6)
    k = sum(torch.exp(-d2 / (s * base)) for s in scales)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
