"""Helpers shared by the dataset-adapter tests: tiny NIfTI grids with world-space boxes.

A fixture volume is a small grid (12 x 10 x 6 voxels by default) whose classes are boxes given in *world* mm. The
expected label of a loaded case is recomputed from the loaded affine and the same boxes, so a flipped axis, a wrong
affine or a wrong label map makes the comparison fail.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 10, 6)
SPACING = (1.5, 2.0, 3.0)


def make_affine(shape=SHAPE, spacing=SPACING, lps: bool = False, origin=(-8.0, -9.0, -7.5)) -> np.ndarray:
    """Voxel -> world (RAS mm) affine; ``lps=True`` stores the voxel axes as L, P, S over the same field of view."""
    a = np.eye(4)
    sp = np.asarray(spacing, float)
    if lps:
        a[:3, :3] = np.diag([-sp[0], -sp[1], sp[2]])
        a[:3, 3] = [origin[0] + sp[0] * (shape[0] - 1), origin[1] + sp[1] * (shape[1] - 1), origin[2]]
    else:
        a[:3, :3] = np.diag(sp)
        a[:3, 3] = origin
    return a


def world(shape, affine) -> np.ndarray:
    """World coordinates (..., 3) of every voxel centre."""
    idx = np.indices(shape).reshape(3, -1).astype(float)
    return (np.asarray(affine)[:3, :3] @ idx + np.asarray(affine)[:3, 3:]).T.reshape(*shape, 3)


def box(shape, affine, lo, hi) -> np.ndarray:
    """Voxels whose centre lies in the world box [lo, hi] (mm, RAS)."""
    w = world(shape, affine)
    return np.all((w >= np.asarray(lo)) & (w <= np.asarray(hi)), axis=-1)


def paint(shape, affine, boxes: dict, dtype=np.int16) -> np.ndarray:
    """Label array with ``value`` inside each world box ``{value: (lo, hi)}`` (later boxes win)."""
    out = np.zeros(shape, dtype=dtype)
    for value, (lo, hi) in boxes.items():
        out[box(shape, affine, lo, hi)] = value
    return out


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_pair(image_path: Path, label_path: Path, boxes: dict, *, lps: bool = False, seed: int = 0,
               label_dtype=np.int16, shape=SHAPE) -> np.ndarray:
    """Write an image (noise + bright boxes) and its label on one grid; returns the affine."""
    affine = make_affine(shape, lps=lps)
    label = paint(shape, affine, boxes, dtype=label_dtype)
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 5, shape) + 100.0 * (label != 0)
    save(image_path, image.astype(np.float32), affine)
    save(label_path, label, affine)
    return affine


def expected_label(loaded, class_boxes: list[list[tuple]]) -> np.ndarray:
    """The label a correct adapter returns: class k (1-based) = union of its world boxes, on the loaded grid."""
    shape = loaded.label.shape
    out = np.zeros(shape, np.uint8)
    for k, boxes in enumerate(class_boxes, start=1):
        for lo, hi in boxes:
            out[box(shape, loaded.affine, lo, hi)] = k
    return out


def assert_ras(affine: np.ndarray) -> None:
    """A RAS voxel order on an axis-aligned grid: positive diagonal, zero off-diagonal."""
    a = np.asarray(affine)[:3, :3]
    assert np.all(np.diag(a) > 0), a
    assert np.allclose(a - np.diag(np.diag(a)), 0), a
