"""Acquisition grid: voxel geometry, affine, thick-slice sampling and RAS/LPS voxel order.

Conventions: the phantom is built in RAS voxel order (axis 0 -> patient Right = world +x, axis 1 ->
Anterior = +y, axis 2 -> Superior = +z, the NIfTI RAS+ world convention; checked against the real
TotalSegmentator example where the liver centroid has world x > 0). "LPS" cases are written with the first
two voxel axes reversed and the affine adjusted, so both describe the same world positions.

Thick slices are simulated by painting ``sub`` (1 or 3) thin sub-slices per output slice; the image is
box-averaged over them (slice profile with FWHM = slice thickness) while the labels come from the
central sub-slice (nearest neighbour at the slice centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "plan_grid", "decimate_slices", "reorient_array", "orientation_affine"]


@dataclass(frozen=True)
class Grid:
    """Voxel grid of one acquisition (RAS voxel order).

    shape: output voxels (nx, ny, nz); spacing: (dx, dy, dz) mm; origin: world mm (RAS) of voxel (0, 0, 0);
    sub: thin sub-slices per output slice (1 or 3); table_offset: world minus patient-frame coordinates (mm).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    sub: int
    table_offset: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """4x4 float64 voxel (RAS order) -> RAS world (mm)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def patient_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame (mm) coordinates of the painting grid: px (nx,), py (ny,), pz (nz*sub,) ascending."""
        dx, dy, dz = self.spacing
        nx, ny, nz = self.shape
        ox, oy, oz = (o - t for o, t in zip(self.origin, self.table_offset))
        px = ox + dx * np.arange(nx)
        py = oy + dy * np.arange(ny)
        fine = dz / self.sub
        pz = oz - fine * (self.sub - 1) / 2 + fine * np.arange(nz * self.sub)
        return px, py, pz

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        return (self.shape[0], self.shape[1], self.shape[2] * self.sub)


def decimate_slices(volume: np.ndarray, sub: int) -> np.ndarray:
    """Box-average groups of ``sub`` consecutive z sub-slices: (nx, ny, nz*sub) -> (nx, ny, nz) float32."""
    if sub == 1:
        return volume
    nx, ny, nzs = volume.shape
    out = volume[:, :, 0::sub].astype(np.float32, copy=True)
    for m in range(1, sub):
        out += volume[:, :, m::sub]
    out *= np.float32(1.0 / sub)
    return out


def reorient_array(volume: np.ndarray, orientation: str) -> np.ndarray:
    """RAS-ordered array -> the requested voxel order ("RAS" or "LPS": first two axes reversed)."""
    if orientation == "RAS":
        return volume
    if orientation == "LPS":
        return np.ascontiguousarray(volume[::-1, ::-1, :])
    raise ValueError(f"orientation must be 'RAS' or 'LPS', got {orientation!r}")


def orientation_affine(affine_ras: np.ndarray, shape: tuple[int, int, int], orientation: str) -> np.ndarray:
    """Affine of the array returned by :func:`reorient_array` (same world position for every voxel)."""
    if orientation == "RAS":
        return affine_ras.copy()
    if orientation == "LPS":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3] = shape[0] - 1
        flip[1, 3] = shape[1] - 1
        return affine_ras @ flip
    raise ValueError(f"orientation must be 'RAS' or 'LPS', got {orientation!r}")


def plan_grid(rng: np.random.Generator, x_range: tuple[float, float], y_range: tuple[float, float],
              z_range: tuple[float, float], inplane: tuple[float, float], slice_choices: tuple[float, ...],
              max_inplane: int = 280, max_slices: int = 140) -> Grid:
    """Choose the acquisition grid covering the patient-frame ranges (mm) plus a random margin.

    In-plane spacing ~ U(inplane), coarsened if a side would exceed ``max_inplane`` voxels; slice spacing drawn
    from ``slice_choices`` and bumped to the next larger choice while the stack would exceed ``max_slices``.
    Slices >= 4 mm are painted as 3 sub-slices. The world position of the patient frame (the table offset)
    is random: +-20 mm in-plane, -350..150 mm along z.
    """
    choices = sorted(slice_choices)
    k = int(rng.integers(len(choices)))
    d_in = float(rng.uniform(*inplane))
    margins = rng.uniform(5, 30, 4)
    xs = (x_range[0] - margins[0], x_range[1] + margins[1])
    ys = (y_range[0] - margins[2], y_range[1] + margins[3])
    d_in = round(max(d_in, (xs[1] - xs[0]) / max_inplane, (ys[1] - ys[0]) / max_inplane), 3)
    zext = z_range[1] - z_range[0]
    while k + 1 < len(choices) and zext / choices[k] + 1 > max_slices:
        k += 1
    dz = float(choices[k])
    nx = int(np.ceil((xs[1] - xs[0]) / d_in)) + 1
    ny = int(np.ceil((ys[1] - ys[0]) / d_in)) + 1
    nz = int(np.ceil(zext / dz)) + 1
    offset = (float(rng.uniform(-20, 20)), float(rng.uniform(-20, 20)), float(rng.uniform(-350, 150)))
    cx, cy = 0.5 * (xs[0] + xs[1]), 0.5 * (ys[0] + ys[1])
    origin_patient = (cx - 0.5 * (nx - 1) * d_in, cy - 0.5 * (ny - 1) * d_in, z_range[0])
    origin = tuple(round(o + t, 3) for o, t in zip(origin_patient, offset))
    sub = 3 if dz >= 4.0 else 1
    return Grid(shape=(nx, ny, nz), spacing=(d_in, d_in, dz), origin=origin, sub=sub,
                table_offset=offset)
