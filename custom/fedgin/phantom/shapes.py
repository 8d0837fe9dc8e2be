"""Painting primitives: a label canvas with deformed anatomical coordinates, ellipsoids and swept tubes.

Every voxel of the painting grid has patient-frame coordinates ``p`` (mm). The anatomy is described in a
"standard body" frame ``q = (R p + u(p)) / s``: R a small global rotation, u a smooth random displacement
field (mm) and s the global body scale. Shapes are evaluated on ``q`` inside bounding boxes only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .fields import SeparableField, separable_sum
from .tissues import Tissue

__all__ = ["Canvas", "rotation", "frame", "ellipsoid_r2", "tube_distance", "allow"]

Region = tuple[slice, slice, slice]


def rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> np.ndarray:
    """3x3 rotation ``Rz(az) @ Ry(ay) @ Rx(ax)`` (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def frame(long_axis: Iterable[float], toward: Iterable[float]) -> np.ndarray:
    """Orthonormal frame (columns e1, e2, e3): e3 along ``long_axis``, e1 as close as possible to ``toward``."""
    e3 = np.asarray(long_axis, float)
    e3 = e3 / np.linalg.norm(e3)
    t = np.asarray(toward, float)
    e1 = t - t.dot(e3) * e3
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.cross(e3, e1)
    return np.stack([e1, e2, e3], axis=1)


def allow(*tissues: Tissue) -> np.ndarray:
    """Boolean table over tissue codes (length 256): True for the codes that may be painted over."""
    lut = np.zeros(256, dtype=bool)
    for t in tissues:
        lut[int(t)] = True
    return lut


class Canvas:
    """Tissue label map on the painting grid and the standard-body coordinates of its voxels.

    Args:
        axes: (px, py, pz) patient-frame voxel-centre coordinates (mm), ascending.
        rot: 3x3 global rotation R; scale: global body scale s.
        displacement: three :class:`SeparableField` (unit SD) and amplitude (mm), or None.

    Attributes:
        labels: uint8 (nx, ny, nz) tissue codes, initially AIR.
        q: three float32 (nx, ny, nz) arrays, standard-body coordinates (mm).
        cavity: bool (nx, ny, nz) abdominal cavity (set by the body wall painter).
    """

    def __init__(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray], rot: np.ndarray, scale: float,
                 displacement: tuple[list[SeparableField], float] | None) -> None:
        self.axes = tuple(np.asarray(a, np.float64) for a in axes)
        self.rot = np.asarray(rot, float)
        self.scale = float(scale)
        self.shape = tuple(len(a) for a in self.axes)
        self.umax = np.zeros(3)
        if displacement is not None:
            fields, amp = displacement
        else:
            fields, amp = [None, None, None], 0.0
        q = []
        for i in range(3):
            factors = fields[i].factors_on(self.axes) if fields[i] is not None else []
            q.append(separable_sum(tuple(self.rot[i]), self.axes, factors, amp, 1.0 / self.scale))
            if factors:  # |u| max estimated on a coarse sub-grid, +25 %
                sub = tuple(a[::4] for a in self.axes)
                u = separable_sum((0.0, 0.0, 0.0), sub, fields[i].factors_on(sub), amp, 1.0)
                self.umax[i] = 1.25 * float(np.abs(u).max()) + 1.0
        self.q = q
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        self.cavity = np.zeros(self.shape, dtype=bool)
        self.wall: dict | None = None  # body-wall geometry kept by the wall painter for the rib painter

    def region(self, lo: Iterable[float], hi: Iterable[float]) -> Region | None:
        """Index box of the voxels whose q may lie in the q-box [lo, hi] (mm); None if outside the grid."""
        lo = np.asarray(lo, float) * self.scale - self.umax - 1.0
        hi = np.asarray(hi, float) * self.scale + self.umax + 1.0
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        p = corners @ self.rot  # R^T q for each row
        pmin, pmax = p.min(axis=0), p.max(axis=0)
        out = []
        for ax, a0, a1 in zip(self.axes, pmin, pmax):
            i0 = int(np.searchsorted(ax, a0, side="left"))
            i1 = int(np.searchsorted(ax, a1, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, reg: Region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the q arrays inside ``reg``."""
        return self.q[0][reg], self.q[1][reg], self.q[2][reg]

    def paint(self, reg: Region, mask: np.ndarray, tissue: Tissue, over: np.ndarray | None = None,
              in_cavity: bool = False) -> None:
        """Set ``labels[reg][mask] = tissue``, only where the current code is allowed by ``over`` (see
        :func:`allow`) and, if ``in_cavity``, inside the abdominal cavity."""
        lab = self.labels[reg]
        if over is not None:
            mask = mask & over[lab]
        if in_cavity:
            mask = mask & self.cavity[reg]
        lab[mask] = int(tissue)


def ellipsoid_r2(cv: Canvas, center: Iterable[float], semi: Iterable[float],
                 rot: np.ndarray | None = None, margin: float = 1.0) -> tuple[Region, np.ndarray] | None:
    """Squared normalised radius of an ellipsoid, ``|R^T (q - c) / semi|^2`` (< 1 inside), on its bounding box.

    Args:
        center: (3,) mm; semi: (3,) semi-axes (mm) along the columns of ``rot`` (identity if None);
        margin: bounding box enlargement factor (use > 1 to get shells outside the surface).

    Returns:
        (region, r2 float32 array of the region's shape) or None when the box misses the grid.
    """
    c = np.asarray(center, float)
    s = np.asarray(semi, float)
    rmat = np.eye(3) if rot is None else np.asarray(rot, float)
    half = np.sqrt(((rmat * s[None, :]) ** 2).sum(axis=1)) * margin
    reg = cv.region(c - half, c + half)
    if reg is None:
        return None
    qx, qy, qz = cv.coords(reg)
    d = (np.subtract(qx, np.float32(c[0])), np.subtract(qy, np.float32(c[1])), np.subtract(qz, np.float32(c[2])))
    r2 = np.zeros(d[0].shape, np.float32)
    lj = np.empty_like(r2)
    tmp = np.empty_like(r2)
    for j in range(3):
        w = rmat[:, j] / s[j]
        np.multiply(d[0], np.float32(w[0]), out=lj)
        for i in (1, 2):
            if w[i] != 0:
                np.multiply(d[i], np.float32(w[i]), out=tmp)
                lj += tmp
        lj *= lj
        r2 += lj
    return reg, r2


def tube_distance(cv: Canvas, points: np.ndarray, radii: np.ndarray,
                  margin: float = 1.0) -> tuple[Region, np.ndarray] | None:
    """Normalised distance to a swept tube (polyline ``points`` (N, 3) mm with radii (N,) mm).

    Returns (region, d) with d = min over segments of distance / interpolated radius (< 1 inside), float32,
    or None when the bounding box misses the grid.
    """
    pts = np.asarray(points, float)
    rad = np.asarray(radii, float)
    rmax = rad.max() * margin
    reg = cv.region(pts.min(axis=0) - rmax, pts.max(axis=0) + rmax)
    if reg is None:
        return None
    best = np.full(tuple(r.stop - r.start for r in reg), np.inf, dtype=np.float32)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
        rs = max(ra, rb) * margin
        sreg = cv.region(np.minimum(a, b) - rs, np.maximum(a, b) + rs)
        if sreg is None:
            continue
        sreg = tuple(slice(max(s.start, r.start), min(s.stop, r.stop)) for s, r in zip(sreg, reg))
        if any(s.stop <= s.start for s in sreg):
            continue
        qx, qy, qz = cv.coords(sreg)
        seg = (b - a).astype(np.float32)
        L2 = float(seg.astype(float).dot(seg)) or 1e-9
        dx = np.subtract(qx, np.float32(a[0]))
        dy = np.subtract(qy, np.float32(a[1]))
        dz = np.subtract(qz, np.float32(a[2]))
        t = dx * (seg[0] / np.float32(L2))
        tmp = dy * (seg[1] / np.float32(L2))
        t += tmp
        np.multiply(dz, seg[2] / np.float32(L2), out=tmp)
        t += tmp
        np.clip(t, 0.0, 1.0, out=t)
        for dd, comp in ((dx, seg[0]), (dy, seg[1]), (dz, seg[2])):
            np.multiply(t, comp, out=tmp)
            dd -= tmp
            dd *= dd
        dx += dy
        dx += dz                                     # squared distance
        t *= np.float32(rb - ra)
        t += np.float32(ra)                          # radius along the segment
        t *= t
        dx /= t
        local = tuple(slice(s.start - r0.start, s.stop - r0.start) for s, r0 in zip(sreg, reg))
        np.minimum(best[local], dx, out=best[local])
    np.sqrt(best, out=best)
    return reg, best
