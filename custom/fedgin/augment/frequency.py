"""Frequency-domain augmentations: RaffeSDG (random Butterworth high-pass + mask mixing) and FMAug (FreeSDG).

Both follow the contract of this package: a parameter-free ``torch.nn.Module`` whose
``forward(x, generator=None)`` maps a ``(B, C, H, W)`` float batch to a batch of the same shape and dtype, without
building a graph, with every random draw taken from ``generator`` (a ``torch.Generator`` on ``x.device``) when one
is given. Filtering is always done in float32 (float64 for float64 input) with autocast switched off.

Adaptation to this project (both methods)
-----------------------------------------
The reference pipelines (``liamheng/Non-IID_Medical_Image_Segmentation``, see
``shared/reference/gin_and_baselines.md`` section 6) work on RGB fundus images in [-1, 1] with a field-of-view mask,
train a two-headed network that also reconstructs a high-frequency component (HFC) of the image, and feed a
*filtered* image to the network at test time (FreeSDG: HFC(27, 9); RaffeSDG: Butterworth d0 = 1 px, n = 1).
Here the inputs are per-volume z-scored grayscale slices (usually C = 1) with no FOV mask, and the methods are used
as **augmentation only**: no reconstruction head, no auxiliary loss, and the raw z-scored image is the test input.
Because the model sees raw z-scored slices at test time, both augmentations return their output in z-score space
(zero mean, unit std per image) rather than in [-1, 1]. FOV handling (median filling, masking) is dropped.

RaffeSDG (``"raffesdg"``)
-------------------------
Per image and per channel a filter is drawn from a bank of 36 Butterworth high-pass filters
``H(u, v) = 1 / (1 + (d0 / (D + 1))^(2n))`` (``D`` = distance to DC in the unshifted FFT, i.e. to the nearest
corner; ``n in {1, 2, 3}``; twelve cutoffs ``d0_ratio = 0.1 (exp(4.1 t) - 1) / (exp(4.1) - 1)``, ``t = 0, 1/11,
..., 1``, pixel cutoff ``max(floor(d0_ratio * min(H, W) / 2), 1)``) plus 12 identity entries (P(identity) = 1/4).
A filtered channel is ``|ifft2(fft2(x) * H)|`` (the magnitude, as the reference), an identity channel is ``x``
itself; each is then robust-min-max scaled with its own 3rd and 97th percentiles (not clipped). Two independently
drawn views are mixed with a random smooth mask ``M in [0, 1]`` (one per image, shared by the channels):
``M * f1 + (1 - M) * f2``; finally each image is z-scored (mean 0, std 1 over C, H, W).

Departures from the reference: percentiles are computed on the float values (the reference quantises to 1/256,
an artefact of 8-bit images); ``M`` is generated on the fly as a Gaussian low-pass filtered white-noise field,
min-max scaled per image (the reference reads pre-generated "smooth" mask images that are not published); the
final mapping is to z-score space instead of [-1, 1]; since ``H`` is real and point-symmetric the filtering uses
``rfft2``/``irfft2``, whose real output equals the reference's complex result up to rounding (its imaginary part
is rounding noise), so ``|.|`` of it is the reference's magnitude. Note the ``D + 1`` in the formula: the DC gain
is ``1 / (1 + d0^(2n))``, e.g. 0.5 for d0 = 1 px, n = 1, so the smallest filters only halve the mean.

FMAug (``"fmaug"``, FreeSDG frequency mixing, Li et al. MICCAI 2023)
--------------------------------------------------------------------
``HFC(x; w, s) = x - GaussianBlur_{w, s}(x)`` (separable ``w``-tap Gaussian of std ``s``, replicate padding), from a
bank of the 20 pairs ``zip(range(5, 50, 2), range(2, 22))``. For each batch two filters A and B are drawn, and one
rectangle of ``HFC_B(x)`` is pasted into ``HFC_A(x)`` (CutMix; height and width uniform in ``[0, H)`` and
``[0, W)``, position uniform among those where it fits). Filters and rectangle are shared by the batch, as in the
reference. Departures: the reference computes ``clamp(4 (x - blur), -1, 1)``; here the HFC is not scaled nor
clamped but z-scored per image (over C, H, W), so the output lives in the same space as the z-scored test input.
A and B are drawn as two *distinct* filters (assumption: a draw with A = B would be a no-op mix).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .gin import _autocast_dtype, _check_generator, _check_input

__all__ = [
    "FMAug",
    "FMAugDraw",
    "RaffeSDG",
    "RaffeSDGDraw",
    "butterworth_filter",
    "butterworth_highpass",
    "gaussian_blur",
    "gaussian_kernel1d",
    "high_frequency_component",
    "raffesdg_cutoff_ratios",
]


# ----------------------------------------------------------------------------------------------------------- helpers
def _no_autocast(x: Tensor):
    """Context disabling autocast on ``x``'s device when it is active (filters run in full precision)."""
    if _autocast_dtype(x) is not None:
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _zscore(y: Tensor, eps: float) -> Tensor:
    """Per-image zero mean / unit (population) std over all of C, H, W."""
    b = y.shape[0]
    flat = y.reshape(b, -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, correction=0, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(y)


def _dc_distance(h: int, w: int, device, dtype=torch.float32, half: bool = False) -> Tensor:
    """Distance of each frequency of an unshifted ``h x w`` FFT to DC (= to the nearest corner).

    With ``half=True`` the grid is that of ``rfft2`` (``w // 2 + 1`` columns).
    """
    u = torch.arange(h, device=device, dtype=dtype)
    du = torch.minimum(u, h - u)
    v = torch.arange(w // 2 + 1 if half else w, device=device, dtype=dtype)
    dv = torch.minimum(v, w - v)
    return torch.sqrt(du[:, None] ** 2 + dv[None, :] ** 2)


def _butterworth(dist: Tensor, d0: Tensor | float, order: Tensor | float) -> Tensor:
    # 1 / (1 + (d0 / (D + 1))^(2n)); d0 >= 1 and D + 1 >= 1, so no division by zero
    return 1.0 / (1.0 + (d0 / (dist + 1.0)) ** (2 * order))


def butterworth_highpass(h: int, w: int, d0_px: float, order: int, device=None) -> Tensor:
    """Butterworth high-pass ``H(u, v) = 1 / (1 + (d0 / (D + 1))^(2n))`` on an unshifted ``h x w`` FFT grid.

    Returns a float32 ``(h, w)`` tensor; ``H[0, 0]`` (DC) is ``1 / (1 + d0^(2n))``.
    """
    dist = _dc_distance(int(h), int(w), device)
    return _butterworth(dist, float(d0_px), float(order))


def butterworth_filter(x: Tensor, d0_px: Tensor | float, order: Tensor | float) -> Tensor:
    """Linear step of RaffeSDG: ``real(ifft2(fft2(x) * H))`` per ``(b, c)`` plane, before the magnitude.

    Args:
        x: ``(B, C, H, W)`` float (computed in float32/float64 as given; call outside autocast).
        d0_px, order: scalars or tensors broadcastable to ``(B, C)`` (one filter per plane).
    """
    h, w = x.shape[-2:]
    dist = _dc_distance(h, w, x.device, x.dtype, half=True)
    d0 = torch.as_tensor(d0_px, device=x.device, dtype=x.dtype)
    n = torch.as_tensor(order, device=x.device, dtype=x.dtype)
    if d0.dim() > 0:
        d0 = d0.reshape(*d0.shape, 1, 1)
    if n.dim() > 0:
        n = n.reshape(*n.shape, 1, 1)
    filt = _butterworth(dist, d0, n)
    spec = torch.fft.rfft2(x)
    return torch.fft.irfft2(spec * filt, s=(h, w))


def raffesdg_cutoff_ratios(n_cutoffs: int = 12, max_ratio: float = 0.1, growth: float = 4.1) -> list[float]:
    """``max_ratio * (exp(growth t) - 1) / (exp(growth) - 1)`` for ``t = 0, 1/(n-1), ..., 1``."""
    if n_cutoffs == 1:
        return [float(max_ratio)]
    ts = [i / (n_cutoffs - 1) for i in range(n_cutoffs)]
    return [max_ratio * (math.exp(growth * t) - 1.0) / (math.exp(growth) - 1.0) for t in ts]


def _percentile_rows(flat: Tensor, q: float) -> Tensor:
    """Linear-interpolated ``q``-th percentile (0..100) of each row of a sorted ``(N, M)`` tensor."""
    m = flat.shape[1]
    pos = (m - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, m - 1)
    frac = pos - lo
    return flat[:, lo] + (flat[:, hi] - flat[:, lo]) * frac


def _robust_minmax(y: Tensor, q_lo: float, q_hi: float, eps: float) -> Tensor:
    """Per ``(b, c)`` plane: ``(y - P_lo) / (P_hi - P_lo)``, not clipped."""
    b, c, h, w = y.shape
    flat = y.reshape(b * c, h * w)
    srt = flat.sort(dim=1).values
    p_lo = _percentile_rows(srt, q_lo)[:, None]
    p_hi = _percentile_rows(srt, q_hi)[:, None]
    return ((flat - p_lo) / (p_hi - p_lo).clamp_min(eps)).view(b, c, h, w)


# ---------------------------------------------------------------------------------------------------------- RaffeSDG
@dataclass(frozen=True)
class RaffeSDGDraw:
    """One draw of RaffeSDG's randomness for a ``(B, C, H, W)`` batch; index 0 / 1 = view f1 / f2.

    Attributes:
        d0_px: ``(2, B, C)`` float32 pixel cutoffs (meaningless where ``identity``).
        order: ``(2, B, C)`` float32 Butterworth orders.
        identity: ``(2, B, C)`` bool, True where the plane is left unfiltered.
        mask: ``(B, 1, H, W)`` float32 mixing mask in [0, 1] (weight of view f1).
    """

    d0_px: Tensor
    order: Tensor
    identity: Tensor
    mask: Tensor


class RaffeSDG(torch.nn.Module):
    """RaffeSDG random frequency filtering augmentation (augmentation only; see the module doc).

    Args:
        orders: Butterworth orders of the bank.
        n_cutoffs, max_ratio, growth: the cutoff ratios ``max_ratio (exp(growth t) - 1) / (exp(growth) - 1)``.
        n_identity: identity entries added to the bank (reference: 12 of 48, P(identity) = 1/4).
        percentiles: robust min-max percentiles.
        mask_sigma_range: ``(low, high)`` std, in cycles per image, of the Gaussian low-pass that smooths the
            white noise of the mixing mask (drawn per image; larger = finer blobs).
        eps: guards of the min-max and z-score denominators.

    Shapes:
        forward(x: (B, C, H, W) float, generator) -> (B, C, H, W) in ``x``'s dtype, each image z-scored.
    """

    def __init__(
        self,
        orders: tuple[int, ...] | list[int] = (1, 2, 3),
        n_cutoffs: int = 12,
        max_ratio: float = 0.1,
        growth: float = 4.1,
        n_identity: int = 12,
        percentiles: tuple[float, float] = (3.0, 97.0),
        mask_sigma_range: tuple[float, float] = (1.0, 4.0),
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.orders = tuple(int(n) for n in orders)
        if not self.orders or any(n < 1 for n in self.orders):
            raise ValueError(f"orders must be a non-empty list of positive ints, got {orders}")
        if int(n_cutoffs) < 1:
            raise ValueError(f"n_cutoffs must be >= 1, got {n_cutoffs}")
        if int(n_identity) < 0:
            raise ValueError(f"n_identity must be >= 0, got {n_identity}")
        q_lo, q_hi = (float(q) for q in percentiles)
        if not 0.0 <= q_lo < q_hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        s_lo, s_hi = (float(s) for s in mask_sigma_range)
        if not 0.0 < s_lo <= s_hi:
            raise ValueError(f"mask_sigma_range must satisfy 0 < low <= high, got {mask_sigma_range}")
        self.n_cutoffs = int(n_cutoffs)
        self.max_ratio = float(max_ratio)
        self.growth = float(growth)
        self.ratios = tuple(raffesdg_cutoff_ratios(self.n_cutoffs, self.max_ratio, self.growth))
        self.n_identity = int(n_identity)
        self.percentiles = (q_lo, q_hi)
        self.mask_sigma_range = (s_lo, s_hi)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return (
            f"orders={self.orders}, n_cutoffs={self.n_cutoffs}, max_ratio={self.max_ratio}, "
            f"n_identity={self.n_identity}, percentiles={self.percentiles}, mask_sigma_range={self.mask_sigma_range}"
        )

    def cutoffs_px(self, h: int, w: int) -> list[int]:
        """Pixel cutoffs ``max(floor(ratio * min(h, w) / 2), 1)`` of the bank for an ``h x w`` image."""
        return [max(int(math.floor(r * min(h, w) / 2)), 1) for r in self.ratios]

    @property
    def bank_size(self) -> int:
        return len(self.orders) * self.n_cutoffs + self.n_identity

    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        channels: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> RaffeSDGDraw:
        """Draw filters (per view, image, channel) and the mixing mask (per image); all float32 on ``device``."""
        device = torch.device(device)
        _check_generator(generator, device)
        f32 = dict(device=device, dtype=torch.float32)
        n_filt = len(self.orders) * self.n_cutoffs
        idx = torch.randint(self.bank_size, (2, batch_size, channels), device=device, generator=generator)
        identity = idx >= n_filt
        fidx = idx.clamp(max=max(n_filt - 1, 0))
        orders = torch.tensor(self.orders, **f32)
        cut = torch.tensor(self.cutoffs_px(height, width), **f32)
        order = orders[fidx // self.n_cutoffs]
        d0 = cut[fidx % self.n_cutoffs]

        # smooth mask: white noise low-passed with a Gaussian of std sigma (cycles / image), min-max per image
        noise = torch.randn(batch_size, 1, height, width, generator=generator, **f32)
        lo, hi = self.mask_sigma_range
        sigma = lo + (hi - lo) * torch.rand(batch_size, generator=generator, **f32)
        dist = _dc_distance(height, width, device, half=True)
        lowpass = torch.exp(-0.5 * (dist / sigma.view(-1, 1, 1, 1)) ** 2)
        field = torch.fft.irfft2(torch.fft.rfft2(noise) * lowpass, s=(height, width))
        flat = field.reshape(batch_size, -1)
        fmin = flat.min(dim=1, keepdim=True).values
        fmax = flat.max(dim=1, keepdim=True).values
        mask = ((flat - fmin) / (fmax - fmin).clamp_min(self.eps)).view_as(field)
        return RaffeSDGDraw(d0_px=d0, order=order, identity=identity, mask=mask)

    def _view(self, x: Tensor, d0: Tensor, order: Tensor, identity: Tensor) -> Tensor:
        filtered = butterworth_filter(x, d0.to(x.dtype), order.to(x.dtype)).abs()
        y = torch.where(identity.view(*identity.shape, 1, 1), x, filtered)
        return _robust_minmax(y, self.percentiles[0], self.percentiles[1], self.eps)

    @torch.no_grad()
    def apply(self, x: Tensor, draw: RaffeSDGDraw) -> Tensor:
        """Filter, normalise, mix and z-score ``x`` with a given draw (see the module doc)."""
        b, c, h, w = _check_input(x, "RaffeSDG")
        if b == 0:
            return x.clone()
        if draw.d0_px.shape != (2, b, c) or draw.mask.shape != (b, 1, h, w):
            raise ValueError(
                f"draw does not match an input of shape {tuple(x.shape)}; draw it with sample(B, C, H, W, ...)"
            )
        acc = _acc_dtype(x)
        with _no_autocast(x):
            xf = x.to(acc)
            f1 = self._view(xf, draw.d0_px[0], draw.order[0], draw.identity[0])
            f2 = self._view(xf, draw.d0_px[1], draw.order[1], draw.identity[1])
            m = draw.mask.to(acc)
            out = _zscore(m * f1 + (1.0 - m) * f2, self.eps)
        return out.to(x.dtype)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W); returns (B, C, H, W) in ``x``'s dtype, each image z-scored."""
        _check_input(x, "RaffeSDG")
        _check_generator(generator, x.device)
        b, c, h, w = x.shape
        if b == 0:
            return x.clone()
        return self.apply(x, self.sample(b, c, h, w, x.device, generator))


# ------------------------------------------------------------------------------------------------------------- FMAug
def gaussian_kernel1d(width: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """Normalised ``width``-tap Gaussian of std ``sigma`` centred on ``(width - 1) / 2`` (as OpenCV's)."""
    i = torch.arange(int(width), device=device, dtype=dtype) - (int(width) - 1) / 2.0
    k = torch.exp(-0.5 * (i / float(sigma)) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, width: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of each ``(b, c)`` plane: two ``conv1d`` passes with replicate padding.

    The padding is ``width // 2`` on both sides, so even widths would shift by half a pixel (the bank is odd).
    """
    b, c, h, w = x.shape
    k = gaussian_kernel1d(width, sigma, x.device, x.dtype).view(1, 1, -1)
    lp, rp = (width - 1) // 2, width // 2
    rows = F.pad(x.reshape(b * c * h, 1, w), (lp, rp), mode="replicate")
    y = F.conv1d(rows, k).view(b, c, h, w)
    cols = F.pad(y.transpose(-1, -2).reshape(b * c * w, 1, h), (lp, rp), mode="replicate")
    return F.conv1d(cols, k).view(b, c, w, h).transpose(-1, -2).contiguous()


def high_frequency_component(x: Tensor, width: int, sigma: float, normalize: bool = True, eps: float = 1e-6) -> Tensor:
    """``x - GaussianBlur_{width, sigma}(x)``, z-scored per image when ``normalize`` (no scaling, no clamping)."""
    hfc = x - gaussian_blur(x, width, sigma)
    return _zscore(hfc, eps) if normalize else hfc


@dataclass(frozen=True)
class FMAugDraw:
    """One draw of FMAug for a batch: filter indices into the bank and the pasted rectangle (shared by the batch).

    The rectangle is rows ``y0 : y0 + box_h`` and columns ``x0 : x0 + box_w`` (possibly empty).
    """

    filter_a: int
    filter_b: int
    y0: int
    x0: int
    box_h: int
    box_w: int


class FMAug(torch.nn.Module):
    """FreeSDG frequency-mixing augmentation (Gaussian HFC + CutMix), augmentation only; see the module doc.

    Args:
        kernel_widths, sigmas: zipped into the filter bank (reference: ``range(5, 50, 2)``, ``range(2, 22)``,
            20 pairs since ``zip`` stops at the shorter).
        normalize: z-score each HFC per image (True, this project) or keep the raw ``x - blur``.
        distinct: draw A != B (default) or two independent draws.
        eps: guard of the z-score denominator.

    Shapes:
        forward(x: (B, C, H, W) float, generator) -> (B, C, H, W) in ``x``'s dtype.
    """

    def __init__(
        self,
        kernel_widths: tuple[int, ...] | list[int] = tuple(range(5, 50, 2)),
        sigmas: tuple[float, ...] | list[float] = tuple(range(2, 22)),
        normalize: bool = True,
        distinct: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        bank = tuple((int(w), float(s)) for w, s in zip(kernel_widths, sigmas))
        if not bank or any(w < 1 or s <= 0 for w, s in bank):
            raise ValueError("the filter bank must be non-empty with widths >= 1 and sigmas > 0")
        if distinct and len(bank) < 2:
            raise ValueError("distinct=True needs at least two filters in the bank")
        self.bank = bank
        self.normalize = bool(normalize)
        self.distinct = bool(distinct)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        return f"n_filters={len(self.bank)}, normalize={self.normalize}, distinct={self.distinct}"

    def sample(
        self, height: int, width: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> FMAugDraw:
        """Draw filters A, B and the CutMix rectangle for an ``height x width`` batch."""
        device = torch.device(device)
        _check_generator(generator, device)
        n = len(self.bank)

        def randint(high: int) -> int:
            return int(torch.randint(high, (1,), device=device, generator=generator).item())

        a = randint(n)
        b = (a + 1 + randint(n - 1)) % n if self.distinct else randint(n)
        box_h, box_w = randint(height), randint(width)
        y0, x0 = randint(height - box_h + 1), randint(width - box_w + 1)
        return FMAugDraw(a, b, y0, x0, box_h, box_w)

    @torch.no_grad()
    def apply(self, x: Tensor, draw: FMAugDraw) -> Tensor:
        """``HFC_A(x)`` with the rectangle of ``draw`` replaced by ``HFC_B(x)``."""
        _check_input(x, "FMAug")
        if x.shape[0] == 0:
            return x.clone()
        acc = _acc_dtype(x)
        with _no_autocast(x):
            xf = x.to(acc)
            out = high_frequency_component(xf, *self.bank[draw.filter_a], self.normalize, self.eps)
            if draw.box_h > 0 and draw.box_w > 0:
                hfc_b = high_frequency_component(xf, *self.bank[draw.filter_b], self.normalize, self.eps)
                ys = slice(draw.y0, draw.y0 + draw.box_h)
                xs = slice(draw.x0, draw.x0 + draw.box_w)
                out[..., ys, xs] = hfc_b[..., ys, xs]
        return out.to(x.dtype)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W); returns (B, C, H, W) in ``x``'s dtype."""
        _check_input(x, "FMAug")
        _check_generator(generator, x.device)
        return self.apply(x, self.sample(x.shape[-2], x.shape[-1], x.device, generator))
