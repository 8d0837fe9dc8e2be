"""FedDA-style feature alignment: our own reimplementation from the paper's description (no code was available).

FedDA ("Adversarial Versus Federated", 2025) aligns client features adversarially. Here, at each site and round:

- "target" features: bottleneck features of the frozen global model received this round, on the site's batch;
- "source" features: the same batch through the local model being trained;
- a discriminator D (local to the site, never sent, never aggregated) learns to tell source (1) from target (0);
- the segmentation network gets ``λ·BCE(D(source), 0)``: it is trained to make its features look like the global
  model's, i.e. to fool D.

Only the segmentation weights leave a site, as for every other method. The bottleneck is the U-Net's deepest
layer (the only one with ``channels[-1]`` output channels); D is a small conv net with global average pooling.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureAdversary", "bottleneck"]


def bottleneck(model: nn.Module, channels: int) -> nn.Module:
    """The outermost module of ``model`` whose ``out_channels`` is ``channels`` (the U-Net's deepest layer)."""
    for _, m in model.named_modules():
        if getattr(m, "out_channels", None) == channels:
            return m
    raise ValueError(f"no layer with {channels} output channels in the model")


class FeatureAdversary:
    """Discriminator, feature hooks and the frozen reference (global) model of one site.

    Args:
        model: the segmentation network being trained.
        channels: channels of its bottleneck (``ModelConfig.channels[-1]``).
        lr: discriminator learning rate (Adam).
        weight: λ of the adversarial term in the segmentation loss.
    """

    def __init__(self, model: nn.Module, channels: int, lr: float = 1e-4, weight: float = 0.01) -> None:
        self.model, self.weight = model, weight
        device = next(model.parameters()).device
        self.discriminator = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels // 2, channels // 4, 3, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels // 4, 1),
        ).to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
        self.channels = channels
        self.reference: nn.Module | None = None
        self._features: dict[str, torch.Tensor] = {}
        bottleneck(model, channels).register_forward_hook(lambda m, i, o: self._features.__setitem__("source", o))
        self.last = {"d_loss": float("nan"), "adv_loss": float("nan")}

    def set_reference(self, weights: dict) -> None:
        """Freeze a copy of the model with ``weights`` (the global model of this round) as the target."""
        ref = copy.deepcopy(self.model)
        for m in ref.modules():  # the copy must not fire the local model's feature hook
            m._forward_hooks.clear()
        ref.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()}, strict=False)
        for p in ref.parameters():
            p.requires_grad_(False)
        self.reference = ref.eval()
        self._ref_layer = bottleneck(ref, self.channels)
        self._ref_layer.register_forward_hook(lambda m, i, o: self._features.__setitem__("target", o))

    def generator_loss(self, images: torch.Tensor) -> torch.Tensor:
        """λ·BCE(D(source), 0) for the source features of the last forward pass; runs the reference on ``images``."""
        if self.reference is None:
            raise ValueError("fedda aligns a site's features with the global model's: it runs only in a federation")
        with torch.no_grad():
            self.reference(images)
        src = self._features["source"].float()
        logit = self.discriminator(src)
        loss = F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit))
        self.last["adv_loss"] = float(loss.detach())
        return self.weight * loss

    def discriminator_step(self) -> float:
        """One D step on the last batch: source → 1, target (global model) → 0."""
        src = self._features["source"].detach().float()
        tgt = self._features["target"].detach().float()
        self.optimizer.zero_grad(set_to_none=True)
        ls, lt = self.discriminator(src), self.discriminator(tgt)
        loss = F.binary_cross_entropy_with_logits(ls, torch.ones_like(ls)) + F.binary_cross_entropy_with_logits(
            lt, torch.zeros_like(lt))
        loss.backward()
        self.optimizer.step()
        self.last["d_loss"] = float(loss.detach())
        return self.last["d_loss"]
