"""Per-volume 3D Dice, computed after stacking the predicted slices back into each volume.

Convention for a class absent from a case's ground truth: its Dice is undefined and recorded as ``None``
(excluded from every mean), and the number of voxels predicted for it is reported as ``false_positive_voxels``
so such errors stay visible. (MONAI's ``ignore_empty=True`` convention; the authors' code instead scored an empty
prediction on empty ground truth as 1, and pooled all validation slices into one Dice, which we do not.)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["dice_per_class", "summarise", "empty_classes", "EMPTY_MARK", "EMPTY_NOTE"]

#: the mark of a collapsed model's value in every table, and its footnote
EMPTY_MARK = "∅"
EMPTY_NOTE = ("∅: the model predicts no voxel of this class on any of these test cases: a collapsed model, not a "
              "measurement (on a mean: at least one of its classes is ∅)")


def dice_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> list[dict[str, Any]]:
    """3D Dice of each foreground class of one volume.

    Args:
        pred, truth: integer label volumes of the same shape (any dimensionality), ids 0..num_classes.
        num_classes: number of foreground classes K.

    Returns:
        K dicts ``{"dice": float | None, "truth_voxels": int, "pred_voxels": int}``; dice is None when the class is
        absent from ``truth``.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    out = []
    for c in range(1, num_classes + 1):
        p = pred == c
        t = truth == c
        np_, nt = int(p.sum()), int(t.sum())
        dice = None if nt == 0 else 2.0 * int(np.logical_and(p, t).sum()) / (np_ + nt)
        out.append({"dice": dice, "truth_voxels": nt, "pred_voxels": np_})
    return out


def empty_classes(cases: Sequence[dict[str, Any]], classes: Sequence[str]) -> list[str]:
    """Classes the model predicts on no voxel of any of ``cases`` although at least one case has them.

    ``cases``: per-case results with ``"voxels": {class: {"truth": int, "pred": int}}`` (cases without it are
    ignored). Such a class's Dice of 0 is a collapsed model, not a measurement.
    """
    out = []
    for name in classes:
        counts = [c["voxels"][name] for c in cases if (c.get("voxels") or {}).get(name)]
        if counts and sum(v["truth"] for v in counts) > 0 and sum(v["pred"] for v in counts) == 0:
            out.append(name)
    return out


def summarise(cases: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Means over cases.

    Args:
        cases: per-case results ``{"case": ..., "modality": ..., "dice": {class: float | None}}``.
        classes: foreground class names.

    Returns:
        ``{"mean_dice": float, "per_class": {class: {"mean": float, "std": float, "n": int[, "hd95_mm", "nsd"]}},
        "empty": [class],
        "per_modality": {modality: {"mean_dice": float, "per_class": {...}, "empty": [...]}}}``; NaN where nothing
        is defined; ``empty``: ``empty_classes`` of those cases.
    """

    def _block(subset: Sequence[dict[str, Any]]) -> dict[str, Any]:
        per_class = {}
        every = []
        for name in classes:
            vals = [c["dice"][name] for c in subset if c["dice"].get(name) is not None]
            every += vals
            per_class[name] = {
                "mean": float(np.mean(vals)) if vals else math.nan,
                "std": float(np.std(vals)) if vals else math.nan,
                "n": len(vals),
            }
            for metric in ("hd95_mm", "nsd"):  # boundary metrics, when the cases have them
                if any(metric in c for c in subset):
                    m = [c[metric][name] for c in subset if c.get(metric, {}).get(name) is not None]
                    per_class[name][metric] = float(np.mean(m)) if m else math.nan
        return {"mean_dice": float(np.mean(every)) if every else math.nan, "per_class": per_class,
                "empty": empty_classes(subset, classes)}

    result = _block(cases)
    result["per_modality"] = {
        m: _block([c for c in cases if c.get("modality") == m]) for m in sorted({c.get("modality") for c in cases})
    }
    return result
