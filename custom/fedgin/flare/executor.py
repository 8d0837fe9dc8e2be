"""The one FLARE Executor every site runs: a thin adapter from FLARE tasks to ``fedgin.engine.site.Site``.

Tasks:
    ``train``: receive the global weights, validate them on the site's validation cases (the metric the server's
        ``IntimeModelSelector`` uses to keep the best global model), train locally, and return the weight
        difference with ``NUM_STEPS_CURRENT_ROUND`` = N_k, the site's number of training slices, so that
        ``InTimeAccumulateWeightedAggregator`` averages with N_k/N.
    ``validate``: 3D Dice of a received model on the site's validation cases (cross-site evaluation).
    ``submit_model``: the site's last local model (cross-site evaluation).

Where the site's data is (first match wins):
    1. ``<site workspace>/local/fedgin_site.json`` with ``{"datalist": "/path/datalist.json"}``: the site's own
       configuration, outside the job (production). It may also say ``"share_local_model": false``: the site then
       refuses ``submit_model`` whatever the job asks;
    2. ``datalist`` argument with ``{data_root}`` and ``{site}`` placeholders, ``data_root`` coming from the job
       or from the ``FEDGIN_DATA_ROOT`` environment variable (simulator, POC).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from nvflare.apis.analytix import AnalyticsDataType
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.event_type import EventType
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.app_constant import AlgorithmConstants, AppConstants

from fedgin.common.job_args import keep_job_args
from fedgin.engine.precision import precision_name
from fedgin.engine import NonFiniteLossError, TrainConfig

__all__ = ["FedGINExecutor", "SITE_CONFIG_FILE", "train_result", "received_model", "site_datalist"]

SITE_CONFIG_FILE = "fedgin_site.json"
SCAFFOLD_CONTROL_WEIGHTS = ("uniform", "samples")


def train_result(weight_diff: dict[str, Any], num_samples: int, global_val_dice: float,
                 control_diff: dict[str, Any] | None = None, control_weight: int = 1) -> Shareable:
    """The train task's reply: θ_k − θ_global as WEIGHT_DIFF, weighted by N_k (``NUM_STEPS_CURRENT_ROUND``).

    ``InTimeAccumulateWeightedAggregator`` multiplies each site's contribution by this count and divides by their
    sum, so the new global model is Σ_k N_k/N · θ_k. The global model's validation Dice goes with it as
    ``INITIAL_METRICS`` for the server's best-model selection.

    SCAFFOLD (``control_diff`` = Δc_k): a COLLECTION of the weight difference and Δc_k (NVFlare's
    ``ScatterAndGatherScaffold`` keys), Δc_k weighted by ``control_weight`` (1: the server's c moves by the plain
    mean of the sites' Δc_k, as in the SCAFFOLD paper; N_k: sample-weighted, as NVFlare's own examples).
    """
    meta = {MetaKey.NUM_STEPS_CURRENT_ROUND: int(num_samples)}
    if global_val_dice is not None and math.isfinite(global_val_dice):
        meta[MetaKey.INITIAL_METRICS] = float(global_val_dice)
    weights = DXO(DataKind.WEIGHT_DIFF, weight_diff, meta=meta)
    if control_diff is None:
        return weights.to_shareable()
    controls = DXO(DataKind.WEIGHT_DIFF, control_diff, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: int(control_weight)})
    return DXO(DataKind.COLLECTION, {AppConstants.MODEL_WEIGHTS: weights,
                                     AlgorithmConstants.SCAFFOLD_CTRL_DIFF: controls}, meta=dict(meta)).to_shareable()


def received_model(shareable: Shareable) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(global weights, the server's SCAFFOLD control variate or None) of a train task's data: WEIGHTS, or the
    COLLECTION ``ScatterAndGatherScaffold`` sends."""
    dxo = from_shareable(shareable)
    controls = None
    if dxo.data_kind == DataKind.COLLECTION:
        parts = dxo.data
        missing = [k for k in (AppConstants.MODEL_WEIGHTS, AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL) if k not in parts]
        if missing:
            raise ValueError(f"the task's collection lacks {missing} (got {sorted(parts)})")
        controls = parts[AlgorithmConstants.SCAFFOLD_CTRL_GLOBAL].data
        dxo = parts[AppConstants.MODEL_WEIGHTS]
    if dxo.data_kind != DataKind.WEIGHTS:
        raise ValueError(f"expected {DataKind.WEIGHTS}, got {dxo.data_kind}")
    return dxo.data, controls


