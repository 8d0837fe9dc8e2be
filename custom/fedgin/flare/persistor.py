"""The server's model file, with the round it belongs to: ``RoundPersistor``.

NVFlare's ``PTFileModelPersistor`` writes ``FL_global_model.pt`` after every round (atomically: a temporary file
then a rename, so a crash never leaves half a model) but not which round it is. ``RoundPersistor`` adds
``{"fedgin_round": {"round": r, "job_id": ..., "history": [...]}}`` (r counted from 0) to each saved file, and can
start a job from such a file (``resume_from``), which is how a stopped or crashed federation resumes: ``fedgin job
--resume-from FL_global_model.pt`` copies the file into the new job and sets ``start_round`` = r + 1. ``history``
lists every round that made the model, ``{"round", "job_id"}`` in order, carried over from the file a job resumed
from, so the last file of a resumed run shows which job ran which round (and that none is missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import ModelLearnable
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_opt.pt.file_model_persistor import PTFileModelPersistor

from fedgin.common.job_args import keep_job_args

__all__ = ["RoundPersistor", "ROUND_KEY", "read_round"]

ROUND_KEY = "fedgin_round"


def read_round(path: str | Path) -> dict[str, Any]:
    """``{"round": r, "job_id": ..., "weights": state_dict}`` of a model file the server wrote.

    Raises:
        ValueError: unreadable file, or one without the round record (not written by ``RoundPersistor``).
    """
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable model file: {type(e).__name__}: {e}") from e
    if not isinstance(data, dict) or ROUND_KEY not in data or "model" not in data:
        raise ValueError(f"{path}: no {ROUND_KEY!r} record: not a global model written by a FedGIN federation "
                         "(FL_global_model.pt or best_FL_global_model.pt of the server's app folder)")
    return {**data[ROUND_KEY], "weights": data["model"]}


class RoundPersistor(PTFileModelPersistor):
    """``PTFileModelPersistor`` that records the round in every file and can resume from one.

    Args:
        resume_from: model file to start from ("" = the model's fresh initialisation); a relative path is in the
            job's ``app/config/`` folder (where ``fedgin job --resume-from`` puts it).
        meta: what prediction needs besides the network (``classes``, ``size_px``, ``spacing_mm``,
            ``clip_percentiles``), written into every model file with ``format`` = ``fedgin-model/1`` and the
            network's own ``model_config`` so that ``fedgin predict``/``evaluate`` read the file alone.
        model: the network (``torch.nn.Module``, or its ``{"path", "args"}`` in a config job).
        **kwargs: the other ``PTFileModelPersistor`` arguments (file names, ...).
    """

    def __init__(self, model: Any = None, resume_from: str = "", meta: dict[str, Any] | None = None,
                 **kwargs) -> None:
        super().__init__(model=model, **kwargs)
        self.resume_from = str(resume_from or "")
        self.meta = dict(meta or {})
        self.history: list[dict[str, Any]] = []
        keep_job_args(self, model=model, resume_from=self.resume_from, meta=self.meta)

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        if self.resume_from and not self.source_ckpt_file_full_name:
            path = Path(self.resume_from)
            if not path.is_absolute():
                ws = fl_ctx.get_engine().get_workspace()
                path = Path(ws.get_app_config_dir(fl_ctx.get_job_id())) / path
            try:
                record = read_round(path)
            except ValueError as e:
                self.system_panic(f"cannot resume: {e}", fl_ctx)
                return None
            self.log_info(fl_ctx, f"resuming from {path}: global model after round {record['round'] + 1} of job "
                                  f"{record.get('job_id', '?')}")
            self.source_ckpt_file_full_name = str(path)
            last = int(record["round"])  # a file from before history was recorded: earlier jobs unknown (None)
            self.history = list(record.get("history") or [{"round": r, "job_id": None} for r in range(last)]
                                + [{"round": last, "job_id": record.get("job_id")}])
        return super().load_model(fl_ctx)

    def save_model(self, ml: ModelLearnable, fl_ctx: FLContext) -> None:
        manager = self._get_persistence_manager(fl_ctx)
        manager.update(ml)
        rnd = fl_ctx.get_prop(AppConstants.CURRENT_ROUND)
        rnd = int(rnd) if rnd is not None else -1
        job_id = str(fl_ctx.get_job_id())
        if rnd >= 0 and not (self.history and self.history[-1]["round"] == rnd):
            self.history.append({"round": rnd, "job_id": job_id})
        manager.other_props[ROUND_KEY] = {"round": rnd, "job_id": job_id, "history": list(self.history)}
        if self.meta and hasattr(self.model, "model_config"):
            from fedgin.engine.checkpoint import MODEL_FORMAT

            manager.other_props.update({"format": MODEL_FORMAT, **self.meta,
                                        "model_config": self.model.model_config()})
        self.save_model_file(self._ckpt_save_path)
