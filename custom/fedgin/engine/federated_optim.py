"""The site's side of the federated optimisers FedProx and SCAFFOLD (``fedgin.engine.methods.FED_OPTIMIZERS``).

FedAvg and FedOpt train at the site exactly alike (FedOpt differs on the server only, ``fedgin.flare.server_optim``).

- FedProx (Li et al., MLSys 2020): every local step minimises loss + (μ/2)·‖θ − θ_global‖², the sum over the
  network's parameters (not its buffers), θ_global the model the site received this round
  (``proximal_term``; the same sum as NVFlare's ``PTFedProxLoss``, which a test checks).
- SCAFFOLD (Karimireddy et al., ICML 2020, option II): after every local optimiser step θ ← θ − η·(c − c_k), c the
  server's control variate, c_k the site's; after the K local steps c_k⁺ = c_k − c + (θ_global − θ)/(K·η), and the
  site sends Δc_k = c_k⁺ − c_k beside its weight difference (``ScaffoldControls``, on NVFlare's
  ``PTScaffoldHelper``). η is the optimiser's learning rate of the round. SCAFFOLD is derived for SGD; the engine's
  optimiser is AdamW (the paper's), so the correction is applied after each AdamW step, as NVFlare's helper does
  for any optimiser: a documented deviation from the SCAFFOLD paper, not from FedGIN's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["proximal_term", "ScaffoldControls"]


def proximal_term(model: torch.nn.Module, reference: torch.nn.Module, mu: float) -> torch.Tensor:
    """(μ/2)·Σ_p ‖p − p_ref‖² over the trainable parameters (float32 scalar; gradients flow into ``model`` only)."""
    ref = dict(reference.named_parameters())
    total = torch.zeros((), dtype=torch.float32, device=next(model.parameters()).device)
    for name, p in model.named_parameters():
        if p.requires_grad:
            total = total + torch.sum((p.float() - ref[name].detach().float()) ** 2)
    return 0.5 * float(mu) * total


class ScaffoldControls:
    """One site's SCAFFOLD state across rounds: its control variate c_k (zero at first), kept in memory.

    A site process that restarts starts again from c_k = 0 (the server's c is kept by the server).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from nvflare.app_opt.pt.scaffold import PTScaffoldHelper

        self.model = model
        self.helper = PTScaffoldHelper()
        self.helper.init(model)
        self._round: tuple[dict, dict] | None = None

    def start_round(self, global_controls: dict[str, Any]) -> None:
        """Take the server's c ({name: array}, extra keys such as buffers ignored) for this round's steps."""
        self.helper.load_global_controls(global_controls)
        self._round = self.helper.get_params()

    def after_step(self, lr: float) -> None:
        """θ ← θ − lr·(c − c_k), after one optimiser step."""
        if self._round is None:
            raise RuntimeError("SCAFFOLD: start_round was not called before training")
        self.helper.model_update(self.model, lr, *self._round)

    def end_round(self, lr: float, global_model: torch.nn.Module) -> dict[str, np.ndarray]:
        """Update c_k from the round's K steps; returns Δc_k ({parameter name: float32 array})."""
        if self._round is None:
            raise RuntimeError("SCAFFOLD: start_round was not called before training")
        self.helper.terms_update(self.model, lr, *self._round, global_model)
        self._round = None
        return {k: np.asarray(v, dtype=np.float32) for k, v in self.helper.get_delta_controls().items()}

    def local_controls(self) -> dict[str, np.ndarray]:
        """c_k as {name: float32 array} (for tests and inspection)."""
        return {k: v.numpy().astype(np.float32) for k, v in self.helper.c_local.state_dict().items()}