def site_datalist(fl_ctx: FLContext, data_root: str = "",
                  pattern: str = "{data_root}/{site}/datalist.json") -> tuple[Path, bool]:
    """(the site's datalist path, whether its own configuration lets it share its local model): from
    ``<site workspace>/local/fedgin_site.json`` if there is one, else ``pattern`` with ``data_root`` (or
    ``$FEDGIN_DATA_ROOT``) and the site's name (see the module docstring)."""
    name = fl_ctx.get_identity_name()
    local_dir = Path(fl_ctx.get_engine().get_workspace().get_site_config_dir())
    site_cfg = local_dir / SITE_CONFIG_FILE
    if site_cfg.is_file():
        try:
            cfg = json.loads(site_cfg.read_text())
            path = Path(cfg["datalist"]).expanduser()
            share = cfg.get("share_local_model", True)
            if not isinstance(share, bool):
                raise TypeError(f"share_local_model must be true or false, not {share!r}")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{site_cfg}: expected JSON with a 'datalist' path: {e}") from e
        return path, share
    root = data_root or os.environ.get("FEDGIN_DATA_ROOT", "")
    if not root and "{data_root}" in pattern:
        raise ValueError(
            f"site {name}: no data configured: write {site_cfg} with {{\"datalist\": ...}}, "
            "or set data_root in the job, or the FEDGIN_DATA_ROOT environment variable"
        )
    return Path(pattern.format(data_root=root, site=name)).expanduser(), True


