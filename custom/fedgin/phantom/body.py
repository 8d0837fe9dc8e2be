"""Body wall, couch, thorax (lung bases, diaphragm, heart), ribs, spine and back muscles.

All lengths in mm in the standard-body frame (RAS: +x patient right, +y anterior, +z superior; in-plane
origin at the centre of the abdominal cavity). Sizes follow the reference table (body ~30 x 21 cm,
subcutaneous fat 8-25 mm, spine ~3-4 cm, psoas) with approximate textbook positions.
"""

from __future__ import annotations

import numpy as np

from .shapes import Canvas, allow, ellipsoid_r2
from .tissues import Tissue as T

__all__ = ["paint_table", "paint_body_wall", "diaphragm_z", "paint_thorax", "paint_ribs", "paint_back",
           "paint_spine"]

SOFT = allow(T.FAT, T.MUSCLE, T.SKIN, T.BOWEL_WALL, T.BOWEL_FLUID, T.GAS, T.LIVER, T.SPLEEN, T.PANCREAS,
             T.KIDNEY_L_CORTEX, T.KIDNEY_L_MEDULLA, T.KIDNEY_R_CORTEX, T.KIDNEY_R_MEDULLA, T.VEIN,
             T.LIVER_VESSEL, T.GALLBLADDER, T.LUNG)


