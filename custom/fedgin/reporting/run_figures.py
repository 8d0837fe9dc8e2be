"""The two pictures a federated run ends with: each site's validation Dice of the global model per round, and test
cases with their ground truth and the model's prediction side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fedgin.data.nifti import read_nifti_ras, voxel_spacing
from fedgin.reporting.curves import read_scalars
from fedgin.reporting.overlays import class_legend, draw_slice

__all__ = ["site_dice_series", "site_dice_png", "cases_png", "SITE_DICE_TAG"]

#: what every site's executor streams after validating the incoming global model (one value per round)
SITE_DICE_TAG = "val_dice_global_model"


def site_dice_series(workspace: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{site: (rounds from 0, values)} of ``val_dice_global_model`` in a simulator workspace: from the server's
    TensorBoard events (``tracking`` tensorboard/both), else from its MLflow store (``tracking: mlflow``, one MLflow
    run per site). Empty when neither holds it."""
    ws = Path(workspace)
    series = {}
    for site_dir in sorted(p for p in (ws / "server" / "simulate_job" / "tb_events").glob("*") if p.is_dir()):
        scalars = read_scalars(site_dir)
        if SITE_DICE_TAG in scalars and len(scalars[SITE_DICE_TAG][0]):
            series[site_dir.name] = scalars[SITE_DICE_TAG]
    if series:
        return series
    from fedgin.flare.simulate import mlflow_store

    try:
        uri = mlflow_store(ws)
        from mlflow.tracking import MlflowClient
    except (FileNotFoundError, ImportError):
        return {}
    client = MlflowClient(tracking_uri=uri)
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            job = run.data.tags.get("job_id", "")  # NVFlare names the run <site>-<job id[:6]>-<job>-...
            site = run.info.run_name.split(f"-{job[:6]}")[0] if job else run.info.run_name
            history = sorted(client.get_metric_history(run.info.run_id, SITE_DICE_TAG), key=lambda m: m.step)
            if history:
                series[site] = (np.array([m.step for m in history]), np.array([m.value for m in history]))
    return dict(sorted(series.items()))


def site_dice_png(series: dict[str, tuple[np.ndarray, np.ndarray]], output: str | Path, title: str = "") -> Path:
    """One line per site of ``series`` (``site_dice_series``): the validation Dice of the global model the site
    received, per round (round r's value is the model after r rounds; round 1 = the first aggregate).

    Raises:
        ValueError: no series.
    """
    from fedgin.reporting.figures import dice_axis, pyplot, save_png

    if not series:
        raise ValueError(f"no site's {SITE_DICE_TAG} to draw")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for site, (steps, values) in series.items():
        ax.plot(np.asarray(steps) + 1, values, marker="o", ms=3, label=site)
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
