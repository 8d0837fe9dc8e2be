"""The segmentation network: a 2D U-Net whose constructor arguments are all plain JSON values.

``arch`` picks the network: ``"monai"`` (default) is ``monai.networks.nets.UNet``; ``"authors"`` is the FedGIN
authors' U-Net (``fedgin.engine.authors_unet``). The same class is named in the FLARE server's persistor config
and rebuilt from a model file's metadata, so the architecture travels as data.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

from fedgin.common.job_args import keep_job_args
from fedgin.augment.eval_input import eval_input_filter
from fedgin.engine.norm import convert_to_domain_bn

__all__ = ["SegUNet", "num_outputs", "build_model", "ARCHS"]

#: the networks ``SegUNet`` can be
ARCHS = ("monai", "authors")


def num_outputs(num_classes: int) -> int:
    """Output channels for ``num_classes`` foreground classes: 1 (sigmoid) for binary, K+1 (softmax) otherwise."""
    if num_classes < 1:
        raise ValueError(f"need at least one foreground class, got {num_classes}")
    return 1 if num_classes == 1 else num_classes + 1


class SegUNet(nn.Module):
    """A U-Net for single-channel 2D slices: ``monai.networks.nets.UNet`` (``arch="monai"``) or the authors'
    U-Net (``arch="authors"``: ``channels`` are its encoder levels then its bottleneck, ``strides`` must all be 2,
    ``num_res_units`` is not used).

    Input (B, 1, H, W) float; output logits (B, num_outputs(num_classes), H, W). H and W must be divisible by
    the product of ``strides``. With ``domains``, every batch-norm layer is a ``DomainBatchNorm`` whose branch is
    selected with ``fedgin.engine.norm.set_domain``. With ``test_input`` other than ``"raw"``, the input is passed
    through that reference test-time filter (``fedgin.augment.eval_input``) in eval mode only. The network is
    held as ``self.model`` (MONAI's own attribute name), so MONAI U-Net weights keep MONAI's keys.
    """

    def __init__(
        self,
        num_classes: int = 1,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        domains: Sequence[str] = (),
        test_input: str = "raw",
        arch: str = "monai",
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch = arch
        self.channels, self.strides = tuple(channels), tuple(strides)
        self.num_res_units, self.norm, self.dropout = int(num_res_units), norm, float(dropout)
        if arch == "monai":
            self.model = UNet(spatial_dims=2, in_channels=1, out_channels=num_outputs(num_classes),
                              channels=self.channels, strides=self.strides, num_res_units=num_res_units, norm=norm,
                              dropout=dropout).model
        else:
            from fedgin.engine.authors_unet import AuthorsUNetCore

            if any(s != 2 for s in self.strides):
                raise ValueError(f"the authors' U-Net pools by 2 at every level: strides must all be 2, got "
                                 f"{list(self.strides)}")
            self.model = AuthorsUNetCore(num_outputs(num_classes), self.channels, norm=norm, dropout=dropout)
        self.num_classes = num_classes
        self.domains = tuple(domains)
        if self.domains:
            if norm != "batch":
                raise ValueError(f"domain-specific batch norm needs norm='batch', got {norm!r}")
            convert_to_domain_bn(self, self.domains)
        self.test_input = test_input
        self._eval_filter = eval_input_filter(test_input)
        keep_job_args(self, num_classes=num_classes, channels=list(channels), strides=list(strides),
                      num_res_units=num_res_units, norm=norm, dropout=dropout, domains=list(domains),
                      test_input=test_input, arch=arch)

    def model_config(self) -> dict:
        """The ``fedgin.engine.ModelConfig`` values this network was built with (plain JSON)."""
        return {"channels": list(self.channels), "strides": list(self.strides), "num_res_units": self.num_res_units,
                "norm": self.norm, "dropout": self.dropout, "domains": list(self.domains),
                "test_input": self.test_input, "arch": self.arch}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._eval_filter is not None and not self.training:
            x = self._eval_filter(x)
        return self.model(x)


def build_model(num_classes: int, config) -> SegUNet:
    """``SegUNet`` for ``num_classes`` foreground classes from a ``fedgin.engine.config.ModelConfig``."""
    return SegUNet(
        num_classes=num_classes,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
        domains=config.domains,
        test_input=config.test_input,
        arch=config.arch,
    )
