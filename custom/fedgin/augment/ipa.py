"""GIN-IPA: GIN with interventional pseudo-correlation augmentation (Ouyang et al., TMI 2022).

Three GIN views of a batch are drawn, g1, g2, g3. A smooth random field M ∈ [0, 1] (one per image) blends the first
two the opposite ways, which breaks the spatial correlation between intensity and location::

    view1 = g1·M + g2·(1 − M),   view2 = g1·(1 − M) + g2·M,   view3 = g3

``forward`` returns the three views stacked along the batch axis, (3B, C, H, W), and sets ``views = 3`` so the
engine computes the segmentation loss on the first B predictions (as the reference code does) and adds the
consistency loss of the original code: λ·KL(p̄ ‖ p_view), p̄ the mean of the three views' class probabilities,
averaged over views, pixels and classes, λ = 10 (``TrainConfig.consistency_weight``; ``engine.trainer.consistency_loss``).

The field follows the reference's recipe (control points every ``spacing`` pixels drawn from N(0, 1), interpolated,
exponentiated in log space and rescaled to [1 − ε, 1 + ε] with ε = 0.3, then min-max scaled to [0, 1]); bicubic
interpolation replaces the reference's quadratic B-spline (our approximation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .gin import GIN

__all__ = ["GINIPA", "smooth_field"]


@torch.no_grad()
def smooth_field(b: int, h: int, w: int, spacing: int = 24, epsilon: float = 0.3,
                 device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """Random smooth blend masks (b, 1, h, w) in [0, 1], float32."""
    gh, gw = max(2, h // spacing + 2), max(2, w // spacing + 2)
    ctrl = torch.randn(b, 1, gh, gw, device=device, generator=generator)
    field = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)
    lo = field.amin(dim=(2, 3), keepdim=True)
    hi = field.amax(dim=(2, 3), keepdim=True)
    unit = (field - lo) / (hi - lo + 1e-8)
    field = torch.exp(torch.log(torch.tensor(1 - epsilon)) + unit * (torch.log(torch.tensor(1 + epsilon))
                                                                     - torch.log(torch.tensor(1 - epsilon))))
    lo = field.amin(dim=(2, 3), keepdim=True)
    hi = field.amax(dim=(2, 3), keepdim=True)
    return (field - lo) / (hi - lo + 1e-8)


class GINIPA(torch.nn.Module):
    """(B, C, H, W) → three GIN-IPA views (3B, C, H, W); GIN options as in ``GIN``."""

    views = 3

    def __init__(self, spacing: int = 24, epsilon: float = 0.3, **gin_options) -> None:
        super().__init__()
        self.gin = GIN(**gin_options)
        self.spacing, self.epsilon = spacing, epsilon

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        g1, g2, g3 = (self.gin(x, generator=generator) for _ in range(3))
        m = smooth_field(x.shape[0], x.shape[2], x.shape[3], self.spacing, self.epsilon, x.device,
                         generator).to(g1.dtype)
        return torch.cat([g1 * m + g2 * (1 - m), g1 * (1 - m) + g2 * m, g3])
