"""Fingerprint Estimation Network: a DnCNN-style residual estimator.

The output residual is the GM fingerprint; it keeps the input's size so the
constraints can look at its spectrum at the image's own resolution.
"""

from __future__ import annotations

import torch
from torch import nn


class FEN(nn.Module):
    """conv3x3(c->w)+ReLU, (depth-2) x [conv3x3+BN+ReLU], conv3x3(w->c).

    ``depth`` counts every conv layer (paper: 17 layers, 64 channels). Padding 1 keeps
    the spatial size, so any input from 32x32 to 256x256 (or larger) works.
    """

    def __init__(self, depth: int = 17, width: int = 64, channels: int = 3) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"FEN depth must be >= 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.depth, self.width = depth, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images [B, 3, H, W] -> fingerprint [B, 3, H, W]."""
        return self.body(x)
