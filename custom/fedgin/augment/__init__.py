"""Intensity augmentations, built by name.

Every augmentation is a ``torch.nn.Module`` without parameters whose ``forward(x, generator=None)`` maps a
``(B, C, H, W)`` float batch to a batch of the same shape and dtype. To add a method, write it in its own file
of this package (free of registry imports, so there is no import cycle) and register it below::

    from .mymethod import MyMethod
    register("mymethod")(MyMethod)

or decorate a factory defined here with ``@register("name")``.

May import ``fedgin.common`` only (augmentations are pure tensor functions).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor

from .frequency import FMAug, RaffeSDG
from .gin import GIN
from .ipa import GINIPA
from .prorandconv import ProRandConv
from .randconv import RCUNetAug

__all__ = ["AUGMENTATIONS", "FMAug", "GIN", "GINIPA", "IdentityAugmentation", "ProRandConv", "RCUNetAug", "RaffeSDG",
           "build_augmentation", "register"]

Factory = Callable[..., torch.nn.Module]
F_ = TypeVar("F_", bound=Factory)

AUGMENTATIONS: dict[str, Factory] = {}
"""Registered augmentation names -> factories (a class or a function taking keyword options)."""


def register(name: str) -> Callable[[F_], F_]:
    """Decorator registering ``factory`` under ``name`` (lower case); a name can be registered only once."""
    key = name.strip().lower()

    def deco(factory: F_) -> F_:
        if key in AUGMENTATIONS:
            raise ValueError(f"augmentation {key!r} is already registered")
        AUGMENTATIONS[key] = factory
        return factory

    return deco


@register("none")
class IdentityAugmentation(torch.nn.Module):
    """No augmentation: ``forward(x, generator=None)`` returns ``x`` itself, unchanged."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


register("gin")(GIN)
register("gin-ipa")(GINIPA)
register("raffesdg")(RaffeSDG)
register("fmaug")(FMAug)
register("prorandconv")(ProRandConv)
register("rc")(RCUNetAug)


def build_augmentation(name: str, **kwargs) -> torch.nn.Module:
    """Build the augmentation registered as ``name`` (case-insensitive) with keyword options ``kwargs``."""
    key = str(name).strip().lower()
    if key not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(sorted(AUGMENTATIONS))}")
    return AUGMENTATIONS[key](**kwargs)
