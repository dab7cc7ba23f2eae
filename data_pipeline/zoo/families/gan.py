"""GANs: a generator (the shared backbone, or DCGAN-, SNGAN- or StyleGAN-style: zoo.generators)
against a DCGAN-style critic.

Loss types: ``adversarial`` (non-saturating cross-entropy), ``hinge``, ``least_squares``,
``wasserstein`` (WGAN-GP) and ``mmd`` (MMD-GAN: RBF-kernel MMD on critic features joined
with 4x4-pooled pixels, the critic maximising it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ZooTrainConfig
from ..generators import latent_generator
from ..specs import GMSpec
from .base import Family, adam, d_loss, discriminator, g_loss, gradient_penalty, init_generator, mmd2

GAN_LOSSES = ("adversarial", "hinge", "least_squares", "wasserstein", "mmd")
MMD_FEATURES = 16


class GANFamily(Family):
    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        super().__init__(spec, cfg)
        (self.kind,) = [t for t in spec.loss_types if t in GAN_LOSSES]
        self.net = latent_generator(spec.arch, self.size)
        spectral = cfg.gan_spectral and (self.kind != "wasserstein" or cfg.gan_wgan_spectral)
        self.d = discriminator(
            self.size, out_dim=MMD_FEATURES if self.kind == "mmd" else 1, width=cfg.gan_d_width, spectral=spectral,
            mbstd=cfg.gan_mbstd,
        )
        if cfg.gan_init:
            init_generator(self.net)
        betas = cfg.gan_wgan_betas if self.kind == "wasserstein" else (0.5, 0.99)
        self.opt_g = adam(self.net.parameters(), self.lr, betas)
        self.opt_d = adam(self.d.parameters(), self.lr * cfg.gan_d_lr_ratio, betas)
        self.noise_steps = cfg.family_steps(spec.family)

    def _z(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.spec.arch.z_dim, generator=gen).to(self.device)

    def _mmd_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.d(x), F.adaptive_avg_pool2d(x, 4).flatten(1)], dim=1)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """Instance noise on the critic's inputs, annealed to 0 over the first attempt."""
        sigma = self.cfg.gan_instance_noise * max(0.0, 1.0 - self.n_steps / self.noise_steps)
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    def train_step(self, real: torch.Tensor) -> None:
        fake = self.net(self._z(len(real)))
        real, fake_d = self._noisy(real), self._noisy(fake)
        self.opt_d.zero_grad(set_to_none=True)
        if self.kind == "mmd":
            fr, ff = self.d(real), self.d(fake_d.detach())
            loss = -mmd2(fr, ff) + 1e-3 * (fr.pow(2).mean() + ff.pow(2).mean())
        else:
            loss = d_loss(self.kind, self.d(real), self.d(fake_d.detach()))
            if self.kind == "wasserstein":
                loss = loss + self.cfg.gan_gp_weight * gradient_penalty(self.d, real, fake_d.detach())
        loss.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        if self.kind == "mmd":
            loss = mmd2(self._mmd_features(real), self._mmd_features(fake_d))
        else:
            loss = g_loss(self.kind, self.d(fake_d))
        loss.backward()
        self.opt_g.step()

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.net(self._z(n, gen))
