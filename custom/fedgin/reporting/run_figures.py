"""The two pictures a federated run ends with: each site's validation Dice of the global model per round, and test
cases with their ground truth and the model's prediction side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fedgin.data.nifti import read_nifti_ras, voxel_spacing
from fedgin.reporting.curves import read_scalars
from fedgin.reporting.overlays import class_legend, draw_slice

__all__ = ["site_dice_png", "cases_png", "SITE_DICE_TAG"]

#: what every site's executor streams after validating the incoming global model (one value per round)
SITE_DICE_TAG = "val_dice_global_model"


def site_dice_png(tb_events: str | Path, output: str | Path, title: str = "") -> Path:
    """One line per site (``tb_events/<site>/``): the validation Dice of the global model the site received, per
    round (round r's value is the model after r rounds; round 1 = the first aggregate).

    Raises:
        FileNotFoundError: no site streamed ``val_dice_global_model``.
    """
    from fedgin.reporting.figures import dice_axis, pyplot, save_png

    series = {}
    for site_dir in sorted(p for p in Path(tb_events).glob("*") if p.is_dir()):
        scalars = read_scalars(site_dir)
        if SITE_DICE_TAG in scalars and len(scalars[SITE_DICE_TAG][0]):
            series[site_dir.name] = scalars[SITE_DICE_TAG]
    if not series:
        raise FileNotFoundError(f"{tb_events}: no site streamed {SITE_DICE_TAG}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for site, (steps, values) in series.items():
        ax.plot(steps + 1, values, marker="o", ms=3, label=site)
    ax.set_xlabel("round")
    ax.set_ylabel("validation Dice (global model)")
    dice_axis(ax, title or "each site's validation Dice of the global model")
    return save_png(fig, output)


def _best_slice(label: np.ndarray) -> int:
    area = (label > 0).sum(axis=(0, 1))
    return int(area.argmax()) if area.any() else label.shape[2] // 2


def cases_png(cases: Sequence[tuple[str, str | Path, str | Path, str | Path]], classes: list[str],
              output: str | Path) -> Path:
    """One row per case ``(title, image, ground truth, prediction)`` (NIfTI files on one grid): the axial slice
    with the most ground-truth foreground, as image, ground truth over it and prediction over it (radiological
    display: patient left on the right)."""
    from fedgin.reporting.figures import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(len(cases), 3, figsize=(9.6, 3.3 * len(cases)), squeeze=False)
    for row, (title, image, truth, pred) in zip(axes, cases):
        vol = read_nifti_ras(image, dtype=np.float32)
        gt, seg = read_nifti_ras(truth).data.astype(np.int16), read_nifti_ras(pred).data.astype(np.int16)
        if not (vol.data.shape == gt.shape == seg.shape):
            raise ValueError(f"{title}: image {vol.data.shape}, ground truth {gt.shape} and prediction {seg.shape} "
                             "must share one grid")
        sx, sy = (float(v) for v in voxel_spacing(vol.affine)[:2])
        z = _best_slice(gt)
        lo, hi = np.percentile(vol.data, [1, 99])
        for ax, labels, name in zip(row, (None, gt, seg), ("image", "ground truth", "prediction")):
            draw_slice(ax, vol.data[:, :, z], None if labels is None else labels[:, :, z], len(classes), lo, hi,
                       sy / sx, alpha=0.5)
            ax.set_title(f"{title}: {name} (slice {z})", fontsize=9)
    class_legend(fig, classes)
    return save_png(fig, output, dpi=100, rect=(0, 0.05, 1, 1))
