"""Solid organs and large vessels: liver (+ intrahepatic vessels), gallbladder, spleen, kidneys, pancreas,
portal / splenic / hepatic veins, aorta and IVC.

Shapes are ellipsoids, unions of ellipsoids and swept tubes in the standard-body frame (mm, RAS), placed
after the reference table (section 3.2): liver ~1.3 L in the right upper quadrant up to the right dome;
spleen ~200 mL posterolateral left; kidneys ~11 x 5 x 4 cm paravertebral, the right 1-2 cm lower;
pancreas a 12-15 cm curved tube from the head (in the duodenal C-loop) to the tail at the splenic hilum;
gallbladder ~8 x 3.5 cm under liver segments IV/V; aorta left-anterior and IVC right-anterior of the spine.
Organs are painted only inside the abdominal cavity and below the diaphragm (the lung and diaphragm codes
are never painted over); each painter lists the codes it may replace, which fixes precedence.
"""

from __future__ import annotations

import numpy as np

from .body import diaphragm_z
from .shapes import Canvas, allow, ellipsoid_r2, tube_distance
from .tissues import Tissue as T

__all__ = ["paint_liver", "paint_gallbladder", "paint_spleen", "paint_kidney", "paint_pancreas",
           "paint_veins", "paint_great_vessels", "catmull_rom"]

BOWEL = (T.BOWEL_WALL, T.BOWEL_FLUID, T.GAS)


