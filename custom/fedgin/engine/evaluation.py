"""Evaluation of a model file on one split of prepared datalists (what ``fedgin evaluate`` does, and how every
experiment scores its models): per-case, per-class 3D Dice, optionally HD95 and NSD, and the plain-text Dice table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from fedgin.data.datalist import load_datalist, task_labels
from fedgin.engine.checkpoint import ModelFileError, load_model_file
from fedgin.engine.config import TrainConfig
from fedgin.engine.data import SliceSet
from fedgin.engine.trainer import Engine

__all__ = ["evaluate", "format_dice_table"]


def evaluate(
    model_file: str | Path,
    datalists: Sequence[str | Path],
    split: str = "test",
    *,
    device: str = "auto",
    progress: bool = True,
    surface: bool = False,
    geometry: str = "cache",
) -> dict[str, Any]:
    """Per-case, per-class 3D Dice of a model file on one split of ``datalists`` (``surface``: also HD95 in mm
    and NSD, ``fedgin.engine.surface``); ``geometry``: ``"cache"`` (the cached grid) or ``"source"`` (each
    prediction mapped back onto its source volume and scored there with the source voxel size,
    ``fedgin.engine.Engine.evaluate``).

    Returns:
        ``{"model", "split", "classes", "cases": [...], "summary": {...}, "mean_dice": float}``; ``mean_dice`` is the
        mean over foreground classes and cases (classes absent from a case's ground truth excluded).

    Raises:
        ModelFileError: unreadable model, or a model for other classes or another slice size than the data.
    """
    model, meta = load_model_file(model_file)
    dls = [load_datalist(d) for d in datalists]
    for d in dls:
        if task_labels(d) != list(meta["classes"]):
            raise ModelFileError(
                f"{model_file}: model classes {meta['classes']} do not match {d['path']} classes {task_labels(d)}"
            )
        if meta.get("size_px") and list(meta["size_px"]) != list(d["size_px"]):
            raise ModelFileError(f"{model_file}: model made for {meta['size_px']} px slices, {d['path']} has "
                                 f"{d['size_px']} (prepare the data with the model's --size/--spacing)")
    config = TrainConfig.from_dict({"method": "none", "model": meta["model_config"]})
    engine = Engine(list(meta["classes"]), config, device=device)
    engine.model.load_state_dict(model.state_dict())
    data = SliceSet(dls, split)
    if data.num_cases == 0:
        raise ValueError(f"no {split} cases in {[d['path'] for d in dls]}")
    res = engine.evaluate(data, progress=progress, surface=surface, geometry=geometry)
    return {"model": str(model_file), "split": split, "classes": engine.classes, **res}


def format_dice_table(result: dict[str, Any], title: str | None = None) -> str:
    """A plain-text table: one row per modality (and 'all'), one column per class, plus the mean."""
    classes = result["classes"]
    summary = result["summary"]
    rows = [(m, s) for m, s in summary["per_modality"].items()] + [("all", summary)]
    width = max(10, *(len(c) + 2 for c in classes))
    lines = []
    if title:
        lines.append(title)
    header = f"{'test set':<10}" + "".join(f"{c:>{width}}" for c in classes) + f"{'mean':>{width}}"
    lines += [header, "-" * len(header)]
    for name, s in rows:
        n = max((s["per_class"][c]["n"] for c in classes), default=0)
        cells = "".join(f"{_fmt(s['per_class'][c]['mean']):>{width}}" for c in classes)
        lines.append(f"{name + f' ({n})':<10}" + cells + f"{_fmt(s['mean_dice']):>{width}}")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