def _cavity_height(qx: np.ndarray, qy: np.ndarray, P: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial distance (mm) of each voxel beyond the cavity boundary (< 0 inside), and cos/sin of its angle."""
    b = np.where(qy >= 0, np.float32(P["b_ant"]), np.float32(P["b_post"]))
    X = qx * np.float32(1.0 / P["a"])
    Y = qy / b
    X2, Y2 = X * X, Y * Y
    rho = np.sqrt(np.maximum(X2 + Y2 + np.float32(P["box"]) * X2 * Y2, 1e-8))
    r = np.sqrt(qx * qx + qy * qy)
    h = r - r / rho
    rs = np.maximum(r, 1e-3)
    return h, qx / rs, qy / rs


def paint_table(cv: Canvas, P: dict) -> None:
    """Curved couch under the patient (rigid: uses the patient frame, not the deformed coordinates)."""
    px, py, _ = cv.axes
    y_top = P["y_top"] + P["curv"] * px[:, None] ** 2
    plate = (py[None, :] <= y_top) & (py[None, :] > y_top - P["thick"]) & (np.abs(px[:, None]) < P["half_width"])
    lab = cv.labels
    sel = plate[:, :, None] & (lab == T.AIR)
    lab[sel] = int(T.TABLE)


def paint_body_wall(cv: Canvas, P: dict) -> None:
    """Skin, subcutaneous fat, muscle wall; the abdominal cavity inside is filled with (visceral) fat."""
    qx, qy, _ = cv.q
    h, c, s = _cavity_height(qx, qy, P)
    cos2 = c * c - s * s
    t_mus = np.float32(P["muscle"]) * (1 + np.float32(P["muscle_lat"]) * cos2)
    t_fat = np.float32(P["fat"]) * (1 + np.float32(P["fat_ap"]) * s + np.float32(P["fat_lat"]) * cos2)
    t_fat = np.maximum(t_fat, 3.0)
    lab = cv.labels
    outer_fat = t_mus + t_fat
    body = h < outer_fat + np.float32(P["skin"])
    lab[body] = int(T.SKIN)
    lab[h < outer_fat] = int(T.FAT)
    lab[h < t_mus] = int(T.MUSCLE)
    cav = h < 0
    lab[cav] = int(T.FAT)
    cv.cavity[...] = cav
    cv.wall = (h, t_mus, c, s)  # reused by the rib painter


def diaphragm_z(qx: np.ndarray, qy: np.ndarray, P: dict) -> np.ndarray:
    """Height (mm) of the diaphragm above (qx, qy): two domes, lower posteriorly (costophrenic recesses)."""
    right = P["z_right"] - P["depth"] * ((qx - P["x_dome"]) * np.float32(1 / P["width"])) ** 2
    left = P["z_left"] - P["depth"] * ((qx + P["x_dome"]) * np.float32(1 / P["width"])) ** 2
    post = np.maximum(-(qy + P["y_post"]) * np.float32(1 / P["post_len"]), 0)
    return np.maximum(right, left) - np.float32(P["post_drop"]) * post * post


def paint_thorax(cv: Canvas, P: dict, heart: dict) -> None:
    """Lung bases above the diaphragm, a 5 mm diaphragm muscle band, and the inferior heart."""
    z_low = min(P["z_right"], P["z_left"]) - 1.5 * P["depth"] - 1.6 * P["post_drop"]
    reg = cv.region((-400, -400, z_low), (400, 400, 1000))
    if reg is None:
        return
    qx, qy, qz = cv.coords(reg)
    zd = diaphragm_z(qx, qy, P)
    fat_only = allow(T.FAT)
    cv.paint(reg, qz > zd, T.LUNG, over=fat_only, in_cavity=True)
    cv.paint(reg, (qz > zd - P["thickness"]) & (qz <= zd), T.MUSCLE, over=fat_only, in_cavity=True)
    res = ellipsoid_r2(cv, heart["center"], heart["semi"])
    if res is not None:
        reg, r2 = res
        lung = allow(T.LUNG)
        cv.paint(reg, r2 < 1, T.MYOCARDIUM, over=lung)
        cv.paint(reg, r2 < heart["inner"] ** 2, T.HEART_BLOOD, over=allow(T.MYOCARDIUM))


def paint_ribs(cv: Canvas, P: dict) -> None:
    """Rib cross-sections inside the muscle wall, sloping down anteriorly, absent below the costal margin."""
    h, t_mus, c, s = cv.wall
    qz = cv.q[2]
    band = (h > 1.0) & (h < t_mus - 1.0)
    z_margin = P["z_low"] + P["anterior_rise"] * np.maximum(s, 0) ** 2
    z_eff = qz + np.float32(P["slope"]) * (1 + s) - np.float32(P["phase"])
    phase = np.mod(z_eff, np.float32(P["period"]))
    rib = band & (qz > z_margin) & (phase < P["height"]) & ~((c * c < 0.12) & (s > 0))
    core = rib & (np.abs(h - t_mus * 0.5) < t_mus * 0.2) & (np.abs(phase - P["height"] / 2) < P["height"] * 0.3)
    lab = cv.labels
    ok = allow(T.MUSCLE)[lab]
    lab[rib & ok] = int(T.CORTICAL_BONE)
    lab[core & ok] = int(T.MARROW)


def paint_back(cv: Canvas, P: dict) -> None:
    """Paraspinal muscles (whole z range) and psoas muscles (growing below their origin near L1)."""
    over = SOFT
    for sign in (-1, 1):
        c = (sign * P["para_x"], P["para_y"], 0.0)
        reg = cv.region((c[0] - P["para_a"], c[1] - P["para_b"], -1000), (c[0] + P["para_a"], c[1] + P["para_b"], 1000))
        if reg is not None:
            qx, qy, _ = cv.coords(reg)
            e = ((qx - np.float32(c[0])) * np.float32(1 / P["para_a"])) ** 2 + \
                ((qy - np.float32(c[1])) * np.float32(1 / P["para_b"])) ** 2
            body = cv.labels[reg] != T.AIR
            cv.paint(reg, (e < 1) & body, T.MUSCLE, over=over)
    z0, rmax = P["psoas_z0"], P["psoas_rmax"]
    for sign in (-1, 1):
        reg = cv.region((-120, P["psoas_y"] - rmax, -1000), (120, P["psoas_y"] + rmax, z0))
        if reg is None:
            continue
        qx, qy, qz = cv.coords(reg)
        rp = np.clip(4.0 + P["psoas_growth"] * (z0 - qz), 0.0, rmax)
        cx = np.float32(sign) * (np.float32(P["spine_half"]) + 0.85 * rp)
        e = ((qx - cx) / np.maximum(rp, 1e-3)) ** 2 + ((qy - np.float32(P["psoas_y"])) / np.maximum(0.9 * rp, 1e-3)) ** 2
        cv.paint(reg, (e < 1) & (qz < z0), T.MUSCLE, over=over)


def paint_spine(cv: Canvas, P: dict) -> None:
    """Vertebral bodies (cortex + marrow) with discs, spinal canal, posterior arch, spinous and transverse
    processes. Painted last: bone overrides any soft tissue inside the body."""
    cy, sx, sy = P["y"], P["half_width"], P["half_depth"]
    ycan = cy - sy - P["pedicle"] - P["canal_r"]
    reg = cv.region((-60, ycan - 40, -1000), (60, cy + sy + 2, 1000))
    if reg is None:
        return
    qx, qy, qz = cv.coords(reg)
    lab = cv.labels[reg]
    over = allow(*[t for t in T if t not in (T.AIR, T.TABLE, T.SKIN)])
    inside = over[lab]
    zmod = np.mod(qz - np.float32(P["phase"]), np.float32(P["period"]))
    disc = zmod < P["disc"]
    mid = (zmod > P["disc"] + 4) & (zmod < P["period"] - 6)
    e = (qx * np.float32(1 / sx)) ** 2 + ((qy - np.float32(cy)) * np.float32(1 / sy)) ** 2
    vb = e < 1
    rim = 1 - 2.0 / min(sx, sy)
    lab[vb & inside] = int(T.CORTICAL_BONE)
    lab[vb & (e < rim * rim) & inside] = int(T.MARROW)
    lab[vb & disc & inside] = int(T.DISC)
    rc2 = qx * qx + (qy - np.float32(ycan)) ** 2
    ring = (rc2 < P["arch_r"] ** 2) & ((qy < ycan + 2) | (np.abs(qx) > P["canal_r"] - 2)) & (qy < cy - sy + 2)
    spinous = (np.abs(qx) < 4) & (qy < ycan) & (qy > ycan - P["spinous_len"]) & mid
    transverse = (np.abs(qy - np.float32(ycan + 3)) < 4) & (np.abs(qx) < P["transverse_len"]) & mid
    bone = (ring | spinous | transverse) & inside
    lab[bone] = int(T.CORTICAL_BONE)
    lab[(rc2 < P["canal_r"] ** 2) & inside] = int(T.CSF)
