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

__all__ = ["Grid", "decimate_slices", "reorient_array", "orientation_affine"]


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
