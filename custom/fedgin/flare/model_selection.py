"""Best-model selection at the server: on the sites' validation Dice (default) or on a held-out site's data.

``FedGINModelSelector`` replaces NVFlare's ``IntimeModelSelector`` in the FedGIN job:

- ``heldout_datalist`` empty (default): it *is* ``IntimeModelSelector``: the best global model is chosen on the
  sample-weighted mean of the Dice that each training site reports for the incoming global model.
- ``heldout_datalist`` set (the paper's whole-heart protocol): the server evaluates every new global model, right
  after aggregation, on the ``heldout_split`` cases of that datalist (a site that never trains; the other half of
  its cases stays untouched for the final test), with the same engine and per-volume 3D Dice as everywhere else.
  A strictly better mean Dice fires ``GLOBAL_BEST_MODEL_AVAILABLE``, so the persistor saves that global model as
  ``best_FL_global_model.pt``; the sites' reported Dice are ignored for selection. Every evaluation is appended to
  ``<server app dir>/heldout_validation.json``.

The held-out data must be readable by the server process: in the simulator and in POC mode that is a local path;
in production it means the server's host holds that site's validation cases (a trust decision to make explicitly;
otherwise leave ``heldout_datalist`` empty).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnableKey
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.widgets.intime_model_selector import IntimeModelSelector

from fedgin.common.job_args import keep_job_args

__all__ = ["FedGINModelSelector", "HELDOUT_LOG"]

HELDOUT_LOG = "heldout_validation.json"


class FedGINModelSelector(IntimeModelSelector):
    """Args (besides ``IntimeModelSelector``'s):
    heldout_datalist: path of the held-out site's ``datalist.json`` ("" = select on the sites' metrics).
    heldout_split: the split of it used for selection (default ``validation``).
    classes: the job's classes; model: ``fedgin.engine.ModelConfig`` values of the global model.
    device: where the server evaluates (``cpu`` by default: the server usually has no GPU).
    aggregator_id: the aggregator; when it is a ``CheckedAggregator``, an update it rejects does not count for
        the selection either.
    """

    def __init__(
        self,
        heldout_datalist: str = "",
        heldout_split: str = "validation",
        classes: list[str] | None = None,
        model: dict[str, Any] | None = None,
        device: str = "cpu",
        aggregator_id: str = "aggregator",
        weigh_by_local_iter: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(weigh_by_local_iter=weigh_by_local_iter, **kwargs)
        self.heldout_datalist = str(heldout_datalist or "")
        self.heldout_split = heldout_split
        self.classes = list(classes or [])
        self.model_values = dict(model or {})
        self.device = device
        self.aggregator_id = aggregator_id
        self.engine = None
        self.data = None
        self.best = -math.inf
        self.history: list[dict[str, Any]] = []
        self.log_path: Path | None = None
        keep_job_args(self, heldout_datalist=self.heldout_datalist, heldout_split=heldout_split,
                      classes=self.classes, model=self.model_values, device=device, aggregator_id=aggregator_id,
                      weigh_by_local_iter=weigh_by_local_iter)

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if not self.heldout_datalist:
            if event_type == AppEventType.BEFORE_CONTRIBUTION_ACCEPT and self._refused(fl_ctx):
                return  # an update the aggregator refuses does not vote for the best model either
            super().handle_event(event_type, fl_ctx)
            return
        if event_type == EventType.START_RUN:
            self._start(fl_ctx)
        elif event_type == AppEventType.AFTER_SHAREABLE_TO_LEARNABLE and self.engine is not None:
            self._evaluate_global(fl_ctx)

    def _refused(self, fl_ctx: FLContext) -> bool:
        """True when the job's ``CheckedAggregator`` will reject the contribution being accepted."""
        aggregator = fl_ctx.get_engine().get_component(self.aggregator_id)
        if not hasattr(aggregator, "problems"):
            return False
        shareable = fl_ctx.get_peer_context().get_prop(FLContextKey.SHAREABLE)
        return shareable is not None and shareable.get_return_code() in (None, ReturnCode.OK) and \
            bool(aggregator.problems(shareable, fl_ctx))

    def _start(self, fl_ctx: FLContext) -> None:
        from fedgin.data.datalist import load_datalist, task_labels
        from fedgin.engine import Engine, SliceSet, TrainConfig

        try:
            datalist = load_datalist(Path(self.heldout_datalist).expanduser())
            if task_labels(datalist) != self.classes:
                raise ValueError(f"{self.heldout_datalist}: classes {task_labels(datalist)} differ from the job's "
                                 f"{self.classes}")
            self.data = SliceSet([datalist], self.heldout_split)
            if self.data.num_cases == 0:
                raise ValueError(f"{self.heldout_datalist}: no {self.heldout_split} cases to select the model on")
            config = TrainConfig.from_dict({"method": "none", "model": self.model_values})
            self.engine = Engine(self.classes, config, device=self.device)
        except Exception as e:
            self.system_panic(f"held-out model selection cannot start: {type(e).__name__}: {e}", fl_ctx)
            return
        app_dir = fl_ctx.get_engine().get_workspace().get_app_dir(fl_ctx.get_job_id())
        self.log_path = Path(app_dir) / HELDOUT_LOG
        self.log_info(fl_ctx, f"best model chosen on {self.data.num_cases} held-out {self.heldout_split} case(s) of "
                              f"{self.heldout_datalist} (evaluated at the server on {self.engine.device})")

    def _evaluate_global(self, fl_ctx: FLContext) -> None:
        learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        rnd = int(fl_ctx.get_prop(AppConstants.CURRENT_ROUND) or 0)
        if not learnable:
            self.log_error(fl_ctx, "no global model to validate")
            return
        t0 = time.perf_counter()
        self.engine.set_weights(learnable[ModelLearnableKey.WEIGHTS], strict=True)
        res = self.engine.evaluate(self.data)
        dice = float(res["mean_dice"])
        improved = math.isfinite(dice) and dice > self.best
        entry = {"round": rnd, "mean_dice": dice, "loss": res["loss"], "best": improved,
                 "per_class": {k: v["mean"] for k, v in res["summary"]["per_class"].items()},
                 "seconds": round(time.perf_counter() - t0, 2)}
        self.history.append(entry)
        if self.log_path is not None:
            tmp = self.log_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"datalist": self.heldout_datalist, "split": self.heldout_split,
                                       "rounds": self.history}, indent=1))
            tmp.replace(self.log_path)
        self.log_info(fl_ctx, f"round {rnd + 1}: held-out {self.heldout_split} Dice of the new global model "
                              f"{dice:.4f} (best so far {max(self.best, dice):.4f})")
        if improved:
            self.best = dice
            self.fire_event(AppEventType.GLOBAL_BEST_MODEL_AVAILABLE, fl_ctx)
