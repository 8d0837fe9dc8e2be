"""Pro-RandConv: progressive random convolutions (Choi et al., CVPR 2023), reimplemented from the paper's description.

One random block is drawn per mini-batch and shared by every image in it, then applied ``L ~ U{1, ..., L_max}``
times in sequence (``L_max = 10``) with the *same* weights, offsets and affine::

    for _ in range(L):
        x = deform_conv(x, w, offsets)                       # 3x3, no bias, "same" (zero) padding
        x = (x - mean_hw(x)) / sqrt(var_hw(x) + 1e-6)        # per image, per channel (instance norm, no affine)
        x = tanh(gamma * x + beta)                           # gamma, beta ~ N(0, 0.5^2) per channel

* Weights: ``w ~ N(0, 1 / (k^2 C))`` (``C -> C`` channels), multiplied by the Gaussian window
  ``exp(-(i^2 + j^2) / (2 sigma_g^2))``, ``i, j in {-1, 0, 1}``, ``sigma_g ~ U(eps, 1)``.
* Offsets: ``(B, 2 k^2, H, W)`` in pixels, ordered as in ``torchvision.ops.deform_conv2d``: channels ``2t`` and
  ``2t + 1`` are the (row, column) displacement of kernel tap ``t`` (row-major over the 3x3 kernel). Each image gets
  its own field; the scale ``sigma_delta ~ U(eps, b_delta)`` is shared by the batch, with ``b_delta = 0.5`` for
  images of at least 224 px (``min(H, W) >= 224``) and ``0.2`` otherwise. Smoothness (our choice: the paper's text
  could not be read, one third-party code uses a Gaussian random field, another a 3x3 binomial blur of white noise):
  white Gaussian noise blurred by a Gaussian of ``offset_smoothing = 2`` px (zero padding, renormalised at the
  borders), then standardised to zero mean and unit std per image and channel, then multiplied by ``sigma_delta``.
* The deformable convolution is implemented with ``torch.nn.functional.grid_sample`` (bilinear, zeros padding,
  ``align_corners=False`` with pixel ``p`` at normalised coordinate ``(2p + 1) / size - 1``): for each of the 9 taps
  the input is sampled at ``p + p_tap + offset_tap(p)`` and the weighted samples are summed. With zero offsets
  this is exactly ``F.conv2d(x, w, padding=1)``.

The output lies in ``(-1, 1)`` (tanh; in floating point, saturated values may round to exactly +-1), so unlike GIN
(which blends with its input and keeps its norm) an augmented batch never looks like a z-scored slice. Nothing is
mixed into an augmented image; instead ``p`` is the probability per batch of applying the augmentation (default
0.5; otherwise the clean batch is used), so the network also sees the clean intensities it is tested on, as in
RandConv's training (Xu et al. mix clean and random-convolution batches) and in third-party Pro-RandConv code that
feeds clean and augmented views together. Our choice: with ``p = 1`` the network never sees a clean slice and, on
the phantom at 10 epochs, fails on clean test slices (centralized 3D Dice 0.20 against 0.53 without augmentation).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .gin import _autocast_dtype, _check_generator, _check_input

__all__ = ["ProRandConv", "ProRandConvParams", "deform_conv2d", "smooth_noise"]


@dataclass(frozen=True)
class ProRandConvParams:
    """One draw of the Pro-RandConv block for a ``(B, C, H, W)`` batch (tensors float32).

    Attributes:
        weight: ``(C, C, k, k)`` kernel (Gaussian window applied), shared by the batch.
        offsets: ``(B, 2*k*k, H, W)`` offsets in pixels, (row, column) per tap.
        gamma, beta: ``(C,)`` affine of the block.
        repeats: L, the number of times the block is applied.
        applied: False when the batch is left unchanged (probability ``1 - p``).
        sigma_g, sigma_delta: the drawn window width and offset scale (for inspection).
    """

    weight: Tensor
    offsets: Tensor
    gamma: Tensor
    beta: Tensor
    repeats: int
    applied: bool = True
    sigma_g: float = float("nan")
    sigma_delta: float = float("nan")


def _blur_matrix(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(n, n)`` matrix ``M`` with ``(M @ v)[i] = sum_j g(i - j) v[j] / sum_j g(i - j)``: a 1D Gaussian blur with
    zero padding, renormalised at the borders (a banded matmul is much faster on CPU than a 1-channel conv)."""
    t = torch.arange(n, device=device, dtype=dtype)
    d = t.view(-1, 1) - t.view(1, -1)
    m = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= math.ceil(3.0 * sigma))
    return m / m.sum(dim=1, keepdim=True)