def catmull_rom(points: np.ndarray, values: np.ndarray, per_segment: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Densify a control polyline (N, 3) and per-point values (N,) with a Catmull-Rom spline."""
    p = np.asarray(points, float)
    v = np.asarray(values, float)
    p_ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out_p, out_v = [], []
    for i in range(len(p) - 1):
        p0, p1, p2, p3 = p_ext[i:i + 4]
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out_p.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                                + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
            out_v.append(v[i] + (v[i + 1] - v[i]) * t)
    out_p.append(p[-1])
    out_v.append(v[-1])
    return np.array(out_p), np.array(out_v)


def paint_liver(cv: Canvas, P: dict, dia: dict) -> None:
    """Right lobe and left lobe ellipsoids, cut by a curved oblique visceral surface, below the diaphragm."""
    over = allow(T.FAT, *BOWEL)
    n = np.asarray(P["cut_normal"], float)
    for lobe in ("right", "left"):
        res = ellipsoid_r2(cv, P[lobe]["center"], P[lobe]["semi"], P[lobe]["rot"])
        if res is None:
            continue
        reg, r2 = res
        qx, qy, qz = cv.coords(reg)
        cut = (qx - np.float32(P["cut_point"][0])) * np.float32(n[0]) + \
              (qz - np.float32(P["cut_point"][2])) * np.float32(n[2]) + \
              np.float32(P["cut_curv"]) * ((qy - np.float32(P["cut_point"][1])) * np.float32(1 / 60.0)) ** 2
        below = qz < diaphragm_z(qx, qy, dia) - np.float32(dia["thickness"])
        cv.paint(reg, (r2 < 1) & (cut < 0) & below, T.LIVER, over=over, in_cavity=True)


def paint_gallbladder(cv: Canvas, P: dict) -> None:
    res = ellipsoid_r2(cv, P["center"], P["semi"], P["rot"])
    if res is not None:
        reg, r2 = res
        cv.paint(reg, r2 < 1, T.GALLBLADDER, over=allow(T.FAT, T.LIVER, *BOWEL), in_cavity=True)


def paint_spleen(cv: Canvas, P: dict) -> None:
    """Ellipsoid with a concave hilum (a sphere carved out medially)."""
    res = ellipsoid_r2(cv, P["center"], P["semi"], P["rot"])
    if res is None:
        return
    reg, r2 = res
    qx, qy, qz = cv.coords(reg)
    h = P["hilum"]
    d2 = (qx - np.float32(h[0])) ** 2 + (qy - np.float32(h[1])) ** 2 + (qz - np.float32(h[2])) ** 2
    mask = (r2 < 1) & (d2 > P["hilum_r"] ** 2)
    cv.paint(reg, mask, T.SPLEEN, over=allow(T.FAT, T.LIVER, *BOWEL), in_cavity=True)


def paint_kidney(cv: Canvas, P: dict, side: str) -> None:
    """Cortex shell, medulla core and a renal-sinus fat notch opening anteromedially (the hilum)."""
    cortex, medulla = (T.KIDNEY_R_CORTEX, T.KIDNEY_R_MEDULLA) if side == "right" else \
        (T.KIDNEY_L_CORTEX, T.KIDNEY_L_MEDULLA)
    res = ellipsoid_r2(cv, P["center"], P["semi"], P["rot"])
    if res is None:
        return
    reg, r2 = res
    over = allow(T.FAT, T.LIVER, T.SPLEEN, *BOWEL)
    cv.paint(reg, r2 < 1, cortex, over=over, in_cavity=True)
    cv.paint(reg, r2 < P["medulla"] ** 2, medulla, over=allow(cortex))
    res = ellipsoid_r2(cv, P["sinus_center"], P["sinus_semi"], P["rot"])
    if res is not None:
        reg, r2 = res
        cv.paint(reg, r2 < 1, T.FAT, over=allow(cortex, medulla))


def paint_pancreas(cv: Canvas, P: dict) -> None:
    """Head ellipsoid plus a Catmull-Rom tube (neck, body, tail)."""
    over = allow(T.FAT, *BOWEL)
    res = ellipsoid_r2(cv, P["head_center"], P["head_semi"], P["head_rot"])
    if res is not None:
        reg, r2 = res
        cv.paint(reg, r2 < 1, T.PANCREAS, over=over, in_cavity=True)
    pts, rad = catmull_rom(P["points"], P["radii"], per_segment=4)
    res = tube_distance(cv, pts, rad)
    if res is not None:
        reg, d = res
        cv.paint(reg, d < 1, T.PANCREAS, over=over, in_cavity=True)


def paint_veins(cv: Canvas, trees: list[dict]) -> None:
    """Tubes that become LIVER_VESSEL inside the liver and VEIN elsewhere (portal, splenic, hepatic veins)."""
    outside = allow(T.FAT, T.PANCREAS, *BOWEL)
    inside = allow(T.LIVER)
    for tree in trees:
        res = tube_distance(cv, tree["points"], tree["radii"])
        if res is None:
            continue
        reg, d = res
        m = d < 1
        cv.paint(reg, m, T.LIVER_VESSEL, over=inside)
        if tree.get("extrahepatic", True):
            cv.paint(reg, m, T.VEIN, over=outside, in_cavity=True)


def paint_great_vessels(cv: Canvas, P: dict) -> None:
    """Aorta and IVC as vertical elliptic tubes whose centres drift linearly with z; they carve any organ."""
    over = allow(T.FAT, T.MUSCLE, T.LUNG, T.LIVER, T.LIVER_VESSEL, T.SPLEEN, T.PANCREAS, T.VEIN, T.GALLBLADDER,
                 T.KIDNEY_L_CORTEX, T.KIDNEY_L_MEDULLA, T.KIDNEY_R_CORTEX, T.KIDNEY_R_MEDULLA, *BOWEL)
    for name, tissue in (("aorta", T.AORTA), ("ivc", T.VEIN)):
        v = P[name]
        ext = max(v["semi"]) + 40
        reg = cv.region((v["x0"] - ext, v["y0"] - ext, v["z_min"]), (v["x0"] + ext, v["y0"] + ext, v["z_max"]))
        if reg is None:
            continue
        qx, qy, qz = cv.coords(reg)
        cx = np.float32(v["x0"]) + np.float32(v["dx_dz"]) * qz
        cy = np.float32(v["y0"]) + np.float32(v["dy_dz"]) * qz
        e = ((qx - cx) * np.float32(1 / v["semi"][0])) ** 2 + ((qy - cy) * np.float32(1 / v["semi"][1])) ** 2
        cv.paint(reg, (e < 1) & (qz >= v["z_min"]) & (qz <= v["z_max"]), tissue, over=over)
