"""Sample-weighted FedAvg that refuses bad updates: ``CheckedAggregator``.

NVFlare's ``InTimeAccumulateWeightedAggregator`` averages every update it is given. One site sending NaN, Inf, a
tensor of another shape or foreign keys (a bug, a different model version, a compromised site) would poison the
global model of every hospital. ``CheckedAggregator`` checks each contribution against the current global model
first; a bad one is logged with the site's name and the reason and left out, and the round goes on with the
others (aggregation weights N_k/N are then over the accepted sites only).

Checks (``update_problems``):
    - the DXO is ``WEIGHT_DIFF`` (what every FedGIN site sends);
    - every key exists in the global model, with the same shape, as a finite numeric array;
    - every key of the global model is present, except batch-norm keys when the job's method keeps batch norm at
      the sites (FedBN; DSBN sends only its own modality's branch) and layers the job's ``exclude`` privacy
      filter keeps at the sites;
    - ``NUM_STEPS_CURRENT_ROUND`` (the site's N_k) is a positive integer, at most ``max_num_samples`` when set.

SCAFFOLD's reply is a COLLECTION: the weight difference (checked as above) and the control-variate difference Δc_k
(checked the same way against the network's parameters; buffers have no control variate).

A site's N_k is self-reported: the server cannot verify it. ``max_num_samples`` bounds how much one site can
weigh; ``aggregation_weights`` (NVFlare's static per-site multipliers) can fix the weights outright.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.fl_constant import ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.model import ModelLearnable, ModelLearnableKey
from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
from nvflare.app_common.app_constant import AlgorithmConstants, AppConstants

from fedgin.common.job_args import keep_job_args

__all__ = ["CheckedAggregator", "update_problems", "collection_problems", "SCAFFOLD_DATA_KINDS", "MAX_LISTED"]

MAX_LISTED = 3  # keys named in one message
#: ``expected_data_kind`` of SCAFFOLD's aggregator: the weight difference and the control-variate difference
SCAFFOLD_DATA_KINDS = {AppConstants.MODEL_WEIGHTS: DataKind.WEIGHT_DIFF,
                       AlgorithmConstants.SCAFFOLD_CTRL_DIFF: DataKind.WEIGHT_DIFF}


def _names(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def update_problems(
    dxo: DXO,
    global_weights: dict[str, Any],
    optional_keys: set[str] = frozenset(),
    max_num_samples: int = 0,
) -> list[str]:
    """Why the update ``dxo`` must not be averaged into ``global_weights`` ({name: array}); empty if it is fine."""
    if dxo.data_kind != DataKind.WEIGHT_DIFF:
        return [f"data kind {dxo.data_kind}, expected {DataKind.WEIGHT_DIFF}"]
    data = dxo.data
    if not isinstance(data, dict) or not data:
        return ["no weights"]
    problems = []
    unknown = [k for k in data if k not in global_weights]
    if unknown:
        problems.append(f"{len(unknown)} key(s) not in the global model: {_names(unknown)}")
    missing = [k for k in global_weights if k not in data and k not in optional_keys]
    if missing:
        problems.append(f"{len(missing)} key(s) of the global model missing: {_names(missing)}")
    shapes, kinds, nonfinite = [], [], []
    for k, v in data.items():
        if k not in global_weights:
            continue
        a = np.asarray(v)
        if a.shape != np.shape(global_weights[k]):
            shapes.append(f"{k} {tuple(a.shape)} vs {tuple(np.shape(global_weights[k]))}")
        elif a.dtype.kind not in "fiub":
            kinds.append(f"{k} ({a.dtype})")
        elif a.dtype.kind == "f" and not np.isfinite(a).all():
            nonfinite.append(f"{k} ({int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} Inf)")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_names(shapes)}")
    if kinds:
        problems.append(f"{len(kinds)} non-numeric array(s): {_names(kinds)}")
    if nonfinite:
        problems.append(f"{len(nonfinite)} non-finite array(s): {_names(nonfinite)}")
    n = dxo.get_meta_prop(MetaKey.NUM_STEPS_CURRENT_ROUND)
    if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or not math.isfinite(n) \
            or n <= 0 or int(n) != n:
        problems.append(f"NUM_STEPS_CURRENT_ROUND (the site's sample count) is {n!r}, not a positive integer")
    elif max_num_samples and n > max_num_samples:
        problems.append(f"NUM_STEPS_CURRENT_ROUND {int(n)} exceeds max_num_samples {max_num_samples}")
    return problems


def collection_problems(dxo: DXO, global_weights: dict[str, Any], optional_keys: set[str], parameter_keys: set[str],
                        max_num_samples: int = 0) -> list[str]:
    """``update_problems`` of each part of a SCAFFOLD reply: the weight difference against ``global_weights``, the
    control-variate difference against the parameters (``parameter_keys``) of the global model."""
    if dxo.data_kind != DataKind.COLLECTION or not isinstance(dxo.data, dict):
        return [f"data kind {dxo.data_kind}, expected a {DataKind.COLLECTION} (SCAFFOLD: weights and controls)"]
    missing = [k for k in SCAFFOLD_DATA_KINDS if k not in dxo.data]
    if missing:
        return [f"collection lacks {missing} (got {sorted(dxo.data)})"]
    problems = update_problems(dxo.data[AppConstants.MODEL_WEIGHTS], global_weights, optional_keys, max_num_samples)
    controls = {k: v for k, v in global_weights.items() if k in parameter_keys}
    problems += [f"controls: {p}" for p in update_problems(dxo.data[AlgorithmConstants.SCAFFOLD_CTRL_DIFF], controls,
                                                           optional_keys & parameter_keys, max_num_samples)]
    return problems


class CheckedAggregator(InTimeAccumulateWeightedAggregator):
    """``InTimeAccumulateWeightedAggregator`` (WEIGHT_DIFF, weights N_k) that first runs ``update_problems``.

    Args:
        method: the job's method; when it keeps batch norm at the sites (FedBN, DSBN) updates may omit
            batch-norm keys.
        privacy: the job's ``privacy`` value; with the ``exclude`` filter updates may omit the excluded layers.
        persistor_id: the component holding the global model's ``torch.nn.Module`` (to find batch-norm keys).
        max_num_samples: upper bound on a site's reported N_k (0 = no bound).
        expected_data_kind: ``WEIGHT_DIFF``, or ``SCAFFOLD_DATA_KINDS`` (checked with ``collection_problems``).
        **kwargs: ``InTimeAccumulateWeightedAggregator`` arguments (``aggregation_weights``, ``exclude_vars``).
    """

    def __init__(self, method: str = "none", privacy: dict[str, Any] | None = None, persistor_id: str = "persistor",
                 max_num_samples: int = 0, expected_data_kind: str = DataKind.WEIGHT_DIFF, **kwargs) -> None:
        from fedgin.flare.privacy import excluded_pattern
        from fedgin.engine.methods import get_method

        super().__init__(expected_data_kind=expected_data_kind, **kwargs)
        self.batch_norm = get_method(method).batch_norm  # raises on an unknown method
        self.excluded = excluded_pattern(privacy)
        self.persistor_id = persistor_id
        self.max_num_samples = int(max_num_samples or 0)
        self._optional: set[str] | None = None
        self._parameters: set[str] = set()
        self.collection = isinstance(expected_data_kind, dict)  # (NVFlare turns a single kind into a dict)
        self.rejected: list[dict[str, Any]] = []
        keep_job_args(self, method=method, privacy=privacy, persistor_id=persistor_id,
                      max_num_samples=self.max_num_samples, expected_data_kind=expected_data_kind)

    def _optional_keys(self, fl_ctx: FLContext) -> set[str]:
        if self._optional is None:
            model = getattr(fl_ctx.get_engine().get_component(self.persistor_id), "model", None)
            if model is None:
                raise ValueError(f"component {self.persistor_id!r} has no model to check updates against")
            optional = set()
            if self.batch_norm != "shared":
                from fedgin.engine.norm import batchnorm_keys

                optional = batchnorm_keys(model)
            if self.excluded is not None:
                optional |= {k for k in model.state_dict() if self.excluded.search(k)}
            self._optional = optional
            self._parameters = {k for k, _ in model.named_parameters()}
        return self._optional

    def problems(self, shareable: Shareable, fl_ctx: FLContext) -> list[str]:
        """Why this train result must not be averaged (empty: fine). Error replies are the parent's business."""
        learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        try:
            dxo = from_shareable(shareable)
        except Exception as e:
            return [f"not a DXO ({type(e).__name__}: {e})"]
        if not isinstance(learnable, ModelLearnable):
            return ["no global model in the server's context to check the update against"]
        optional = self._optional_keys(fl_ctx)
        if self.collection:
            return collection_problems(dxo, learnable[ModelLearnableKey.WEIGHTS], optional, self._parameters,
                                       self.max_num_samples)
        return update_problems(dxo, learnable[ModelLearnableKey.WEIGHTS], optional, self.max_num_samples)

    def accept(self, shareable: Shareable, fl_ctx: FLContext) -> bool:
        if shareable.get_return_code() not in (None, ReturnCode.OK):
            return super().accept(shareable, fl_ctx)  # the parent logs and disregards error replies
        problems = self.problems(shareable, fl_ctx)
        if problems:
            site = shareable.get_peer_prop(key=ReservedKey.IDENTITY_NAME, default="?")
            rnd = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
            self.rejected.append({"round": rnd, "site": site, "problems": problems})
            self.log_error(fl_ctx, f"REJECTED update of {site} at round {rnd}: {'; '.join(problems)}")
            return False
        return super().accept(shareable, fl_ctx)
