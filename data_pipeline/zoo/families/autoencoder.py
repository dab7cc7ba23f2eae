"""Image-to-image autoencoders: learn a fixed per-GM manipulation of real images.

The target is the real crop after the spec's manipulation (a color-mixing matrix, a
gamma, and a blur or sharpen filter). Loss: L1 or L2 to the target, plus an optional
adversarial term (``adversarial``, ``least_squares`` or ``hinge``) from a critic that
sees manipulated real crops. Its generated images are its outputs on real crops; its
conditioning is each input's color statistics. The network is the shared backbone (image
mode) or a pix2pix-style U-Net (``implementation=unet``, zoo.generators).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ZooTrainConfig
from ..generators import image_network
from ..specs import GMSpec
from .base import Family, adam, color_stats, d_loss, discriminator, g_loss, pick_crops

ADV_TERMS = ("adversarial", "least_squares", "hinge")
_KERNELS = {
    "blur": torch.full((3, 3), 1 / 9.0),
    "sharpen": torch.tensor([[0.0, -0.5, 0.0], [-0.5, 3.0, -0.5], [0.0, -0.5, 0.0]]),
}


def manipulate(x: torch.Tensor, options: dict) -> torch.Tensor:
    """The GM's target transform on images in [-1, 1]."""
    y = (x + 1) / 2
    m = torch.tensor(options["color_matrix"], dtype=y.dtype, device=y.device)
    y = torch.einsum("ij,bjhw->bihw", m, y).clamp(0, 1)
    y = y.pow(float(options["gamma"]))
    k = _KERNELS.get(options["filter"])
    if k is not None:
        y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k.to(y.device, y.dtype).expand(3, 1, 3, 3), groups=3)
    return y.clamp(0, 1) * 2 - 1


class AutoencoderFamily(Family):
    def __init__(self, spec: GMSpec, cfg: ZooTrainConfig) -> None:
        super().__init__(spec, cfg)
        self.recon = "l1" if "l1" in spec.loss_types else "l2"
        adv = [t for t in spec.loss_types if t in ADV_TERMS]
        self.adv = adv[0] if adv else None
        self.adv_weight = float(spec.options.get("adv_weight", 0.05))
        self.net = image_network(spec.arch, self.size, cond_dim=6, residual=False)
        self.opt = adam(self.net.parameters(), self.lr, (0.9, 0.999))
        if self.adv:
            self.d = discriminator(self.size)
            self.opt_d = adam(self.d.parameters(), self.lr, (0.5, 0.99))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, color_stats(x))

    def train_step(self, real: torch.Tensor) -> None:
        target = manipulate(real, self.spec.options)
        out = self._forward(real)
        loss = (out - target).abs().mean() if self.recon == "l1" else ((out - target) ** 2).mean()
        if self.adv:
            self.opt_d.zero_grad(set_to_none=True)
            d_loss(self.adv, self.d(target), self.d(out.detach())).backward()
            self.opt_d.step()
            loss = loss + self.adv_weight * g_loss(self.adv, self.d(out))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def generate(self, n: int, real: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self._forward(pick_crops(real, n, gen))
