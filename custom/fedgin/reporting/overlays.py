"""PNG pictures a user looks at rather than reads: prediction overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedgin.data.nifti import read_nifti_ras, voxel_spacing

__all__ = ["overlay_png", "radiological", "draw_slice", "class_legend", "CLASS_COLORS"]

CLASS_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def radiological(axial: np.ndarray) -> np.ndarray:
    """An axial RAS slice (x towards the patient's right, y towards anterior) as displayed in radiology:
    anterior up, the patient's right on the viewer's left (row 0 at the top, as ``imshow`` draws)."""
    return np.flipud(np.fliplr(axial.T))


def draw_slice(ax, image: np.ndarray, labels: np.ndarray | None, n_classes: int, lo: float, hi: float,
               aspect: float, alpha: float = 0.45) -> None:
    """One axial RAS slice (radiological display) in grey from ``lo`` to ``hi``, with its label map (0 = none,
    1..n_classes in ``CLASS_COLORS``) drawn over it when given; ``aspect`` = row/column pixel size."""
    from matplotlib.colors import ListedColormap

    ax.imshow(radiological(image), cmap="gray", vmin=lo, vmax=hi, aspect=aspect)
    if labels is not None:
        seg = radiological(labels).astype(float)
        ax.imshow(np.ma.masked_where(seg == 0, seg - 1), cmap=ListedColormap(CLASS_COLORS[: max(1, n_classes)]),
                  vmin=0, vmax=max(1, n_classes) - 1, alpha=alpha, interpolation="nearest", aspect=aspect)
    ax.axis("off")


def class_legend(fig, classes: list[str]) -> None:
    """The class colours as one legend row at the bottom of ``fig``."""
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=CLASS_COLORS[i % len(CLASS_COLORS)]) for i in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes), fontsize=8, frameon=False)


def overlay_png(image: str | Path, labels: str | Path, output: str | Path, classes: list[str],
                slices: int = 4) -> Path:
    """A row of axial slices of ``image`` (RAS, radiological display: patient left on the right) with the label
    map ``labels`` (same grid) drawn over it; the slices with the most foreground, spread over the volume."""
    from fedgin.reporting.figures import pyplot, save_png

    plt = pyplot()

    vol = read_nifti_ras(image, dtype=np.float32)
    img = vol.data
    sx, sy = (float(v) for v in voxel_spacing(vol.affine)[:2])
    lbl = read_nifti_ras(labels).data.astype(np.int16)
    if img.shape != lbl.shape:
        raise ValueError(f"{labels}: shape {lbl.shape} differs from {image} {img.shape}")
    area = (lbl > 0).sum(axis=(0, 1))
    candidates = np.flatnonzero(area) if area.any() else np.arange(img.shape[2])
    picks = np.unique(candidates[np.linspace(0, len(candidates) - 1, min(slices, len(candidates))).round().astype(int)])
    lo, hi = np.percentile(img, [1, 99])
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.6), squeeze=False)
    for ax, z in zip(axes[0], picks):
        draw_slice(ax, img[:, :, z], lbl[:, :, z], len(classes), lo, hi, sy / sx)
        ax.set_title(f"slice {z}", fontsize=9)
    class_legend(fig, classes)
    fig.suptitle(Path(image).name, fontsize=10)
    return save_png(fig, output, dpi=100, rect=(0, 0.06, 1, 0.95))
