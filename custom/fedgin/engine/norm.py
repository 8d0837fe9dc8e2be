"""Batch-norm bookkeeping for FedBN and DSBN.

MONAI names its norm layers ``...adn.N`` (not ``bn``), so FedBN's reference rule ``'bn' in key`` would match
nothing here: batch-norm parameters and buffers are found by module type instead.

``DomainBatchNorm`` is domain-specific batch norm (Chang et al., CVPR 2019): one ``BatchNorm2d`` branch per domain
(here: per modality), shared convolutions; the branch in use is set on the whole model with ``set_domain``, so a
batch must come from one domain.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["DomainBatchNorm", "batchnorm_keys", "convert_to_domain_bn", "set_domain", "domain_keys"]


class DomainBatchNorm(nn.Module):
    """One ``BatchNorm2d`` per domain; ``forward`` uses the branch named by ``self.domain``.

    Input/output: (B, C, H, W) float.
    """

    def __init__(self, template: nn.modules.batchnorm._BatchNorm, domains: Iterable[str]) -> None:
        super().__init__()
        self.branches = nn.ModuleDict()
        for d in domains:
            bn = nn.BatchNorm2d(template.num_features, eps=template.eps, momentum=template.momentum,
                                affine=template.affine, track_running_stats=template.track_running_stats)
            bn.load_state_dict(template.state_dict())
            self.branches[d] = bn
        self.domain: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.domain is None:
            raise RuntimeError(f"DomainBatchNorm: no domain set (one of {list(self.branches)}); call set_domain()")
        return self.branches[self.domain](x)


def convert_to_domain_bn(model: nn.Module, domains: Iterable[str]) -> nn.Module:
    """Replace every batch-norm layer of ``model`` in place by a ``DomainBatchNorm`` with ``domains``."""
    domains = list(domains)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, DomainBatchNorm(child, domains))
        else:
            convert_to_domain_bn(child, domains)
    return model


def set_domain(model: nn.Module, domain: str) -> None:
    """Select the branch of every ``DomainBatchNorm`` in ``model``; unknown domain → ``ValueError``."""
    for m in model.modules():
        if isinstance(m, DomainBatchNorm):
            if domain not in m.branches:
                raise ValueError(f"no batch-norm branch for domain {domain!r}; branches: {list(m.branches)}")
            m.domain = domain


def batchnorm_keys(model: nn.Module) -> set[str]:
    """state_dict keys (weights, biases, running stats, counters) of every batch-norm layer, found by type."""
    keys = set()
    for prefix, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            keys.update(f"{prefix}.{k}" if prefix else k for k in m.state_dict())
    return keys


def domain_keys(model: nn.Module, domain: str) -> set[str]:
    """state_dict keys of the ``domain`` branches of every ``DomainBatchNorm``."""
    return {k for k in batchnorm_keys(model) if f".branches.{domain}." in f".{k}"}
