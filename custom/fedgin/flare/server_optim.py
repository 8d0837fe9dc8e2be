"""FedOpt's server step (Reddi et al., ICLR 2021): ``FedOptGenerator``.

NVFlare's ``PTFedOptModelShareableGenerator`` takes the N_k/N-averaged update Δ of a round as the negative gradient
of the global model's parameters and steps a server optimiser (SGD with momentum, Adam, ...; buffers such as batch
norm statistics are averaged as in FedAvg). It steps its own copy of the network, which must hold the current global
model. ``FedOptGenerator`` loads the global model into that copy before every step, so the step starts from the
model the sites trained on also when the job resumed from a saved model or the copy was built apart from the
persistor's network, and returns weights of their own (on the CPU NVFlare's share memory with the stepped network,
so the next round's step would change the model the server saved and selected); the optimiser's state (momentum, Adam moments) lives as long as the server's job (a resumed
job starts it afresh).

With ``SGD(lr=1, momentum=0)`` the step is θ + Δ: exactly FedAvg (a test checks this).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.learnable import Learnable
from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.pt.fedopt import PTFedOptModelShareableGenerator

from fedgin.common.options import OptionError

__all__ = ["FedOptGenerator", "check_server_optimizer", "DEFAULT_SERVER_OPTIMIZER"]

#: NVFlare's FedOpt examples' server optimiser: SGD, server learning rate 1, momentum 0.6
DEFAULT_SERVER_OPTIMIZER = {"path": "torch.optim.SGD", "args": {"lr": 1.0, "momentum": 0.6}}


def check_server_optimizer(value: Any, where: str, base: type) -> dict[str, Any]:
    """``{"path": "torch.optim.X", "args": {...}}`` naming a class derived from ``base``; else ``OptionError``."""
    import importlib

    if not isinstance(value, dict) or not isinstance(value.get("path"), str) or \
            not isinstance(value.get("args", {}), dict) or set(value) - {"path", "args", "config_type"}:
        raise OptionError(f"{where}: give {{\"path\": \"torch.optim.SGD\", \"args\": {{\"lr\": 1.0}}}}, got {value!r}")
    module, _, name = value["path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise OptionError(f"{where}: {value['path']!r} is not an importable class") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise OptionError(f"{where}: {value['path']} is not a {base.__module__}.{base.__name__}")
    return value


class FedOptGenerator(PTFedOptModelShareableGenerator):
    """``PTFedOptModelShareableGenerator`` that steps from the current global model (see the module docstring).

    Args (NVFlare's): optimizer_args, lr_scheduler_args (``{"path", "args"}``), source_model (the network, or
    the id of a component holding it), device (``None``: CUDA when available).
    """

    def shareable_to_learnable(self, shareable: Shareable, fl_ctx: FLContext) -> Learnable:
        base = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        if base and self.model is not None:
            from fedgin.engine.trainer import load_weights

            load_weights(self.model, base[ModelLearnableKey.WEIGHTS], strict=False)  # in place: the optimiser's
            # parameters stay the same tensors
        learnable = super().shareable_to_learnable(shareable, fl_ctx)
        if learnable:  # on the CPU NVFlare's arrays share memory with the stepped network: the next step would
            weights = learnable[ModelLearnableKey.WEIGHTS]  # change the saved global model in place
            for k, v in weights.items():
                weights[k] = v.clone() if isinstance(v, torch.Tensor) else np.array(v, copy=True)
        return learnable
