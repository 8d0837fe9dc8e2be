"""Hollow viscera: stomach, duodenal C-loop, colon frame and small-bowel loops.

Each is a wall (soft tissue) around a lumen of fluid/stool with gas. The patient is supine, so gas
collects on the non-dependent (anterior, +y) side; colonic stool gets irregular gas bubbles. Bowel is painted
only over cavity fat, before the solid organs (which may then displace it).
"""

from __future__ import annotations

import numpy as np

from .organs import catmull_rom
from .shapes import Canvas, allow, ellipsoid_r2, tube_distance
from .tissues import Tissue as T

__all__ = ["paint_stomach", "paint_tube_bowel", "paint_loops"]

FAT_ONLY = allow(T.FAT)


def _bubbles(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray, waves: np.ndarray, phases: np.ndarray,
             level: float) -> np.ndarray:
    """Irregular gas bubbles in stool: a sum of plane waves with random directions and wavelengths
    (``waves`` (K, 3) wave vectors in rad/mm) thresholded at ``level`` (1D arrays in, bool out)."""
    f = np.zeros(qx.shape, np.float32)
    for w, ph in zip(waves.astype(np.float32), phases.astype(np.float32)):
        f += np.sin(qx * w[0] + qy * w[1] + qz * w[2] + ph)
    return f > level


def paint_stomach(cv: Canvas, P: dict) -> None:
    """Union of a fundus/body ellipsoid and an antrum ellipsoid, 4 mm wall, fluid with an anterior gas cap."""
    parts = []
    for part in ("fundus", "antrum"):
        res = ellipsoid_r2(cv, P[part]["center"], P[part]["semi"], P[part]["rot"])
        if res is not None:
            parts.append((res, P[part]))
    for (reg, r2), p in parts:
        cv.paint(reg, r2 < 1, T.BOWEL_WALL, over=FAT_ONLY, in_cavity=True)
    for (reg, r2), p in parts:
        inner = (1 - P["wall"] / min(p["semi"])) ** 2
        lumen = r2 < inner
        qy = cv.q[1][reg]
        gas = lumen & (qy > np.float32(P["gas_y"]))
        cv.paint(reg, lumen, T.BOWEL_FLUID, over=allow(T.BOWEL_WALL))
        cv.paint(reg, gas, T.GAS, over=allow(T.BOWEL_FLUID))


def paint_tube_bowel(cv: Canvas, P: dict) -> None:
    """Duodenum or colon: a Catmull-Rom tube with wall, lumen, anterior gas and optional stool bubbles."""
    pts, rad = catmull_rom(P["points"], P["radii"], per_segment=3)
    res = tube_distance(cv, pts, rad)
    if res is None:
        return
    reg, d = res
    cv.paint(reg, d < 1, T.BOWEL_WALL, over=FAT_ONLY, in_cavity=True)
    lumen = d < 1 - P["wall"] / float(np.max(rad))
    cv.paint(reg, lumen, T.BOWEL_FLUID, over=allow(T.BOWEL_WALL))
    qx, qy, qz = cv.coords(reg)
    gas = lumen & (qy > np.float32(P["gas_y"]))
    if P.get("bubble_waves") is not None:
        sel = np.nonzero(lumen)
        gas[sel] |= _bubbles(qx[sel], qy[sel], qz[sel], P["bubble_waves"], P["bubble_phases"], P["bubble_level"])
    cv.paint(reg, gas, T.GAS, over=allow(T.BOWEL_FLUID))


def paint_loops(cv: Canvas, loops: list[dict]) -> None:
    """Small-bowel loops as ellipsoids (wall 2-3 mm, fluid, gas cap in some)."""
    for L in loops:
        res = ellipsoid_r2(cv, L["center"], L["semi"], L["rot"])
        if res is None:
            continue
        reg, r2 = res
        cv.paint(reg, r2 < 1, T.BOWEL_WALL, over=FAT_ONLY, in_cavity=True)
        lumen = r2 < (1 - L["wall"] / min(L["semi"])) ** 2
        cv.paint(reg, lumen, T.BOWEL_FLUID, over=allow(T.BOWEL_WALL))
        if L["gas_y"] is not None:
            qy = cv.q[1][reg]
            cv.paint(reg, lumen & (qy > np.float32(L["gas_y"])), T.GAS, over=allow(T.BOWEL_FLUID))
