"""Smooth random fields: displacement of the anatomy, MR bias field, tissue texture.

Smooth 3D fields are built as a low-rank sum of separable products of 1D Gaussian-filtered noise,
``f(x, y, z) = sum_k X_k(x) Y_k(y) Z_k(z) / sqrt(K)``; this costs a few multiply-adds per voxel instead of a
3D Gaussian filter on the full grid, and looks like low-pass noise once K >= 3.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["smooth_noise_1d", "SeparableField", "separable_sum", "texture_field"]


def smooth_noise_1d(rng: np.random.Generator, coords: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Gaussian-filtered white noise sampled at the regularly spaced ``coords`` (mm), unit SD, float32 (n,)."""
    n = len(coords)
    step = float(coords[1] - coords[0]) if n > 1 else 1.0
    sigma = max(sigma_mm / abs(step), 0.5)
    pad = int(3 * sigma) + 1
    raw = rng.standard_normal(n + 2 * pad)
    smooth = ndimage.gaussian_filter1d(raw, sigma, mode="wrap")[pad:pad + n]
    sd = smooth.std()
    return (smooth / (sd if sd > 0 else 1.0)).astype(np.float32)


class SeparableField:
    """A smooth random scalar field in patient space, unit SD on average.

    The 1D factors are drawn once on a fixed reference axis (-400..400 mm, 2 mm step) and interpolated at
    the grid coordinates, so the field does not depend on the acquisition grid.

    Args:
        rng: random generator.
        sigma_mm: correlation length (Gaussian SD, mm) of the 1D factors.
        rank: number of separable terms K.
    """

    REF = np.arange(-400.0, 400.0 + 1e-6, 2.0)

    def __init__(self, rng: np.random.Generator, sigma_mm: float, rank: int = 3) -> None:
        self.factors = [[smooth_noise_1d(rng, self.REF, sigma_mm) for _ in range(3)] for _ in range(rank)]
        self.norm = np.float32(1.0 / np.sqrt(rank))

    def factors_on(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """The K separable factors (fx, fy, fz) interpolated at ``axes``, already scaled by 1/sqrt(K)."""
        out = []
        for term_factors in self.factors:
            fx, fy, fz = (np.interp(a, self.REF, f).astype(np.float32) for a, f in zip(axes, term_factors))
            out.append((fx * self.norm, fy, fz))
        return out

    def evaluate(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """The field at the grid with 1D coordinates ``axes`` (mm), float32 of shape (nx, ny, nz)."""
        return separable_sum((0.0, 0.0, 0.0), axes, self.factors_on(axes), 1.0, 1.0)


def separable_sum(linear: tuple[float, float, float], axes: tuple[np.ndarray, np.ndarray, np.ndarray],
                  factors: list[tuple[np.ndarray, ...]], amp: float, scale: float,
                  offset: float = 0.0) -> np.ndarray:
    """``scale * (offset + l . p + amp * sum_k fx_k fy_k fz_k)`` on the grid, as one float32 matrix product.

    ``linear`` = (lx, ly, lz) is the linear part l, ``factors`` the (fx, fy, fz) of :meth:`SeparableField.factors_on`.
    Returns float32 (nx, ny, nz).
    """
    px, py, pz = (np.asarray(a, np.float32) for a in axes)
    nx, ny, nz = len(px), len(py), len(pz)
    lx, ly, lz = (np.float32(v) for v in linear)
    cols = [((lx * px)[:, None] + (ly * py)[None, :] + np.float32(offset)).ravel()]
    rows = [np.ones(nz, np.float32)]
    cols.append(np.ones(nx * ny, np.float32))
    rows.append(lz * pz)
    if amp:
        for fx, fy, fz in factors:
            cols.append((np.float32(amp) * fx[:, None] * fy[None, :]).ravel())
            rows.append(fz)
    A = np.stack(cols, axis=1) * np.float32(scale)
    B = np.stack(rows, axis=0)
    return (A @ B).reshape(nx, ny, nz)


def texture_field(rng: np.random.Generator, shape: tuple[int, int, int],
                  sigma_vox: tuple[float, float, float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit SD, float32 of ``shape`` (fine tissue texture)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, sigma_vox, output=noise, truncate=2.5)
    sd = float(noise[::3, ::3, ::2].std())
    noise *= np.float32(1.0 / (sd if sd > 0 else 1.0))
    return noise
