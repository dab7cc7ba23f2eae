"""Deepfake detection and image attribution: shallow classifiers sharing one FEN.

The heads see only the fingerprint, as in the paper, so whatever the FEN learns for one
task is visible to the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .constraints import ConstraintWeights, constraint_loss
from .fen import FEN
from .pn import ImageStatsBranch, SpectralBranch


class ShallowHead(nn.Module):
    """Two strided conv+ReLU layers, global average pool, linear to ``n_out`` logits.

    ``spectral_size`` > 0 (not in the paper; the parser's default fix, docs/method.md "What differs
    from the paper"): the pooled features also get a :class:`~models.pn.SpectralBranch` over the
    fingerprint's spectrum and an :class:`~models.pn.ImageStatsBranch` over the image's values.
    """

    def __init__(self, n_out: int, widths: Sequence[int] = (16, 32), channels: int = 3,
                 spectral_size: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = channels
        for w in widths:
            layers += [nn.Conv2d(prev, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            prev = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_out)]
        self.net = nn.Sequential(*layers)
        self.spectral = SpectralBranch(spectral_size, prev, channels=channels) if spectral_size else None
        self.stats = ImageStatsBranch(prev, channels=channels) if spectral_size else None

    def embed(self, fingerprint: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled features before the last linear layer (what same-source linking compares)."""
        z = self.net[:-1](fingerprint)
        if self.spectral is not None:
            if images is None:
                raise ValueError("a spectral head needs the images too")
            z = z + self.spectral(fingerprint) + self.stats(images)
        return z

    def forward(self, fingerprint: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        return self.net[-1](self.embed(fingerprint, images))


class DetectionAttributionModel(nn.Module):
    """One FEN, a detection head (1 logit: fake) and an attribution head (known GMs + real).

    ``n_sources`` counts every attribution class including 'real'; 0 disables attribution.
    ``spectral_size``: the heads' spectral branch (:class:`ShallowHead`), 0 for the paper's heads.
    """

    def __init__(self, n_sources: int = 0, fen: FEN | None = None, head_widths: Sequence[int] = (16, 32),
                 spectral_size: int = 0) -> None:
        super().__init__()
        self.fen = fen or FEN()
        self.detection_head = ShallowHead(1, head_widths, spectral_size=spectral_size)
        self.attribution_head = (ShallowHead(n_sources, head_widths, spectral_size=spectral_size)
                                 if n_sources > 0 else None)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        fp = self.fen(images)
        out = {"fingerprint": fp, "detection_logit": self.detection_head(fp, images).squeeze(1)}
        if self.attribution_head is not None:
            out["attribution_logits"] = self.attribution_head(fp, images)
        return out


def heads_loss(
    outputs: dict[str, torch.Tensor],
    is_fake: torch.Tensor | None = None,
    source: torch.Tensor | None = None,
    weights: ConstraintWeights | None = None,
    task_scale: float = 10.0,
    source_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE (detection) and/or CE (attribution) x ``task_scale`` + constraints (detection weights).

    Pass the targets of the tasks being trained; a missing one is skipped. ``source_weight``
    (one weight per source class) balances the attribution classes, e.g. real against each GM.
    """
    weights = weights or ConstraintWeights.detection()
    total, terms = constraint_loss(outputs["fingerprint"].float(), weights)
    log = {f"constraint/{k}": float(v.detach()) for k, v in terms.items()}
    log["constraints"] = float(total.detach())
    if is_fake is not None:
        det = F.binary_cross_entropy_with_logits(outputs["detection_logit"].float(), is_fake.float())
        total = total + task_scale * det
        log["detection"] = float(det.detach())
    if source is not None:
        if "attribution_logits" not in outputs:
            raise ValueError("attribution targets given but the model has no attribution head")
        att = F.cross_entropy(outputs["attribution_logits"].float(), source.long(), weight=source_weight)
        total = total + task_scale * att
        log["attribution"] = float(att.detach())
    log["total"] = float(total.detach())
    return total, log
