"""The authors' 2D U-Net (``sachugowda/FedGIN``, ``clients/model.py``), rebuilt from its description as an option
(``ModelConfig.arch = "authors"``); the default network is MONAI's U-Net (``fedgin.engine.model``).

Encoder: one double convolution per level (``channels[:-1]``, 32-64-128 for the authors), each followed by 2×2
max pooling; bottleneck: a double convolution to ``channels[-1]`` (256). Decoder: per level a 2×2 transposed
convolution, a bilinear resize to the skip connection's size, concatenation and a double convolution. Output: a
1×1 convolution, resized bilinearly to the input size. Double convolution: (3×3 conv → norm → LeakyReLU 0.2) × 2
→ dropout (0.3 for the authors). Convolutions are initialised with Kaiming-normal (leaky ReLU) weights and zero
biases; transposed convolutions keep PyTorch's default. About 1.93 M parameters for 32-64-128-256.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AuthorsUNetCore"]


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels, affine=True)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, dropout: float) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), _norm(norm, cout), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), _norm(norm, cout), nn.LeakyReLU(0.2, inplace=True),
                         nn.Dropout(dropout))


class AuthorsUNetCore(nn.Module):
    """(B, 1, H, W) → logits (B, out_channels, H, W); ``channels``: encoder levels then the bottleneck."""

    def __init__(self, out_channels: int, channels: Sequence[int], norm: str = "batch", dropout: float = 0.3) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"the authors' U-Net needs at least one level and a bottleneck, got channels {channels}")
        levels = list(channels[:-1])
        self.down = nn.ModuleList()
        cin = 1
        for c in levels:
            self.down.append(_DoubleConv(cin, c, norm, dropout))
            cin = c
        self.bottleneck = _DoubleConv(cin, channels[-1], norm, dropout)
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        cin = channels[-1]
        for c in reversed(levels):
            self.up.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
            self.fuse.append(_DoubleConv(2 * c, c, norm, dropout))
            cin = c
        self.head = nn.Conv2d(cin, out_channels, 1)
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.kaiming_normal_(m.weight, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips)):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([x, skip], dim=1))
        x = self.head(x)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x
