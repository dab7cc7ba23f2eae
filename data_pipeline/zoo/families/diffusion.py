"""A tiny DDPM: the shared backbone (image mode) or a DDPM-style U-Net (``implementation=unet``,
zoo.generators) predicts the clean image; MSE loss; DDIM sampling.

The network predicts x0 (not the noise): an undertrained eps-predictor divides its error by
sqrt(alpha_bar), which at high noise turns samples into saturated noise; an x0-predictor's
samples stay in range and improve smoothly with training.

Cosine noise schedule over ``cfg.diffusion_timesteps``; the timestep reaches the network
as a sinusoidal embedding through its FC embedding layers (and AdaIN, when chosen; the
U-Net adds it inside every block).
Sampling is deterministic DDIM with ``cfg.diffusion_sample_steps`` steps (x0 clamped to the
image range, the noise re-derived from it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import ZooTrainConfig
from ..generators import image_network
from ..specs import GMSpec
from .base import Family, adam

TIME_DIM = 16


def cosine_alpha_bar(timesteps: int) -> torch.Tensor:
    """Cumulative signal fraction alpha_bar[t], t = 0..T-1 (Nichol & Dhariwal)."""
    s = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f[1:] / f[0]).clamp(1e-4, 0.9999).float()


def time_embedding(t: torch.Tensor, timesteps: int) -> torch.Tensor:
    freqs = torch.exp(-math.log(1000.0) * torch.arange(TIME_DIM // 2, device=t.device) / (TIME_DIM // 2))
    a = (t.float() / timesteps)[:, None] * 1000.0 * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class DiffusionFamily(Family):
    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        super().__init__(spec, cfg)
        self.T = cfg.diffusion_timesteps
        self.alpha_bar = cosine_alpha_bar(self.T)
        self.net = image_network(spec.arch, self.size, cond_dim=TIME_DIM, residual=True)
        self.opt = adam(self.net.parameters(), self.lr, (0.9, 0.999))

    def _x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, time_embedding(t, self.T))

    def train_step(self, real: torch.Tensor) -> None:
        t = torch.randint(self.T, (len(real),), device=real.device)
        noise = torch.randn_like(real)
        ab = self.alpha_bar[t][:, None, None, None]
        x_t = ab.sqrt() * real + (1 - ab).sqrt() * noise
        loss = F.mse_loss(self._x0(x_t, t), real)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(n, 3, self.size, self.size, generator=gen).to(self.device)
        ts = torch.linspace(self.T - 1, 0, self.cfg.diffusion_sample_steps).round().long().tolist()
        for i, t in enumerate(ts):
            ab = self.alpha_bar[t]
            x0 = self._x0(x, torch.full((n,), t, device=x.device)).clamp(-1, 1)
            if i + 1 == len(ts):
                x = x0
            else:
                eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
                ab_next = self.alpha_bar[ts[i + 1]]
                x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x