class FedGINExecutor(Executor):
    """Args (all plain JSON values from ``config_fed_client.json``):

    classes: foreground class names of the federation's task.
    train: ``fedgin.engine.TrainConfig`` values (method, batch_size, lr, model, ...).
    local_epochs: local epochs per round (ignored when ``local_steps`` > 0).
    local_steps: exact local steps per round instead of epochs.
    data_root: folder holding ``<site>/datalist.json``; empty → ``$FEDGIN_DATA_ROOT``.
    datalist: pattern of the site's datalist path.
    validation_split: split used for per-round and cross-site validation.
    device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda:N``.
    analytic_sender_id: component that streams metrics to the server's TensorBoard ("" to disable).
    share_local_model: answer ``submit_model`` (cross-site evaluation sends the site's own last local model to the
        server and from there to the other sites); False refuses it. The site's ``fedgin_site.json`` can refuse too.
    start_round: the job's first round (a resumed job), for progress messages.
    scaffold_control_weights: SCAFFOLD only: ``uniform`` (each site's Δc_k counts once, the SCAFFOLD paper's
        c update) or ``samples`` (weighted by N_k, as NVFlare's examples).
    """

    def __init__(
        self,
        classes: list[str],
        train: dict[str, Any] | None = None,
        local_epochs: int = 1,
        local_steps: int = 0,
        data_root: str = "",
        datalist: str = "{data_root}/{site}/datalist.json",
        validation_split: str = "validation",
        device: str = "auto",
        analytic_sender_id: str = "analytic_sender",
        share_local_model: bool = True,
        start_round: int = 0,
        scaffold_control_weights: str = "uniform",
    ) -> None:
        super().__init__()
        self.classes = list(classes)
        # fails at job load, naming the file, on a bad key, type or value (e.g. a hand-edited job)
        self.train_config = TrainConfig.from_dict(train, source="config_fed_client.json: executor args.train")
        for name, value in (("local_epochs", local_epochs), ("local_steps", local_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"config_fed_client.json: executor args.{name} must be an integer >= 0, "
                                 f"got {value!r}")
        if local_epochs < 1 and local_steps < 1:
            raise ValueError("config_fed_client.json: executor args: local_epochs and local_steps are both 0: a "
                             "round would train nothing")
        self.local_epochs = int(local_epochs)
        self.local_steps = int(local_steps)
        self.data_root = data_root
        self.datalist_pattern = datalist
        self.validation_split = validation_split
        self.device = device
        self.analytic_sender_id = analytic_sender_id
        self.share_local_model = bool(share_local_model)
        self.start_round = int(start_round)
        if scaffold_control_weights not in SCAFFOLD_CONTROL_WEIGHTS:
            raise ValueError(f"config_fed_client.json: executor args.scaffold_control_weights must be one of "
                             f"{list(SCAFFOLD_CONTROL_WEIGHTS)}, got {scaffold_control_weights!r}")
        self.scaffold_control_weights = scaffold_control_weights
        self.site = None
        self.sender = None
        self.init_error: str | None = None
        keep_job_args(self, classes=self.classes, train=dict(train or {}), local_epochs=local_epochs,
                      local_steps=local_steps, data_root=data_root, datalist=datalist,
                      validation_split=validation_split, device=device, analytic_sender_id=analytic_sender_id,
                      share_local_model=share_local_model, start_round=start_round,
                      scaffold_control_weights=scaffold_control_weights)

    # ------------------------------------------------------------------ setup
    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.START_RUN:
            self._start(fl_ctx)
        elif event_type == EventType.END_RUN and self.site is not None:
            self._save_local_model(fl_ctx)

    def _save_local_model(self, fl_ctx: FLContext) -> None:
        """Keep the site's last local model (what FedBN evaluates) as ``<app dir>/local_model.pt``; stays at the site."""
        from fedgin.engine import save_model_file
        from fedgin.engine.training import model_meta

        app_dir = Path(fl_ctx.get_engine().get_workspace().get_app_dir(fl_ctx.get_job_id()))
        path = save_model_file(app_dir / "local_model.pt", self.site.engine.model,
                               model_meta(self.site.engine, [self.site.datalist]))
        self.log_info(fl_ctx, f"local model saved to {path}")

    def resolve_datalist(self, fl_ctx: FLContext) -> Path:
        """The site's datalist path (see the module docstring for the search order)."""
        path, share = site_datalist(fl_ctx, self.data_root, self.datalist_pattern)
        self.share_local_model = self.share_local_model and share
        return path

    def _start(self, fl_ctx: FLContext) -> None:
        from fedgin.engine.site import Site  # heavy imports only when a run starts

        try:
            path = self.resolve_datalist(fl_ctx)
            self.site = Site(path, self.classes, self.train_config, self.device, self.validation_split)
        except Exception as e:  # reported on every task; the server sees the error, not a hang
            self.init_error = f"{type(e).__name__}: {e}"
            self.log_error(fl_ctx, f"cannot start site: {self.init_error}")
            return
        if self.analytic_sender_id:
            self.sender = fl_ctx.get_engine().get_component(self.analytic_sender_id)
        s = self.site
        self.log_info(
            fl_ctx,
            f"site {fl_ctx.get_identity_name()} ({s.modality}): datalist {path}; {s.num_train_samples} training "
            f"slices in {s.train_set.num_cases} cases, {s.val_set.num_cases} validation cases; method "
            f"{self.train_config.method}; device {s.engine.device}, {precision_name(s.engine.autocast_dtype)}"
            f"{', channels-last' if self.train_config.channels_last else ''}",
        )

    def _send(self, tag: str, value: float, step: int) -> None:
        if self.sender is not None and value is not None and math.isfinite(value):
            self.sender.add(tag=tag, value=float(value), data_type=AnalyticsDataType.SCALAR, global_step=int(step))

    # ------------------------------------------------------------------ tasks
    def execute(self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        if self.site is None:
            self.log_error(fl_ctx, f"task {task_name} refused: {self.init_error}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        if abort_signal.triggered:
            return make_reply(ReturnCode.TASK_ABORTED)
        try:
            if task_name == AppConstants.TASK_TRAIN:
                return self._train_task(shareable, fl_ctx, abort_signal)
            if task_name == AppConstants.TASK_VALIDATION:
                return self._validate(shareable, fl_ctx)
            if task_name == AppConstants.TASK_SUBMIT_MODEL:
                if not self.share_local_model:
                    self.log_warning(fl_ctx, "submit_model refused: this site does not share its local model")
                    return make_reply(ReturnCode.EXECUTION_EXCEPTION)
                return DXO(DataKind.WEIGHTS, self.site.local_weights()).to_shareable()
            self.log_error(fl_ctx, f"unknown task {task_name}")
            return make_reply(ReturnCode.TASK_UNKNOWN)
        except NonFiniteLossError as e:
            self.log_error(fl_ctx, f"{task_name}: {e}; no weights are sent")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)
        except Exception as e:
            self.log_exception(fl_ctx, f"{task_name} failed: {type(e).__name__}: {e}")
            return make_reply(ReturnCode.EXECUTION_EXCEPTION)

    def _train_task(self, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal) -> Shareable:
        t_task = time.perf_counter()
        rnd = int(shareable.get_header(AppConstants.CURRENT_ROUND, 0) or 0)
        num = shareable.get_header(AppConstants.NUM_ROUNDS)
        total = self.start_round + int(num) if num is not None else "?"
        global_weights, controls = received_model(shareable)
        res = self.site.train_round(
            global_weights,
            epochs=self.local_epochs,
            steps=self.local_steps,
            should_stop=lambda: abort_signal.triggered,
            global_controls=controls,
        )
        if res["stats"].aborted:
            return make_reply(ReturnCode.TASK_ABORTED)
        stats, gval = res["stats"], res["global_val"]
        self._send("val_dice_global_model", gval["mean_dice"], rnd)
        self._send("val_loss_global_model", gval["loss"], rnd)
        self._send("train_loss", stats.mean_loss, rnd)
        self._send("lr", self.site.engine.lr, rnd)
        self.log_info(
            fl_ctx,
            f"round {rnd + 1}/{total}: global model val Dice {gval['mean_dice']:.4f}; trained {stats.steps} steps "
            f"({stats.samples} slices) in {stats.seconds:.1f} s, loss {stats.mean_loss:.4f}, "
            f"{stats.samples / max(stats.seconds, 1e-9):.1f} slices/s",
        )
        empty = (gval.get("summary") or {}).get("empty") or []
        if empty:  # counts of classes only: nothing that identifies a case
            self.log_warning(fl_ctx, f"round {rnd + 1}/{total}: the global model predicts no voxel of "
                                     f"{', '.join(empty)} on any validation case of this site (collapsed)")
        diff = self.site.weight_diff(res["weights"], global_weights)
        weight = 1 if self.scaffold_control_weights == "uniform" else res["num_samples"]
        reply = train_result(diff, res["num_samples"], gval["mean_dice"], res.get("control_diff"), weight)
        reply.set_header(AppConstants.CURRENT_ROUND, rnd)
        self.log_info(fl_ctx, f"round {rnd + 1} task done in {time.perf_counter() - t_task:.2f} s "
                              f"(validation of the global model {res['validation_seconds']:.2f} s, "
                              f"training {stats.seconds:.2f} s)")
        return reply

    def _validate(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        owner = shareable.get_header(AppConstants.MODEL_OWNER, "?")
        local = self.site.engine.get_weights()  # keep the local model for a later submit_model
        try:
            res = self.site.validate(received_model(shareable)[0])
        finally:
            self.site.engine.set_weights(local)
        metrics = {"val_dice": res["mean_dice"]}
        if res.get("summary"):
            for name, s in res["summary"]["per_class"].items():
                metrics[f"val_dice_{name}"] = s["mean"]
        self.log_info(fl_ctx, f"validated model of {owner}: val Dice {res['mean_dice']:.4f}")
        return DXO(DataKind.METRICS, metrics).to_shareable()
