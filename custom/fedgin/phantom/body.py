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
    """Radial distance (mm) beyond the cavity outline (< 0 inside), and cos(2 theta), sin(theta) of the angle.

    The cavity outline is a "boxy" ellipse ``X^2 + Y^2 + box X^2 Y^2 / (X^2 + Y^2) = 1`` (X = x / a,
    Y = y / b, box < 0 squares the corners) with a different b anteriorly and posteriorly.
    """
    f32 = np.float32
    qx2 = qx * qx
    qy2 = qy * qy
    r2 = qx2 + qy2
    c1 = 0.5 * (1 / P["b_ant"] ** 2 + 1 / P["b_post"] ** 2)
    c2 = 0.5 * (1 / P["b_ant"] ** 2 - 1 / P["b_post"] ** 2)
    Y2 = np.abs(qy)
    Y2 *= qy
    Y2 *= f32(c2)
    Y2 += qy2 * f32(c1)                    # y^2 / b(y)^2
    X2 = qx2 * f32(1 / P["a"] ** 2)
    rho2 = X2 + Y2
    np.maximum(rho2, f32(1e-8), out=rho2)
    X2 *= Y2
    X2 /= rho2
    X2 *= f32(P["box"])
    rho2 += X2                             # homogeneous of degree 2, > 0 for box > -4
    del X2, Y2
    np.maximum(r2, f32(1e-6), out=r2)
    inv_r2 = np.reciprocal(r2)
    cos2 = qx2 - qy2
    cos2 *= inv_r2
    del qx2, qy2
    rho2 = np.divide(r2, rho2, out=rho2)   # (r / rho)^2
    h = np.sqrt(r2, out=r2)
    h -= np.sqrt(rho2, out=rho2)
    np.sqrt(inv_r2, out=inv_r2)
    sin = np.multiply(qy, inv_r2, out=inv_r2)
    return h, cos2, sin


def paint_table(cv: Canvas, P: dict) -> None:
    """Curved couch under the patient (rigid: uses the patient frame, not the deformed coordinates)."""
    px, py, _ = cv.axes
    y_top = P["y_top"] + P["curv"] * px[:, None] ** 2
    plate = (py[None, :] <= y_top) & (py[None, :] > y_top - P["thick"]) & (np.abs(px[:, None]) < P["half_width"])
    lab = cv.labels
    sel = plate[:, :, None] & (lab == T.AIR)
    lab[sel] = int(T.TABLE)