def smooth_noise(
    shape: tuple[int, int, int, int],
    sigma: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Low-pass filtered white noise ``(B, K, H, W)`` (float32): Gaussian blur of std ``sigma`` px (truncated at
    3 sigma, zero padding renormalised at the borders), then standardised to zero mean and unit std per (image,
    channel). ``sigma <= 0`` gives standardised white noise."""
    b, k, h, w = shape
    noise = torch.randn(shape, device=device, dtype=torch.float32, generator=generator)
    if sigma > 0 and h * w > 0:
        mh = _blur_matrix(h, float(sigma), noise.device, noise.dtype)
        mw = _blur_matrix(w, float(sigma), noise.device, noise.dtype)
        noise = torch.matmul(torch.matmul(mh, noise), mw.T)
    if noise.numel() == 0:
        return noise
    v = noise.reshape(b, k, h * w)
    v = (v - v.mean(dim=2, keepdim=True)) / v.std(dim=2, unbiased=False, keepdim=True).clamp_min(eps)
    return v.reshape(b, k, h, w)


def _sampling_grid(offsets: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """``(B, 2k^2, H, W)`` pixel offsets -> ``grid_sample`` grid ``(B, k^2 * H, W, 2)`` for all taps at once."""
    b, two_t, h, w = offsets.shape
    t = k * k
    if two_t != 2 * t:
        raise ValueError(f"offsets must have 2*k*k = {2 * t} channels, got {two_t}")
    r = k // 2
    dev = offsets.device
    taps = torch.arange(-r, r + 1, device=dev, dtype=dtype)
    tap_y = taps.view(k, 1).expand(k, k).reshape(t, 1, 1)  # row-major over the kernel
    tap_x = taps.view(1, k).expand(k, k).reshape(t, 1, 1)
    ys = torch.arange(h, device=dev, dtype=dtype).view(1, h, 1)
    xs = torch.arange(w, device=dev, dtype=dtype).view(1, 1, w)
    off = offsets.to(dtype).view(b, t, 2, h, w)
    py = ys + tap_y + off[:, :, 0]  # (B, T, H, W) sampling rows, in pixels
    px = xs + tap_x + off[:, :, 1]
    gy = (2.0 * py + 1.0) / h - 1.0  # align_corners=False: pixel centre p <-> (2p + 1) / size - 1
    gx = (2.0 * px + 1.0) / w - 1.0
    return torch.stack((gx, gy), dim=-1).reshape(b, t * h, w, 2)


def _deform_conv_grid(x: Tensor, weight: Tensor, grid: Tensor) -> Tensor:
    b, c, h, w = x.shape
    c_out, c_in, k, _ = weight.shape
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, c, k * k, h, w)
    return torch.einsum("oct,bcthw->bohw", weight.reshape(c_out, c_in, k * k).to(x.dtype), sampled)


def deform_conv2d(x: Tensor, weight: Tensor, offsets: Tensor) -> Tensor:
    """Deformable convolution, stride 1, "same" zero padding, no bias, via bilinear ``grid_sample``.

    ``out[b, o, p] = sum_{c, t} weight[o, c, t] * x[b, c, p + p_t + offsets[b, (2t, 2t+1), p]]`` with
    ``p_t`` the tap's position relative to the kernel centre (bilinear interpolation, zero outside the image).

    Args:
        x: ``(B, C, H, W)``; weight: ``(C_out, C, k, k)``, odd k; offsets: ``(B, 2*k*k, H, W)`` (row, col) pixels.
    """
    k = weight.shape[-1]
    return _deform_conv_grid(x, weight, _sampling_grid(offsets, k, x.dtype))


class ProRandConv(torch.nn.Module):
    """Progressive random convolution augmentation (see the module docstring). No parameters, no buffers.

    Args:
        kernel_size: odd kernel size k (paper: 3).
        max_repeats: L_max; L ~ U{1, ..., L_max} per batch (paper: 10).
        sigma_g_max: upper bound of the Gaussian window's sigma_g ~ U(eps, sigma_g_max) (paper: 1).
        offset_bound: b_delta; None picks 0.5 when ``min(H, W) >= 224`` else 0.2 (paper).
        affine_std: std of gamma and beta (paper: 0.5).
        offset_smoothing: std in pixels of the Gaussian blur that makes the offsets smooth (our choice).
        eps: lower bound of sigma_g and sigma_delta.
        norm_eps: added to the variance of the per-image, per-channel standardisation (1e-6).
        p: probability per batch of applying the augmentation (otherwise the batch is returned unchanged).

    Shapes:
        forward(x: (B, C, H, W) float, generator) -> (B, C, H, W) in (-1, 1), dtype of ``x``.
    """

    def __init__(
        self,
        kernel_size: int = 3,
        max_repeats: int = 10,
        sigma_g_max: float = 1.0,
        offset_bound: float | None = None,
        affine_std: float = 0.5,
        offset_smoothing: float = 2.0,
        eps: float = 1e-3,
        norm_eps: float = 1e-6,
        p: float = 0.5,
    ) -> None:
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if int(max_repeats) < 1:
            raise ValueError(f"max_repeats must be >= 1, got {max_repeats}")
        if not 0.0 < float(eps) <= float(sigma_g_max):
            raise ValueError(f"need 0 < eps <= sigma_g_max, got eps={eps}, sigma_g_max={sigma_g_max}")
        if offset_bound is not None and float(offset_bound) < float(eps):
            raise ValueError(f"offset_bound must be >= eps, got {offset_bound}")
        if float(affine_std) < 0 or float(offset_smoothing) < 0 or float(norm_eps) <= 0:
            raise ValueError("affine_std and offset_smoothing must be >= 0 and norm_eps > 0")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.kernel_size = int(kernel_size)
        self.max_repeats = int(max_repeats)
        self.sigma_g_max = float(sigma_g_max)
        self.offset_bound = None if offset_bound is None else float(offset_bound)
        self.affine_std = float(affine_std)
        self.offset_smoothing = float(offset_smoothing)
        self.eps = float(eps)
        self.norm_eps = float(norm_eps)
        self.p = float(p)

    def extra_repr(self) -> str:
        b = "auto" if self.offset_bound is None else self.offset_bound
        return (
            f"kernel_size={self.kernel_size}, max_repeats={self.max_repeats}, offset_bound={b}, "
            f"affine_std={self.affine_std}, offset_smoothing={self.offset_smoothing}, p={self.p}"
        )

    def offset_bound_for(self, h: int, w: int) -> float:
        """b_delta for an ``h x w`` image."""
        if self.offset_bound is not None:
            return self.offset_bound
        return 0.5 if min(h, w) >= 224 else 0.2

    @torch.no_grad()
    def sample(
        self,
        batch: int,
        channels: int,
        h: int,
        w: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> ProRandConvParams:
        """Draw one block (and L) for a ``(batch, channels, h, w)`` batch; tensors float32 on ``device``.

        Everything is drawn in a fixed order whatever ``p``, so a seed gives the same block in any case.
        """
        device = torch.device(device)
        _check_generator(generator, device)
        try:  # the offsets' blur is a matmul: keep it in float32 under autocast
            no_autocast = torch.autocast(device.type, enabled=False)
        except (RuntimeError, TypeError, ValueError):
            no_autocast = contextlib.nullcontext()
        with no_autocast:
            return self._sample(batch, channels, h, w, device, generator)

    def _sample(
        self, batch: int, channels: int, h: int, w: int, device: torch.device, generator: torch.Generator | None
    ) -> ProRandConvParams:
        f32 = dict(device=device, dtype=torch.float32)
        k, c = self.kernel_size, channels
        applied = bool(torch.rand(1, generator=generator, **f32).item() < self.p)
        repeats = int(torch.randint(1, self.max_repeats + 1, (1,), device=device, generator=generator).item())
        sigma_g = self.eps + (self.sigma_g_max - self.eps) * float(torch.rand(1, generator=generator, **f32).item())
        weight = torch.randn(c, c, k, k, generator=generator, **f32) / math.sqrt(k * k * c)
        r = torch.arange(-(k // 2), k // 2 + 1, **f32)
        window = torch.exp(-(r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) / (2.0 * sigma_g**2))
        weight = weight * window
        b_delta = self.offset_bound_for(h, w)
        sigma_delta = self.eps + (b_delta - self.eps) * float(torch.rand(1, generator=generator, **f32).item())
        offsets = sigma_delta * smooth_noise((batch, 2 * k * k, h, w), self.offset_smoothing, device, generator)
        gamma = self.affine_std * torch.randn(c, generator=generator, **f32)
        beta = self.affine_std * torch.randn(c, generator=generator, **f32)
        return ProRandConvParams(weight, offsets, gamma, beta, repeats, applied, sigma_g, sigma_delta)

    @torch.no_grad()
    def apply(self, x: Tensor, params: ProRandConvParams) -> Tensor:
        """Apply the drawn block ``params.repeats`` times (or return a copy of ``x`` if not ``params.applied``)."""
        b, c, h, w = _check_input(x, "ProRandConv")
        k = self.kernel_size
        if params.weight.shape != (c, c, k, k) or params.offsets.shape != (b, 2 * k * k, h, w):
            raise ValueError(
                f"params do not match an input of shape {tuple(x.shape)}; draw them with sample(B, C, H, W)"
            )
        if not params.applied or b == 0:
            return x.clone()
        acc = torch.promote_types(x.dtype, torch.float32)
        no_autocast = (
            torch.autocast(x.device.type, enabled=False) if _autocast_dtype(x) is not None else contextlib.nullcontext()
        )
        with no_autocast:
            weight = params.weight.to(device=x.device, dtype=acc)
            gamma = params.gamma.to(device=x.device, dtype=acc).view(1, c, 1, 1)
            beta = params.beta.to(device=x.device, dtype=acc).view(1, c, 1, 1)
            grid = _sampling_grid(params.offsets.to(x.device), k, acc)  # same offsets for every repeat
            y = x.to(acc)
            for _ in range(int(params.repeats)):
                y = _deform_conv_grid(y, weight, grid)
                mean = y.mean(dim=(2, 3), keepdim=True)
                var = y.var(dim=(2, 3), unbiased=False, keepdim=True)
                y = (y - mean) / torch.sqrt(var + self.norm_eps)
                y = torch.tanh(gamma * y + beta)
        return y.to(x.dtype)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W) with a fresh block; returns (B, C, H, W) in ``x``'s dtype, in (-1, 1)."""
        _check_input(x, "ProRandConv")
        _check_generator(generator, x.device)
        b, c, h, w = x.shape
        params = self.sample(b, c, h, w, x.device, generator)
        return self.apply(x, params)
