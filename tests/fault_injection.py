"""Test-only FLARE filters that make one real site misbehave (copied into that site's app/custom by the tests).

The site still runs the real ``FedGINExecutor``; these filters sit between it and the network, as a bug or a
compromised site would.
"""

from __future__ import annotations

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.filter import Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

MODES = ("nan", "inf", "shape", "extra_key", "missing_key", "count", "kind")


def corrupt(dxo: DXO, mode: str) -> DXO:
    """A copy of the train result ``dxo`` broken in one way."""
    data = {k: np.array(v, copy=True) for k, v in dxo.data.items()}
    meta = dict(dxo.meta)
    first = next(k for k, v in data.items() if v.dtype.kind == "f" and v.size > 1)
    if mode == "nan":
        data[first].flat[0] = np.nan
    elif mode == "inf":
        data[first].flat[-1] = np.inf
    elif mode == "shape":
        data[first] = np.zeros(data[first].shape + (2,), dtype=data[first].dtype)
    elif mode == "extra_key":
        data["injected.weight"] = np.zeros(3, dtype=np.float32)
    elif mode == "missing_key":
        data.pop(first)
    elif mode == "count":
        meta[MetaKey.NUM_STEPS_CURRENT_ROUND] = -5
    elif mode == "kind":
        return DXO(DataKind.WEIGHTS, data, meta=meta)
    else:
        raise ValueError(mode)
    return DXO(dxo.data_kind, data, meta=meta)


class CorruptUpdate(Filter):
    """Task-result filter: breaks the train result of the rounds in ``plan`` ({"round": mode})."""

    def __init__(self, plan: dict[str, str]) -> None:
        super().__init__()
        self.plan = {int(k): v for k, v in plan.items()}

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
        if rnd not in self.plan or shareable.get_return_code() not in (None, "OK"):
            return shareable
        out = corrupt(from_shareable(shareable), self.plan[rnd]).to_shareable()
        out.set_header(AppConstants.CURRENT_ROUND, rnd)
        self.log_warning(fl_ctx, f"FAULT INJECTION: round {rnd}: sending a {self.plan[rnd]} update")
        return out


class PoisonGlobalModel(Filter):
    """Task-data filter: puts NaN into the global model this site receives at the rounds in ``rounds``, so its
    training loss becomes non-finite."""

    def __init__(self, rounds: list[int]) -> None:
        super().__init__()
        self.rounds = set(rounds)

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
        if rnd not in self.rounds:
            return shareable
        dxo = from_shareable(shareable)
        data = {k: np.full_like(np.asarray(v), np.nan) if np.asarray(v).dtype.kind == "f" else v
                for k, v in dxo.data.items()}
        self.log_warning(fl_ctx, f"FAULT INJECTION: round {rnd}: global model replaced by NaN at this site")
        return DXO(dxo.data_kind, data, meta=dxo.meta).update_shareable(shareable)
