"""Focal + Dice loss (MONAI ``DiceFocalLoss``) for binary (sigmoid) and multi-class (softmax) tasks.

Binary follows the authors' combination 0.5·focal + 0.5·Dice with gamma 2 and per-sample soft Dice
(smooth 1e-5). Their focal term also used BCE pos_weight 3 and a constant 0.25 factor; MONAI's standard sigmoid
focal loss is used instead (documented deviation). Multi-class uses softmax Dice over one-hot labels and MONAI's
per-channel sigmoid focal term.
"""

from __future__ import annotations

import torch
from monai.losses import DiceFocalLoss

__all__ = ["SegmentationLoss"]


class SegmentationLoss(torch.nn.Module):
    """loss(logits (B, C_out, H, W), labels (B, H, W) int) -> scalar."""

    def __init__(self, num_classes: int, lambda_dice: float = 0.5, lambda_focal: float = 0.5, gamma: float = 2.0):
        super().__init__()
        self.binary = num_classes == 1
        self.loss = DiceFocalLoss(
            sigmoid=self.binary,
            softmax=not self.binary,
            to_onehot_y=not self.binary,
            gamma=gamma,
            lambda_dice=lambda_dice,
            lambda_focal=lambda_focal,
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels.unsqueeze(1).to(logits.dtype if self.binary else torch.long)
        if self.binary:
            target = (target > 0).to(logits.dtype)
        return self.loss(logits.float(), target)
