"""A tiny row-autoregressive model over quantized pixels; cross-entropy loss.

Pixels are quantized to ``cfg.ar_levels`` levels per channel. The network is the shared
backbone (image mode, no resampling) built from :class:`CausalConv2d` and fed the image
shifted down one row, so the logits of row r depend only on rows < r; within a row pixels
and channels are predicted independently. It is conditioned on the image's color
statistics (taken from a real crop when sampling). Sampling takes one forward pass per row,
over the rows generated so far. (Batch norm's training-mode batch statistics see whole
images; at sampling time it uses running statistics, so sampling stays causal.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..backbone import Backbone
from ..config import ZooTrainConfig
from ..layers import CausalConv2d
from ..specs import GMSpec
from .base import Family, adam, color_stats, pick_crops


class AutoregressiveFamily(Family):
    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        super().__init__(spec, cfg)
        if spec.arch.downsampling or spec.arch.norm in ("instance", "adaptive_instance"):
            raise ValueError("the row-autoregressive model allows no down-sampling and no instance norms")
        self.k = cfg.ar_levels
        self.net = Backbone(
            spec.arch, self.size, mode="image", out_channels=3 * self.k, cond_dim=6,
            output_kind="logits", conv_cls=CausalConv2d,
        )  # fmt: skip
        self.opt = adam(self.net.parameters(), self.lr, (0.9, 0.999))

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 * self.k).long().clamp(0, self.k - 1)

    def _value(self, q: torch.Tensor) -> torch.Tensor:
        return (q.float() + 0.5) / self.k * 2 - 1

    def _logits(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shifted = F.pad(x, (0, 0, 1, 0))[:, :, :-1]
        out = self.net(shifted, cond)
        return out.view(len(x), 3, self.k, *out.shape[2:]).transpose(1, 2)  # [B, K, 3, H, W]

    def train_step(self, real: torch.Tensor) -> None:
        q = self._quantize(real)
        loss = F.cross_entropy(self._logits(self._value(q), color_stats(real)), q)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cond = color_stats(pick_crops(real, n, gen))
        x = torch.zeros(n, 3, self.size, self.size, device=self.device)
        for r in range(self.size):
            logits = self._logits(x[:, :, : r + 1], cond)[:, :, :, r]  # [n, K, 3, W]
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).to(logits.device).clamp(1e-9, 1 - 1e-9)))
            x[:, :, r] = self._value((logits + gumbel).argmax(dim=1))
        return x
