"""RC-Unet style multi-layer random *linear* convolutions (Scholz et al., ``ai-idt/rc_aug``), for 2D slices.

The reference (Keras, 3D) builds, for every image, a fresh stack of ``n_layers = 3`` conv layers, 1 -> 1 channel,
``k = 3``, "same" padding, kernels drawn from Keras ``HeNormal`` (truncated normal, std ``sqrt(2 / fan_in)``),
zero bias and no nonlinearity, and applies it with probability ``p = 0.5`` per image. Here ``fan_in = k * k = 9``
(2D). Every channel of every image gets its own three kernels (one grouped conv per layer over ``[1, B*C, H, W]``
with ``groups = B*C``), so multi-channel inputs are handled channel by channel, as the 1 -> 1 reference would be.

Adaptation to this project (inputs are z-scored, not in ``[0, 1]``), per selected image and channel::

    x01 = (x - min x) / (max x - min x)          # the reference scales images to [0, 1] before RC
    y   = conv_3(conv_2(conv_1(x01)))             # zero padding, as Keras 'same'
    y01 = (y - min y) / (max y - min y)           # min-max rescale of the output to [0, 1]
    out = (y01 - mean y01) / std y01 * std x + mean x

i.e. the output is brought back to the input's own mean and standard deviation (population std, over H x W), so
the segmentation network keeps seeing z-score-like intensities. The reference instead keeps zero (background) voxels
at 0 and rescales only the non-zero ones to ``[0, 1]``; z-scored slices have no zero background, so that rule is
dropped. Since the final rescaling is an affine map per image, the overall scale of the kernels cancels; only their
shape (and the sign of the product of the three layers' gains, which may invert contrast) matters.

Kernels follow Keras ``HeNormal`` exactly: a normal with std ``sqrt(2 / fan_in) / 0.8796...`` truncated at two of
its standard deviations, which gives a truncated distribution with std ``sqrt(2 / fan_in)``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .gin import _autocast_dtype, _check_generator, _check_input

__all__ = ["RCParams", "RCUNetAug", "random_linear_conv_stack", "truncated_normal"]


def _truncated_std(bound: float) -> float:
    """Std of a standard normal truncated to ``[-bound, bound]`` (0.8796... for 2, Keras's correction constant)."""
    phi = math.exp(-0.5 * bound * bound) / math.sqrt(2.0 * math.pi)
    mass = math.erf(bound / math.sqrt(2.0))
    return math.sqrt(1.0 - 2.0 * bound * phi / mass)


def truncated_normal(
    shape: tuple[int, ...],
    std: float,
    bound: float = 2.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``N(0, std^2)`` truncated to ``[-bound * std, bound * std]`` (float32), by inverse-CDF sampling.

    One uniform draw per element, so the generator is advanced by a fixed amount whatever the values.
    """
    u = torch.rand(shape, device=device, dtype=torch.float32, generator=generator)
    lo = 0.5 * (1.0 + math.erf(-bound / math.sqrt(2.0)))  # Phi(-bound)
    u = lo + (1.0 - 2.0 * lo) * u  # U(Phi(-bound), Phi(bound))
    z = math.sqrt(2.0) * torch.erfinv((2.0 * u - 1.0).clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    return (z.clamp(-bound, bound) * std).to(torch.float32)


def random_linear_conv_stack(x: Tensor, weights: tuple[Tensor, ...] | list[Tensor]) -> Tensor:
    """Apply the stacked per-channel convolutions: ``(B, C, H, W) -> (B, C, H, W)``, linear in ``x``.

    Args:
        x: ``(B, C, H, W)``.
        weights: per layer, ``(B*C, 1, k, k)``: kernel of channel ``c`` of image ``b`` at row ``b*C + c``.
    """
    b, c, h, w = x.shape
    y = x.reshape(1, b * c, h, w)
    for wt in weights:
        k = wt.shape[-1]
        y = F.conv2d(y, wt.to(y.dtype), padding=k // 2, groups=b * c)
    return y.reshape(b, c, h, w)


@dataclass(frozen=True)
class RCParams:
    """One draw for a ``(B, C, H, W)`` batch.

    Attributes:
        weights: per layer, ``(B*C, 1, k, k)`` float32 kernels (drawn for every image, used for selected ones).
        selected: ``(B,)`` bool, the images that are augmented.
    """

    weights: tuple[Tensor, ...]
    selected: Tensor


class RCUNetAug(torch.nn.Module):
    """RC-Unet augmentation: 3 stacked random linear 3x3 convs, per image, with probability ``p`` per image.

    No parameters, no buffers; new kernels at every call. See the module docstring for the z-score adaptation.

    Args:
        n_layers: number of stacked conv layers (reference: 3).
        kernel_size: odd kernel size (reference: 3).
        p: probability that an image is augmented (reference: 0.5); the others are returned unchanged.
        truncation: truncation of the kernel distribution, in standard deviations of the underlying normal.
        eps: guards the divisions of the min-max and std rescalings (constant images come back unchanged).

    Shapes:
        forward(x: (B, C, H, W) float, generator) -> (B, C, H, W), dtype of ``x``.
    """

    def __init__(
        self,
        n_layers: int = 3,
        kernel_size: int = 3,
        p: float = 0.5,
        truncation: float = 2.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if float(truncation) <= 0:
            raise ValueError(f"truncation must be > 0, got {truncation}")
        if float(eps) <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.n_layers = int(n_layers)
        self.kernel_size = int(kernel_size)
        self.p = float(p)
        self.truncation = float(truncation)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, kernel_size={self.kernel_size}, p={self.p}"

    @property
    def weight_std(self) -> float:
        """Target std of the (truncated) kernel distribution, ``sqrt(2 / fan_in)``, ``fan_in = k*k``."""
        return math.sqrt(2.0 / (self.kernel_size * self.kernel_size))

    @torch.no_grad()
    def sample(
        self,
        batch: int,
        channels: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> RCParams:
        """Draw the kernels of every image and channel and the per-image selection (float32 on ``device``)."""
        device = torch.device(device)
        _check_generator(generator, device)
        k = self.kernel_size
        # Keras HeNormal: the underlying normal's std is corrected so that the truncated one has weight_std
        sigma = self.weight_std / _truncated_std(self.truncation)
        weights = tuple(
            truncated_normal((batch * channels, 1, k, k), sigma, self.truncation, device, generator)
            for _ in range(self.n_layers)
        )
        selected = torch.rand(batch, device=device, generator=generator) < self.p
        return RCParams(weights, selected)

    @torch.no_grad()
    def apply(self, x: Tensor, params: RCParams) -> Tensor:
        """Apply drawn kernels to the selected images (see the module docstring); others are copied unchanged."""
        b, c, h, w = _check_input(x, "RCUNetAug")
        if params.selected.shape != (b,) or params.weights[0].shape[0] != b * c:
            raise ValueError(f"params do not match an input of shape {tuple(x.shape)}; draw them with sample(B, C)")
        out = x.clone()
        idx = torch.nonzero(params.selected.to(x.device), as_tuple=False).flatten()
        if idx.numel() == 0:
            return out
        acc = torch.promote_types(x.dtype, torch.float32)
        no_autocast = (
            torch.autocast(x.device.type, enabled=False) if _autocast_dtype(x) is not None else contextlib.nullcontext()
        )
        with no_autocast:
            xs = x.index_select(0, idx).to(acc)
            n = xs.shape[0]
            flat = xs.reshape(n, c, -1)
            mean_x = flat.mean(dim=2, keepdim=True)
            std_x = flat.std(dim=2, unbiased=False, keepdim=True)
            x01 = self._minmax(flat).reshape(n, c, h, w)
            # rows of the selected images' kernels: image i, channel j -> i*C + j
            rows = (idx.view(-1, 1) * c + torch.arange(c, device=x.device).view(1, -1)).flatten()
            ws = [wt.to(x.device).index_select(0, rows).to(acc) for wt in params.weights]
            y = random_linear_conv_stack(x01, ws).reshape(n, c, -1)
            y01 = self._minmax(y)
            mean_y = y01.mean(dim=2, keepdim=True)
            std_y = y01.std(dim=2, unbiased=False, keepdim=True)
            z = (y01 - mean_y) / std_y.clamp_min(self.eps)
            res = (z * std_x + mean_x).reshape(n, c, h, w)
        out.index_copy_(0, idx, res.to(x.dtype))
        return out

    def _minmax(self, v: Tensor) -> Tensor:
        """Per row (image, channel) rescaling of ``(N, C, P)`` to ``[0, 1]``."""
        lo = v.amin(dim=2, keepdim=True)
        hi = v.amax(dim=2, keepdim=True)
        return (v - lo) / (hi - lo).clamp_min(self.eps)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W); returns (B, C, H, W) in ``x``'s dtype; draws from ``generator``."""
        _check_input(x, "RCUNetAug")
        _check_generator(generator, x.device)
        params = self.sample(x.shape[0], x.shape[1], x.device, generator)
        return self.apply(x, params)
