"""GIN: Global Intensity Non-linear augmentation (Ouyang et al., TMI 2022), as used by FedGIN.

A shallow convolutional network with freshly drawn random weights, ``g``, is applied to the image, blended
with the input and rescaled to the input's Frobenius norm::

    x_mix = alpha * g(x) + (1 - alpha) * x,        alpha ~ U(alpha_range), one per sample
    out   = x_mix * ||x||_F / (||x_mix||_F + eps)  (norms per sample, over all channels and pixels)

``g`` has ``n_layers`` conv layers ``C -> m -> ... -> m -> C`` (``m = interm_channels``), stride 1, "same"
padding, kernel size drawn from ``kernel_sizes`` per layer, weights and biases ~ N(0, 1) (no fan-in scaling),
and a LeakyReLU after every layer but the last.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GIN", "GINNetwork"]


@dataclass(frozen=True)
class GINNetwork:
    """One draw of the random network(s) for a batch; ``n`` = batch size if per-sample, else 1.

    Layer ``l`` maps ``c_in -> c_out`` channels; ``K = max(kernel_sizes)``.

    Attributes:
        weights: per layer, ``(n * c_out, c_in, K, K)`` float32; a ``k < K`` kernel is zero outside its
            centred ``k x k`` block (same conv as a ``k x k`` kernel with padding ``k // 2``).
        biases: per layer, ``(n * c_out,)`` float32.
        slopes: per activated layer (all but the last), ``(n,)`` float32 LeakyReLU negative slopes.
        kernel_sizes: ``(n, n_layers)`` int64, the drawn kernel size of each layer.
        alpha: ``(B,)`` float32 blend weights (always one per sample).
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    slopes: tuple[Tensor, ...]
    kernel_sizes: Tensor
    alpha: Tensor


def _check_input(x: Tensor, name: str) -> tuple[int, int, int, int]:
    """``x``'s shape (B, C, H, W); ValueError unless ``x`` is a floating-point 4-D tensor (``name``: the
    augmentation's, for the message)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} expects a 4-D (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point tensor, got dtype {x.dtype}")
    b, c, h, w = x.shape
    return b, c, h, w


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    gdev = generator.device
    same = gdev.type == device.type and (gdev.index is None or device.index is None or gdev.index == device.index)
    if not same:
        raise ValueError(
            f"generator lives on {gdev} but the input is on {device}; create it with "
            f"torch.Generator(device={str(device)!r})"
        )


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The active autocast dtype for ``x``'s device, or None when autocast is off (or does not apply)."""
    if x.dtype == torch.float64:  # autocast never downcasts float64
        return None
    try:
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
    except (RuntimeError, TypeError, ValueError):  # device type without autocast support
        pass
    return None


class GIN(torch.nn.Module):
    """Global Intensity Non-linear augmentation. No parameters, no buffers; a new network at every call.

    Defaults follow the FedGIN paper: 4 layers, width 2, ``k in {1, 3}``, W, b ~ N(0, 1), LeakyReLU slope
    ~ U(0.01, 0.3), alpha ~ U(0, 1), Frobenius renormalisation with ``eps = 1e-5`` in the denominator only.

    Every sample gets its own network (one grouped conv per layer over ``[1, B*C, H, W]`` with
    ``groups=B``); kernel size and slopes are drawn per sample per layer (assumption: the paper does not
    say; the reference codes draw ``k`` once per layer per call). Kernels smaller than ``K = max(kernel_sizes)``
    are embedded in a ``K x K`` kernel with a zero border, which is exactly equivalent, so one conv with
    padding ``K // 2`` serves the whole batch.

    Args:
        n_layers: number of conv layers L (>= 1).
        interm_channels: width of the hidden layers.
        kernel_sizes: odd kernel sizes to draw from (uniformly).
        slope: ``"random"`` (paper: slope ~ U(slope_range) per layer per sample) or ``"fixed"``
            (``fixed_slope`` = 0.01, PyTorch's default, used by both reference codes: Ouyang et al.'s
            ``models/imagefilter.py`` and the FedGIN authors' ``clients/gin.py``).
        slope_range: ``(low, high)`` of the random slope.
        fixed_slope: slope used when ``slope="fixed"``.
        per_sample: True (default; the original GIN code, ``imagefilter.py``): one random network per sample.
            False (the FedGIN authors' ``clients/gin.py``, and the FedGIN paper's Algorithm 1, which draws W, b
            once per mini-batch): one network shared by the whole batch; alpha stays per sample. The paper is
            ambiguous: its text augments "each training sample", its Algorithm 1 draws once per batch.
        alpha_range: ``(low, high)`` of the per-sample blend weight; ``(0, 0)`` gives the identity
            (up to the ``eps`` of the renormalisation), ``(1, 1)`` the pure random-network output.
        eps: added to ``||x_mix||_F`` in the denominator.

    Shapes:
        forward(x: (B, C, H, W) float, generator) -> (B, C, H, W), dtype of ``x``. Any C >= 1.
    """

    def __init__(
        self,
        n_layers: int = 4,
        interm_channels: int = 2,
        kernel_sizes: tuple[int, ...] | list[int] = (1, 3),
        slope: str = "random",
        slope_range: tuple[float, float] = (0.01, 0.3),
        fixed_slope: float = 0.01,
        per_sample: bool = True,
        alpha_range: tuple[float, float] = (0.0, 1.0),
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if int(interm_channels) < 1:
            raise ValueError(f"interm_channels must be >= 1, got {interm_channels}")
        ks = tuple(int(k) for k in kernel_sizes)
        if not ks or any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(f"kernel_sizes must be a non-empty list of positive odd ints, got {kernel_sizes}")
        if slope not in ("random", "fixed"):
            raise ValueError(f"slope must be 'random' or 'fixed', got {slope!r}")
        s_lo, s_hi = (float(v) for v in slope_range)
        if not s_lo <= s_hi:
            raise ValueError(f"slope_range must satisfy low <= high, got {slope_range}")
        a_lo, a_hi = (float(v) for v in alpha_range)
        if not 0.0 <= a_lo <= a_hi <= 1.0:
            raise ValueError(f"alpha_range must satisfy 0 <= low <= high <= 1, got {alpha_range}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.n_layers = int(n_layers)
        self.interm_channels = int(interm_channels)
        self.kernel_sizes = ks
        self.slope = slope
        self.slope_range = (s_lo, s_hi)
        self.fixed_slope = float(fixed_slope)
        self.per_sample = bool(per_sample)
        self.alpha_range = (a_lo, a_hi)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        slope = f"U{self.slope_range}" if self.slope == "random" else f"{self.fixed_slope}"
        return (
            f"n_layers={self.n_layers}, interm_channels={self.interm_channels}, kernel_sizes={self.kernel_sizes}, "
            f"slope={slope}, per_sample={self.per_sample}, alpha_range={self.alpha_range}"
        )

    def _channels(self, c: int) -> list[tuple[int, int]]:
        """(c_in, c_out) per layer: C -> m -> ... -> m -> C."""
        widths = [c] + [self.interm_channels] * (self.n_layers - 1) + [c]
        return list(zip(widths[:-1], widths[1:]))

    @torch.no_grad()
    def sample_network(
        self,
        batch_size: int,
        channels: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> GINNetwork:
        """Draw the random network(s) for a ``(batch_size, channels, H, W)`` batch (all float32 on ``device``).

        Draws are made in float32 whatever the input dtype, so a seed gives the same network in any precision.
        """
        device = torch.device(device)
        _check_generator(generator, device)
        n = batch_size if self.per_sample else 1
        kmax = max(self.kernel_sizes)
        f32 = dict(device=device, dtype=torch.float32)
        # masks[i] is 1 on the centred k_i x k_i block of a K x K kernel
        masks = torch.zeros(len(self.kernel_sizes), kmax, kmax, **f32)
        for i, k in enumerate(self.kernel_sizes):
            o = (kmax - k) // 2
            masks[i, o : o + k, o : o + k] = 1.0
        ks_table = torch.tensor(self.kernel_sizes, device=device, dtype=torch.int64)

        weights, biases, slopes, ks_drawn = [], [], [], []
        for layer, (c_in, c_out) in enumerate(self._channels(channels)):
            idx = torch.randint(len(self.kernel_sizes), (n,), device=device, generator=generator)
            w = torch.randn(n, c_out, c_in, kmax, kmax, generator=generator, **f32)
            w = w * masks[idx].view(n, 1, 1, kmax, kmax)
            weights.append(w.view(n * c_out, c_in, kmax, kmax))
            biases.append(torch.randn(n * c_out, generator=generator, **f32))
            ks_drawn.append(ks_table[idx])
            if layer < self.n_layers - 1:
                if self.slope == "random":
                    lo, hi = self.slope_range
                    s = lo + (hi - lo) * torch.rand(n, generator=generator, **f32)
                else:
                    s = torch.full((n,), self.fixed_slope, **f32)
                slopes.append(s)
        lo, hi = self.alpha_range
        alpha = lo + (hi - lo) * torch.rand(batch_size, generator=generator, **f32)
        return GINNetwork(tuple(weights), tuple(biases), tuple(slopes), torch.stack(ks_drawn, dim=1), alpha)

    @torch.no_grad()
    def apply_network(self, x: Tensor, net: GINNetwork) -> Tensor:
        """Apply a drawn network: ``(B, C, H, W) -> (B, C, H, W)``, blend and renormalise (see module doc)."""
        b, c, h_, w_ = _check_input(x, "GIN")
        if b == 0:
            return x.clone()
        n = b if self.per_sample else 1
        c_out0 = self._channels(c)[0][1]
        if (
            len(net.weights) != self.n_layers
            or net.alpha.shape[0] != b
            or net.weights[0].shape[:2] != (n * c_out0, c)
        ):
            raise ValueError(
                f"network does not match this GIN and an input of shape {tuple(x.shape)}; "
                "draw it with sample_network(B, C, ...) of the same module"
            )
        cdt = _autocast_dtype(x) or x.dtype
        pad = max(self.kernel_sizes) // 2
        groups = b if self.per_sample else 1
        # per sample: [B, C, H, W] -> [1, B*C, H, W] so that groups=B applies sample i's kernels to sample i only.
        # Channels-last: oneDNN's grouped convolution over few channels per group is 2-3x faster in it.
        h = x.to(cdt).reshape(1, b * c, h_, w_) if self.per_sample else x.to(cdt)
        h = h.contiguous(memory_format=torch.channels_last)
        for layer, (w, bias) in enumerate(zip(net.weights, net.biases)):
            h = F.conv2d(h, w.to(cdt), bias.to(cdt), padding=pad, groups=groups)
            if layer < len(net.slopes):
                # LeakyReLU with each network's own slope = PReLU with that slope on each of its channels
                per_channel = h.shape[1] // net.slopes[layer].shape[0]
                h = F.prelu(h, net.slopes[layer].to(h.dtype).repeat_interleave(per_channel))
        g = h.reshape(b, c, h_, w_)

        acc = torch.promote_types(x.dtype, torch.float32)
        no_autocast = (
            torch.autocast(x.device.type, enabled=False) if _autocast_dtype(x) is not None else contextlib.nullcontext()
        )
        with no_autocast:
            x32, g32 = x.to(acc), g.to(acc)
            a = net.alpha.to(acc).view(b, 1, 1, 1)
            mix = torch.lerp(x32, g32, a)  # a * g + (1 - a) * x in one pass
            nx = torch.linalg.vector_norm(x32.reshape(b, -1), dim=1).view(b, 1, 1, 1)
            nm = torch.linalg.vector_norm(mix.reshape(b, -1), dim=1).view(b, 1, 1, 1)
            out = mix.mul_(nx / (nm + self.eps))
        return out.to(x.dtype)

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (B, C, H, W) with a fresh random network; returns (B, C, H, W) in ``x``'s dtype.

        All draws use ``generator`` (must live on ``x.device``) or torch's default RNG; no graph is built.
        """
        _check_input(x, "GIN")
        _check_generator(generator, x.device)
        net = self.sample_network(x.shape[0], x.shape[1], x.device, generator)
        return self.apply_network(x, net)
