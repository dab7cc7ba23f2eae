"""VAEs: a fixed conv encoder and a decoder (the shared backbone, or DCGAN- or SNGAN-style:
zoo.generators); loss KL + L1 or L2.

The ELBO is summed per image (reconstruction over pixels, KL over latent dims, KL weighted
by the spec's ``beta`` times ``cfg.vae_kl_scale``, ramped up from 0 over ``cfg.vae_kl_warmup``
steps, which keeps a few-step VAE out of posterior collapse) and scaled by the pixel count, so
one learning rate fits every size.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ZooTrainConfig
from ..generators import latent_generator
from ..specs import GMSpec
from .base import Family, adam, discriminator, init_generator

#: the encoder's log-variance starts near this (posterior std ~0.14), so z carries the input
#: from the first step instead of being drowned in unit noise (early posterior collapse)
LOGVAR_SHIFT = -4.0


class VAEFamily(Family):
    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        super().__init__(spec, cfg)
        self.recon = "l1" if "l1" in spec.loss_types else "l2"
        self.beta = float(spec.options.get("beta", 1.0)) * cfg.vae_kl_scale
        z = spec.arch.z_dim
        self.net = latent_generator(spec.arch, self.size)
        if cfg.gan_init:
            init_generator(self.net)
        self.encoder: nn.Sequential = discriminator(self.size, out_dim=2 * z)
        self.opt = adam(list(self.net.parameters()) + list(self.encoder.parameters()), self.lr, (0.9, 0.999))

    def train_step(self, real: torch.Tensor) -> None:
        mu, logvar = self.encoder(real).chunk(2, dim=1)
        logvar = (logvar + LOGVAR_SHIFT).clamp(-8, 8)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        out = self.net(z)
        err = (out - real).abs() if self.recon == "l1" else (out - real) ** 2
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)
        warmup = min(1.0, (self.n_steps + 1) / max(1, self.cfg.vae_kl_warmup))
        loss = (err.flatten(1).sum(dim=1) + warmup * self.beta * kl).mean() / real[0].numel()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.net(torch.randn(n, self.spec.arch.z_dim, generator=gen).to(self.device))