def paint_body_wall(cv: Canvas, P: dict, z_step_mm: float = 4.0) -> None:
    """Skin, subcutaneous fat, muscle wall; the abdominal cavity inside is filled with (visceral) fat.

    The wall varies slowly along z, so it is evaluated on every ``z_step_mm`` (one painting slice per group,
    error well below a voxel for the smooth displacement) and repeated to the neighbouring slices.
    """
    nz = cv.shape[2]
    dz = abs(float(cv.axes[2][1] - cv.axes[2][0])) if nz > 1 else 1.0
    step = max(1, int(round(z_step_mm / dz)))
    groups = -(-nz // step)
    ks = np.minimum(np.arange(groups) * step + step // 2, nz - 1)
    qx, qy = cv.q[0][:, :, ks], cv.q[1][:, :, ks]
    h, cos2, s = _cavity_height(qx, qy, P)
    f32 = np.float32
    t_mus = f32(P["muscle"]) * (1 + f32(P["muscle_lat"]) * cos2)
    # linea alba: the anterior wall thins to a few mm at the midline
    t_mus *= 1 - f32(0.6) * (s > 0.3) / (1 + (qx * f32(1 / 12.0)) ** 2)
    t_fat = f32(P["fat"]) * (1 + f32(P["fat_ap"]) * s + f32(P["fat_lat"]) * cos2)
    np.maximum(t_fat, f32(3.0), out=t_fat)
    outer_fat = t_mus + t_fat
    sub = np.zeros(h.shape, np.uint8)
    sub[h < outer_fat + f32(P["skin"])] = int(T.SKIN)
    sub[h < outer_fat] = int(T.FAT)
    sub[h < t_mus] = int(T.MUSCLE)
    cav = h < 0
    sub[cav] = int(T.FAT)
    cv.labels[...] = np.repeat(sub, step, axis=2)[:, :, :nz]
    cv.cavity[...] = np.repeat(cav, step, axis=2)[:, :, :nz]
    cv.wall = dict(step=step, h=h, t_mus=t_mus, s=s, cos2=cos2)  # reused by the rib painter


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
    """Rib cross-sections inside the muscle wall: each rib descends by ``drop`` mm from the spine to the front
    (linear in the angle), ribs repeat every ``period`` mm, and none lie below the costal margin."""
    W = cv.wall
    step, nz = W["step"], cv.shape[2]
    band = (W["h"] > 1.0) & (W["h"] < W["t_mus"] - 1.0)
    i, j, g = np.nonzero(band)
    ii, jj, gg, kk = [], [], [], []
    for m in range(step):
        k = g * step + m
        ok = k < nz
        ii.append(i[ok]); jj.append(j[ok]); gg.append(g[ok]); kk.append(k[ok])
    i, j, g, k = (np.concatenate(a) for a in (ii, jj, gg, kk))
    qz = cv.q[2][i, j, k]
    s = W["s"][i, j, g]
    h = W["h"][i, j, g]
    t_mus = W["t_mus"][i, j, g]
    cos2 = W["cos2"][i, j, g]
    from_back = np.arccos(np.clip(-s, -1, 1)) * np.float32(1 / np.pi)      # 0 at the spine, 1 at the front
    z_eff = qz + np.float32(P["drop"]) * from_back - np.float32(P["phase"])
    phase = np.mod(z_eff, np.float32(P["period"]))
    margin = P["z_low"] + P["anterior_rise"] * np.maximum(s, 0) ** 2
    rib = (qz > margin) & (phase < P["height"]) & ~((cos2 < -0.76) & (s > 0))
    core = rib & (np.abs(h - t_mus * 0.5) < t_mus * 0.2) & (np.abs(phase - P["height"] / 2) < P["height"] * 0.3)
    lab = cv.labels
    muscle = lab[i, j, k] == T.MUSCLE
    sel = rib & muscle
    lab[i[sel], j[sel], k[sel]] = int(T.CORTICAL_BONE)
    sel = core & muscle
    lab[i[sel], j[sel], k[sel]] = int(T.MARROW)


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
        ry = np.maximum(0.9 * rp, 1e-3)
        e = ((qx - cx) / np.maximum(rp, 1e-3)) ** 2 + ((qy - np.float32(P["psoas_y"])) / ry) ** 2
        cv.paint(reg, (e < 1) & (qz < z0), T.MUSCLE, over=over)


def sample_spine(J, y: float, half_width: float, half_depth: float, pedicle: tuple[float, float],
                 canal_r: tuple[float, float], spinous_len: tuple[float, float], transverse_len: tuple[float, float],
                 period: tuple[float, float], disc: tuple[float, float]) -> dict:
    """The vertebral column's parameters for :func:`paint_spine` (standard-body mm): ``y`` the body centre's AP
    position, ``half_width`` / ``half_depth`` scaled by U(0.9, 1.1), the others drawn from their ranges, the phase
    within one period and the arch 5-7 mm outside the canal. ``J``: the anatomy's jitter (``J.u(a, b)``)."""
    spine = dict(y=y, half_width=half_width * J.u(0.9, 1.1), half_depth=half_depth * J.u(0.9, 1.1),
                 pedicle=J.u(*pedicle), canal_r=J.u(*canal_r), spinous_len=J.u(*spinous_len),
                 transverse_len=J.u(*transverse_len), period=J.u(*period), disc=J.u(*disc), phase=J.u(0, period[1]))
    spine["arch_r"] = spine["canal_r"] + J.u(5, 7)
    return spine


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
    mid = (zmod > P["disc"] + 6) & (zmod < P["period"] - 8)
    e = (qx * np.float32(1 / sx)) ** 2 + ((qy - np.float32(cy)) * np.float32(1 / sy)) ** 2
    vb = e < 1
    rim = 1 - 2.0 / min(sx, sy)
    lab[vb & inside] = int(T.CORTICAL_BONE)
    lab[vb & (e < rim * rim) & inside] = int(T.MARROW)
    lab[vb & disc & inside] = int(T.DISC)
    rc2 = qx * qx + (qy - np.float32(ycan)) ** 2
    ring = (rc2 < P["arch_r"] ** 2) & ((qy < ycan + 2) | (np.abs(qx) > P["canal_r"] - 2)) & (qy < cy - sy + 2)
    spinous = (np.abs(qx) < 3) & (qy < ycan) & (qy > ycan - P["spinous_len"]) & mid
    transverse = (np.abs(qy - np.float32(ycan + 3)) < 3) & (np.abs(qx) < P["transverse_len"]) & mid
    bone = (ring | spinous | transverse) & inside
    lab[bone] = int(T.CORTICAL_BONE)
    lab[(rc2 < P["canal_r"] ** 2) & inside] = int(T.CSF)
