"""Test-time input filters of the frequency-domain reference pipelines, as an opt-in switch.

The reference FreeSDG and RaffeSDG pipelines (``shared/reference/gin_and_baselines.md`` section 6) do not feed the raw
image to the network at test time but a filtered one. This project uses ``fmaug`` and ``raffesdg`` as augmentation
only and tests on the raw z-scored slice by default (``"raw"``); the filters below reproduce the reference variant:

- ``"freesdg-hfc"``: FreeSDG's fixed high-frequency component ``x - GaussianBlur_{27, 9}(x)``, z-scored per image
  (the same space as this project's FMAug views);
- ``"raffesdg-butterworth"``: RaffeSDG's test filter, Butterworth high-pass with d0 = 1 px, n = 1, magnitude,
  3rd/97th percentile robust min-max, z-scored per image (as this project's RaffeSDG views).

The filter is part of the network (``fedgin.engine.model.SegUNet(test_input=...)``) and acts in eval mode only,
like dropout: training sees the augmented views, validation, cross-site evaluation and prediction see the filtered
slice. So it travels with every model file and FLARE job without further configuration.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .frequency import _acc_dtype, _no_autocast, _robust_minmax, _zscore, butterworth_filter, high_frequency_component

__all__ = ["EVAL_INPUTS", "eval_input_filter"]

EPS = 1e-6


def _freesdg_hfc(x: Tensor) -> Tensor:
    return high_frequency_component(x, 27, 9.0, normalize=True, eps=EPS)


def _raffesdg_butterworth(x: Tensor) -> Tensor:
    y = butterworth_filter(x, 1.0, 1.0).abs()
    return _zscore(_robust_minmax(y, 3.0, 97.0, EPS), EPS)


_FILTERS: dict[str, Callable[[Tensor], Tensor] | None] = {
    "raw": None,
    "freesdg-hfc": _freesdg_hfc,
    "raffesdg-butterworth": _raffesdg_butterworth,
}
EVAL_INPUTS = tuple(_FILTERS)
"""Names accepted by ``eval_input_filter`` (and by ``ModelConfig.test_input``)."""


def eval_input_filter(name: str) -> Callable[[Tensor], Tensor] | None:
    """The filter named ``name`` as ``f(x: (B, C, H, W) float) -> (B, C, H, W)`` in ``x``'s dtype; None for "raw".

    Raises:
        ValueError: unknown name.
    """
    if name not in _FILTERS:
        raise ValueError(f"unknown test input {name!r}; known: {', '.join(EVAL_INPUTS)}")
    fn = _FILTERS[name]
    if fn is None:
        return None

    @torch.no_grad()
    def apply(x: Tensor) -> Tensor:
        with _no_autocast(x):
            return fn(x.to(_acc_dtype(x))).to(x.dtype)

    apply.__name__ = name
    return apply
