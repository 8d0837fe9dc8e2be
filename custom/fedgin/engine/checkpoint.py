"""Model files: everything needed to rebuild and apply a model travels with its weights.

A fedgin model file is a ``torch.save`` of::

    {"format": "fedgin-model/1", "model": state_dict, "classes": [...], "model_config": {...},
     "size_px": [H, W], "spacing_mm": [sx, sy], "normalization": str, "train_config": {...}, "provenance": {...}}

FLARE's ``PTFileModelPersistor`` writes ``{"model": state_dict, "train_conf": ...}`` only; such a file is read with
the job configuration saved beside it (``<app>/config/config_fed_server.json``), where the persistor's model
arguments and the job's ``classes`` live.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from fedgin.engine.config import ModelConfig
from fedgin.engine.model import SegUNet, build_model

__all__ = ["MODEL_FORMAT", "save_model_file", "load_model_file", "ModelFileError"]

MODEL_FORMAT = "fedgin-model/1"


class ModelFileError(ValueError):
    """A model file is missing, unreadable or lacks what is needed to rebuild the model."""


def save_model_file(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``meta`` (classes, model_config, size_px, ...) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": MODEL_FORMAT, **meta, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialised in memory, so that a full disk is an OSError that names the file
    try:
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(e.filename or tmp)) from e
        tmp.replace(path)
    except BaseException:  # a full disk or Ctrl-C leaves the previous file and no temporary one
        tmp.unlink(missing_ok=True)
        raise
    return path


def _flare_meta(path: Path) -> dict[str, Any]:
    """The metadata of a FLARE model file saved without it, from its job's server config: the persistor's
    ``model`` and ``meta`` arguments."""
    cfg_file = path.parent / "config" / "config_fed_server.json"
    if not cfg_file.is_file():
        raise ModelFileError(
            f"{path}: a FLARE model file without fedgin metadata, and no job config at {cfg_file} to rebuild it from"
        )
    cfg = json.loads(cfg_file.read_text())
    persistor = next((c for c in cfg.get("components", []) if c.get("id") == "persistor"), None)
    try:
        args = dict(persistor["args"]["model"]["args"])
        meta = dict(persistor["args"].get("meta") or {})
    except (TypeError, KeyError) as e:
        raise ModelFileError(f"{cfg_file}: no persistor model args") from e
    classes = meta.get("classes")
    if not classes or len(classes) != args.get("num_classes", 1):
        raise ModelFileError(f"{cfg_file}: the persistor's meta.classes missing or inconsistent with its model")
    num_classes = args.pop("num_classes", 1)
    return {
        "classes": classes,
        "model_config": args,
        "size_px": meta.get("size_px"),
        "spacing_mm": meta.get("spacing_mm"),
        "provenance": {"flare_job_config": str(cfg_file), "num_classes": num_classes},
    }


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[SegUNet, dict[str, Any]]:
    """Rebuild the model stored in ``path``.

    Returns:
        (model in eval mode on ``device``, metadata dict with at least ``classes`` and ``model_config``).

    Raises:
        ModelFileError: missing or unreadable file, or not a segmentation model file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on corrupt input, with pages of advice
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelFileError(f"{path}: cannot read model file (not a fedgin model, or corrupt: {first[:200]})") from e
    if not isinstance(payload, dict) or "model" not in payload:
        raise ModelFileError(f"{path}: not a model file (no 'model' state dict)")
    meta = {k: v for k, v in payload.items() if k != "model"} if payload.get("format") == MODEL_FORMAT else _flare_meta(path)
    classes = meta.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelFileError(f"{path}: the model file's classes must be a list of names, got {classes!r}")
    try:
        model_config = ModelConfig.from_dict(meta.get("model_config"), source=f"{path}: model_config")
    except ValueError as e:
        raise ModelFileError(str(e)) from e
    model = build_model(len(classes), model_config)
    state = {k: torch.as_tensor(v) for k, v in payload["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"{path}: weights do not fit the described model: {e}") from e
    return model.to(device).eval(), meta
