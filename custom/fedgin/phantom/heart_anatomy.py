"""Per-case anatomy of the whole-heart phantom: random parameters and the painting of the tissue label map.

Frames are those of :mod:`~fedgin.phantom.anatomy`: patient frame p (mm, RAS: +x patient right, +y anterior,
+z superior) and standard-body frame ``q = (R p + u(p)) / s`` (R: positioning rotation of a few degrees,
u: smooth random displacement, per-component SD 1-2 mm, correlation length 20-30 mm; s: body scale
0.92-1.08). The in-plane origin is the centre of the thoracic cavity, z = 0 is near mid-heart.

Heart geometry (reference ``datasets_and_phantom.md`` section 3.2 "Heart variant"; sizes from standard
echo / CMR normal ranges, approximate; chamber sizes and wall thicknesses are drawn in absolute mm, so they do
not scale with the body):

* Heart frame: origin B at the centre of the LV base (mitral-aortic plane), e3 along the LV long axis towards
  the apex (left, anterior, inferior: nominal direction (-0.55, 0.6, -0.5)), e1 towards the RV
  (right-anterior), e2 = e3 x e1 (inferior wall). Per case: B jittered +-8 mm, the whole heart rotated
  +-0.15 rad about B.
* LV blood cavity: prolate ellipsoid truncated at the base plane, equatorial diameter 45-55 mm, semi long
  axis 48-58 mm with the base plane 38-46 % of it behind the centre (cavity ~80-150 mL).
* LV myocardium: shell 8-11 mm (apex x0.75-0.9), closed at the base by a 4-6 mm ring pierced by the mitral
  (r 12-15 mm, opens into the LA) and aortic (opens into the ascending aorta) orifices.
* RV blood cavity: an ellipsoid centred beyond the septum (semi-axes 17-23 mm towards the RV, LV epicardium
  + 10-16 mm around it, 75-90 % of the LV length along it), carved by the LV myocardium into a crescent
  wrapped around the septum, plus the outflow tract up to the pulmonary valve; free wall 3-4.5 mm
  (unlabelled myocardium).
* LA: ellipsoid ~54 x 36 x 44 mm (AP diameter 36 mm x0.9-1.1) posterior-superior of the LV base, touching the
  mitral orifice; RA: ~48 x 42 x 52 mm to the right, receiving the SVC from above and the IVC from below;
  atrial walls 2-3 mm; four pulmonary veins (r ~6-7 mm) into the LA.
* Ascending aorta: swept tube of diameter ~30 mm (x0.9-1.1) from the aortic valve upwards; labelled up to the
  superior level of the atria (MM-WHS definition), unlabelled above. Pulmonary trunk: tube of diameter
  ~25 mm (x0.85-1.15) from the pulmonary valve up and back to the bifurcation (labelled), then the left and
  right pulmonary arteries (unlabelled).
* Chest (reusing the abdominal phantom's painters): skin, subcutaneous fat 6-20 mm, chest-wall muscle
  9-14 mm with ribs, sternum, thoracic spine with discs and canal, paraspinal muscles, lungs, domes of the
  diaphragm with the liver below the right one, descending aorta (diameter 21-26 mm) and oesophagus in the
  posterior mediastinum, mediastinal and epicardial fat (1-4 mm around every cardiac structure).

Painting order (later wins; bone and chest wall are never overwritten by the heart): chest wall, lungs,
diaphragm and abdomen, ribs, sternum, paraspinal muscles, spine, posterior mediastinum, then epicardial fat
pads, unlabelled walls, unlabelled vessels, and the labelled structures RA, LA, RV, PA, AO, LV myocardium,
LV cavity, mitral and aortic orifices. A label map can hold one value per voxel, so labels never overlap.
"""

from __future__ import annotations

import numpy as np

from . import body
from .anatomy import Anatomy, _Jitter
from .heart_tissues import HeartTissue as H
from .shapes import Canvas, allow, ellipsoid_r2, frame, rotation, tube_distance

__all__ = ["sample_heart_anatomy", "build_heart_labels", "HEART_AXIS", "RV_DIRECTION"]

#: Nominal LV long axis (towards the apex) and direction of the RV, standard-body frame.
HEART_AXIS = (-0.55, 0.6, -0.5)
RV_DIRECTION = (0.5, 1.0, -0.2)
_B0 = np.array([-12.0, 0.0, 5.0])          # nominal centre of the LV base

# nominal design points (standard-body mm, for a heart of nominal size at B0)
_AO = [(-2, 12, 16), (4, 16, 35), (10, 14, 60), (8, 8, 90), (2, 0, 130)]
_AO_R = [16.0, 15.5, 15.0, 14.5, 14.0]
_PA_VALVE = (-20, 42, 40)
_PA = [_PA_VALVE, (-26, 28, 54), (-24, 10, 62)]
_RVOT_START = (-10, 40, 10)
_LPA = [(-24, 10, 62), (-45, -2, 64), (-65, -12, 60)]
_RPA = [(-24, 10, 62), (-5, -10, 66), (20, -22, 64), (50, -22, 58)]
_RA = (34, 8, 14)
_RA_SEMI = (24.0, 21.0, 26.0)
_LA_SEMI = (27.0, 18.0, 22.0)
_SVC = [(30, -4, 130), (30, -2, 60), (30, 2, 30)]
_IVC = [(28, -8, -130), (29, -4, -40), (30, 3, -2)]
_PV = [  # offsets from the LA centre
    [(-14, -1, 8), (-36, -4, 12), (-55, -6, 16)],
    [(-14, -3, -8), (-36, -8, -12), (-55, -10, -16)],
    [(14, -1, 8), (36, -4, 10), (55, -6, 14)],
    [(14, -3, -8), (36, -8, -10), (55, -10, -14)],
]

PAD_OVER = allow(H.LUNG)
WALL_OVER = allow(H.LUNG, H.FAT, H.DIAPHRAGM)
_UNLABELLED_BLOOD = (H.AORTA, H.PULM_VEIN, H.PA_BRANCH, H.SVC, H.IVC)
VESSEL_OVER = allow(H.LUNG, H.FAT, H.DIAPHRAGM, H.HEART_WALL, H.LIVER, H.ABDOMEN, *_UNLABELLED_BLOOD)
LABEL_OVER = allow(H.LUNG, H.FAT, H.DIAPHRAGM, H.HEART_WALL, H.LIVER, H.ABDOMEN, *_UNLABELLED_BLOOD,
                   H.RA_BLOOD, H.LA_BLOOD, H.RV_BLOOD, H.PA_BLOOD, H.AO_BLOOD)
CAVITY_OVER = allow(H.LUNG, H.FAT, H.DIAPHRAGM, H.HEART_WALL, H.LIVER, H.ABDOMEN, *_UNLABELLED_BLOOD,
                    H.RA_BLOOD, H.LA_BLOOD, H.RV_BLOOD, H.PA_BLOOD, H.AO_BLOOD, H.LV_MYO)


def _support(rot: np.ndarray, semi: np.ndarray, direction) -> float:
    """Half-extent of an ellipsoid (axes = columns of ``rot``, semi-axes ``semi``) along a unit direction."""
    return float(np.linalg.norm(np.asarray(semi) * (np.asarray(rot).T @ np.asarray(direction, float))))


def sample_heart_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw all structure parameters of one patient from ``rng`` (see the module docstring for the ranges).

    Returns:
        :class:`~fedgin.phantom.anatomy.Anatomy` whose ``parts`` hold the chest and heart parameters
        (standard-body mm) and whose x/y/z ranges are the patient-frame extent the cardiac FOV must cover.
    """
    J = _Jitter(rng)
    scale = J.u(0.92, 1.08)
    rot = rotation(*np.clip(rng.normal(0.0, 0.02, 3), -0.05, 0.05))
    g = 1.0 / scale                         # absolute mm -> standard-body mm for heart sizes
    P: dict = {}

    P["wall"] = dict(a=125 * J.u(0.94, 1.06), b_ant=82 * J.u(0.93, 1.07), b_post=92 * J.u(0.95, 1.05),
                     box=J.u(-0.3, -0.1), muscle=J.u(9, 14), muscle_lat=J.u(0.0, 0.3), fat=J.u(6, 20),
                     fat_ap=J.u(-0.3, 0.2), fat_lat=J.u(0.0, 0.35), skin=2.0)
    z_right = -35 + J.u(-8, 8)
    P["diaphragm"] = dict(z_right=z_right, z_left=z_right - J.u(10, 22), x_dome=55.0, width=70.0,
                          depth=25 * J.u(0.8, 1.2), y_post=10.0, post_len=60.0, post_drop=45 * J.u(0.8, 1.2),
                          thickness=J.u(4, 6), liver_x=J.u(-30, -15))
    P["ribs"] = dict(z_low=-1000.0, anterior_rise=0.0, drop=J.u(50, 90), phase=J.u(0, 26), period=J.u(24, 28),
                     height=J.u(8, 11))
    P["sternum"] = dict(half_width=J.u(12, 16), half_depth=J.u(5, 7), center=J.u(-4, 0))
    spine_y = -62 + J.u(-3, 3)
    P["spine"] = spine = body.sample_spine(J, spine_y, 19, 16, pedicle=(4, 6), canal_r=(7, 9), spinous_len=(15, 22),
                                           transverse_len=(25, 32), period=(25, 29), disc=(5, 7))
    P["back"] = dict(para_x=30.0, para_y=-97.0, para_a=20 * J.u(0.9, 1.1), para_b=14 * J.u(0.9, 1.1),
                     psoas_z0=-5000.0, psoas_rmax=1.0, psoas_growth=0.0, psoas_y=spine_y,
                     spine_half=spine["half_width"])
    P["mediastinum"] = dict(posterior=dict(center=(-10.0, -42.0), semi=(30.0 * J.u(0.9, 1.1), 14.0)),
                            superior=dict(center=J.pos((0, 2, 72), sd=3, lim=6), semi=J.size((34, 34, 40))))
    P["descending_aorta"] = dict(points=J.points([(-32, -44, 150), (-30, -42, 0), (-28, -38, -150)], sd=2, lim=4),
                                 radius=J.u(10.5, 13.0) * g)
    P["esophagus"] = dict(points=J.points([(-12, -42, 150), (-12, -42, -150)], sd=1.5, lim=3), radius=J.u(5, 7))

    # --- heart pose --------------------------------------------------------------------------------------------
    a = J.u(22.5, 27.5)                      # LV cavity equatorial radius (absolute mm)
    hs = a / 25.0                            # heart size relative to nominal
    R_h = J.rot(sd=0.06, lim=0.15)
    B = J.pos(_B0, sd=4, lim=8)
    Hm = R_h @ frame(HEART_AXIS, RV_DIRECTION)
    e1, e2, e3 = Hm[:, 0], Hm[:, 1], Hm[:, 2]
    k = hs * g                               # nominal design offsets -> standard-body mm

    def place(p, sd: float = 2.0, lim: float = 4.0) -> np.ndarray:
        base = B + R_h @ ((np.asarray(p, float) - _B0) * k)
        return base + np.clip(rng.normal(0.0, sd, 3), -lim, lim) * g

    def place_path(pts, sd: float = 2.0, lim: float = 4.0) -> np.ndarray:
        return np.vstack([place(p, sd, lim) for p in pts])

    L = J.u(48, 58) * g
    t = J.u(8, 11) * g
    lv = dict(B=B, rot=Hm, a=a * g, L=L, h=J.u(0.38, 0.46) * L, t=t, t_apex=t * J.u(0.75, 0.9),
              t_lid=J.u(4, 6) * g, pad=J.u(1, 4) * g,
              mitral=np.array([-6.0, -4.0]) * k + rng.normal(0, 1.5, 2) * g, mitral_r=J.u(12, 15) * g)
    lv["center"] = B + lv["h"] * e3
    P["lv"] = lv
    outer = lv["a"] + lv["t"]
    s2 = outer + J.u(10, 16) * g
    rv_c = B + (outer - lv["t"] * 0.5 + J.u(0, 4) * g) * e1 + J.u(-4, 4) * g * e2 + (lv["h"] + J.u(-4, 4) * g) * e3
    pa_pts = place_path(_PA)
    pa_n = pa_pts[1] - pa_pts[0]
    pa_n /= np.linalg.norm(pa_n)
    P["rv"] = dict(center=rv_c, semi=np.array([J.u(17, 23) * g, s2, L * J.u(0.75, 0.9)]), rot=Hm,
                   base=J.u(2, 6) * g, wall=J.u(3, 4.5) * g, pad=J.u(1, 4) * g,
                   rvot=np.vstack([place(_RVOT_START), pa_pts[0]]), rvot_r=J.u(12, 14) * g)
    P["pa"] = dict(points=pa_pts, radius=J.u(10.6, 14.4) * g, valve=pa_pts[0], normal=pa_n, wall=J.u(1.5, 2.5) * g,
                   pad=J.u(2, 5) * g)
    P["pa_branches"] = [dict(points=np.vstack([pa_pts[-1], place_path(_LPA[1:])]), radius=J.u(8.5, 11) * g),
                        dict(points=np.vstack([pa_pts[-1], place_path(_RPA[1:])]), radius=J.u(8.5, 11) * g)]
    ao_pts = place_path(_AO)
    P["ao"] = dict(points=ao_pts, radii=np.asarray(_AO_R) * J.u(0.9, 1.1) * g, wall=J.u(1.5, 2.5) * g,
                   pad=J.u(2, 5) * g)
    au = Hm.T @ (ao_pts[0] - B)
    lv["aortic"] = au[:2]
    lv["aortic_r"] = P["ao"]["radii"][0] * J.u(0.7, 0.8)

    la_semi = np.asarray(_LA_SEMI) * hs * g * J.size((1, 1, 1), 0.9, 1.1)
    la_rot = R_h @ rotation(*np.clip(rng.normal(0, 0.05, 3), -0.1, 0.1))
    mitral_pt = B + lv["mitral"][0] * e1 + lv["mitral"][1] * e2
    ext = _support(la_rot, la_semi, e3)
    la_c = mitral_pt - e3 * (lv["t_lid"] + 0.7 * ext) + R_h @ (np.array([0.0, -3.0, 3.0]) * k)
    P["la"] = dict(center=la_c, semi=la_semi, rot=la_rot, wall=J.u(2, 3) * g, pad=J.u(1, 4) * g)
    P["ra"] = dict(center=place(_RA, sd=3, lim=6), semi=np.asarray(_RA_SEMI) * hs * g * J.size((1, 1, 1), 0.9, 1.1),
                   rot=R_h @ rotation(*np.clip(rng.normal(0, 0.05, 3), -0.1, 0.1)), wall=J.u(2, 3) * g,
                   pad=J.u(1, 4) * g)
    P["svc"] = dict(points=place_path(_SVC), radius=J.u(8.5, 11) * g)
    P["ivc"] = dict(points=place_path(_IVC), radius=J.u(10, 12.5) * g)
    P["pulmonary_veins"] = [dict(points=la_c + np.vstack([R_h @ (np.asarray(p, float) * k) for p in pts])
                                 + np.clip(rng.normal(0, 1.5, (3, 3)), -3, 3) * g,
                                 radii=np.array([7.0, 6.5, 6.0]) * J.u(0.85, 1.15) * g) for pts in _PV]
    tops = [P[c]["center"][2] + _support(P[c]["rot"], P[c]["semi"], (0, 0, 1)) for c in ("la", "ra")]
    P["ao"]["z_cut"] = max(tops)

    disp_sd = J.u(1.0, 2.0)
    disp_sigma = J.u(20, 30)
    field_seed = int(rng.integers(2**63 - 1))

    # FOV (patient frame): from below the heart to above the pulmonary bifurcation, centred on the heart
    lv_low = lv["center"][2] - _support(Hm, np.array([outer, outer, L + lv["t_apex"]]), (0, 0, 1))
    rv_low = rv_c[2] - _support(Hm, P["rv"]["semi"] + P["rv"]["wall"], (0, 0, 1))
    z_bot = min(lv_low, rv_low) - J.u(5, 15)
    z_top = pa_pts[-1][2] + P["pa"]["radius"] + J.u(12, 25)
    cx = B[0] + 5.0 * k
    slack = 2.5 * disp_sd + 4
    return Anatomy(scale=scale, rot=rot, disp_sd=disp_sd, disp_sigma=disp_sigma, field_seed=field_seed, parts=P,
                   z_range=(z_bot * scale - slack, z_top * scale + slack),
                   x_range=((cx - 68) * scale, (cx + 68) * scale), y_range=(-66 * scale, 74 * scale))


# --- painting ---------------------------------------------------------------------------------------------------

def _halfspace(cv: Canvas, reg, point, normal) -> np.ndarray:
    """Boolean mask (region shape) of ``(q - point) . normal >= 0``."""
    qx, qy, qz = cv.coords(reg)
    n = np.asarray(normal, np.float32)
    p = np.asarray(point, np.float32)
    return (qx - p[0]) * n[0] + (qy - p[1]) * n[1] + (qz - p[2]) * n[2] >= 0


def _paint_inside(cv: Canvas, res, tissue: H, over: np.ndarray, clip=None, z_max: float | None = None) -> None:
    """Paint where the normalised distance of ``res`` (``(region, d)`` or ``None``: off the canvas) is below 1,
    on the ``clip`` half-space side and below ``z_max`` (mm) when given."""
    if res is None:
        return
    reg, d = res
    mask = d < 1
    if clip is not None:
        mask &= _halfspace(cv, reg, *clip)
    if z_max is not None:
        mask &= cv.coords(reg)[2] <= np.float32(z_max)
    cv.paint(reg, mask, tissue, over=over)


def _ellipsoid(cv: Canvas, center, semi, rot, tissue: H, over: np.ndarray, clip=None) -> None:
    _paint_inside(cv, ellipsoid_r2(cv, center, semi, rot), tissue, over, clip)


def _tube(cv: Canvas, points, radii, tissue: H, over: np.ndarray, clip=None, z_max: float | None = None) -> None:
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radii, float), (len(pts),))
    _paint_inside(cv, tube_distance(cv, pts, rad), tissue, over, clip, z_max)


def _paint_chest(cv: Canvas, P: dict) -> None:
    """Chest wall, lungs, diaphragm with liver / upper abdomen below, ribs, sternum, back muscles, spine."""
    body.paint_body_wall(cv, P["wall"])
    qx, qy, qz = cv.q
    dia = P["diaphragm"]
    zd = body.diaphragm_z(qx, qy, dia)
    lab = cv.labels
    free = cv.cavity & (lab == H.FAT)
    above = qz > zd
    lab[free & above] = int(H.LUNG)
    below = free & ~above
    band = below & (qz > zd - np.float32(dia["thickness"]))
    lab[band] = int(H.DIAPHRAGM)
    below &= ~band
    liver = qx > np.float32(dia["liver_x"]) + np.float32(0.3) * qy
    lab[below & liver] = int(H.LIVER)
    lab[below & ~liver] = int(H.ABDOMEN)
    del zd, above, below, band, liver, free
    body.paint_ribs(cv, P["ribs"])
    cv.wall = None
    st = P["sternum"]
    reg = cv.region((-st["half_width"] - 2, 30, -1000), (st["half_width"] + 2, 200, 1000))
    if reg is not None:
        sx, sy, _ = cv.coords(reg)
        h, _, s = body._cavity_height(sx, sy, P["wall"])
        e = (sx * np.float32(1 / st["half_width"])) ** 2 + \
            ((h - np.float32(st["center"])) * np.float32(1 / st["half_depth"])) ** 2
        bone_over = allow(H.MUSCLE, H.FAT, H.LUNG)
        cv.paint(reg, (e < 1) & (s > 0.5), H.CORTICAL_BONE, over=bone_over)
        cv.paint(reg, (e < 0.45) & (s > 0.5), H.MARROW, over=allow(H.CORTICAL_BONE))
    body.paint_back(cv, P["back"])
    body.paint_spine(cv, P["spine"])


def _paint_mediastinum(cv: Canvas, P: dict) -> None:
    """Posterior and superior mediastinal fat, oesophagus and descending aorta."""
    M = P["mediastinum"]
    (cx, cy), (sa, sb) = M["posterior"]["center"], M["posterior"]["semi"]
    reg = cv.region((cx - sa, cy - sb, -1000), (cx + sa, cy + sb, 1000))
    if reg is not None:
        qx, qy, _ = cv.coords(reg)
        e = ((qx - np.float32(cx)) * np.float32(1 / sa)) ** 2 + ((qy - np.float32(cy)) * np.float32(1 / sb)) ** 2
        cv.paint(reg, e < 1, H.FAT, over=PAD_OVER)
    _ellipsoid(cv, M["superior"]["center"], M["superior"]["semi"], None, H.FAT, PAD_OVER)
    soft = allow(H.LUNG, H.FAT, H.DIAPHRAGM, H.LIVER, H.ABDOMEN)
    _tube(cv, P["esophagus"]["points"], P["esophagus"]["radius"], H.ESOPHAGUS, soft)
    da = P["descending_aorta"]
    _tube(cv, da["points"], da["radius"] + 2.0, H.HEART_WALL, soft)
    _tube(cv, da["points"], da["radius"], H.AORTA, VESSEL_OVER)


def _paint_heart(cv: Canvas, P: dict) -> None:
    lv, rv, la, ra, pa, ao = P["lv"], P["rv"], P["la"], P["ra"], P["pa"], P["ao"]
    Hm = lv["rot"]
    e3 = Hm[:, 2]
    lv_outer = np.array([lv["a"] + lv["t"], lv["a"] + lv["t"], lv["L"] + lv["t_apex"]])
    lv_clip = (lv["B"] - lv["t_lid"] * e3, e3)
    rv_clip = (lv["B"] - rv["base"] * e3, e3)
    pv_clip_rv = (pa["valve"], -pa["normal"])
    pv_clip_pa = (pa["valve"], pa["normal"])
    vessels = [(b["points"], b["radius"]) for b in P["pa_branches"]] + \
              [(v["points"], v["radii"]) for v in P["pulmonary_veins"]] + \
              [(P["svc"]["points"], P["svc"]["radius"]), (P["ivc"]["points"], P["ivc"]["radius"])]

    # 1. epicardial / mediastinal fat pads (replace lung only)
    _ellipsoid(cv, lv["center"], lv_outer + lv["pad"], Hm, H.FAT, PAD_OVER,
               clip=(lv["B"] - (lv["t_lid"] + lv["pad"]) * e3, e3))
    _ellipsoid(cv, rv["center"], rv["semi"] + rv["wall"] + rv["pad"], Hm, H.FAT, PAD_OVER, clip=rv_clip)
    for c in (la, ra):
        _ellipsoid(cv, c["center"], c["semi"] + c["wall"] + c["pad"], c["rot"], H.FAT, PAD_OVER)
    _tube(cv, ao["points"], ao["radii"] + ao["wall"] + ao["pad"], H.FAT, PAD_OVER)
    _tube(cv, pa["points"], pa["radius"] + pa["wall"] + pa["pad"], H.FAT, PAD_OVER)
    _tube(cv, rv["rvot"], rv["rvot_r"] + rv["wall"] + rv["pad"], H.FAT, PAD_OVER)
    for pts, r in vessels:
        _tube(cv, pts, np.asarray(r) + 3.0, H.FAT, PAD_OVER)

    # 2. unlabelled walls: RV free wall, atrial and great-vessel walls
    _ellipsoid(cv, rv["center"], rv["semi"] + rv["wall"], Hm, H.HEART_WALL, WALL_OVER, clip=rv_clip)
    _tube(cv, rv["rvot"], rv["rvot_r"] + rv["wall"], H.HEART_WALL, WALL_OVER, clip=pv_clip_rv)
    for c in (la, ra):
        _ellipsoid(cv, c["center"], c["semi"] + c["wall"], c["rot"], H.HEART_WALL, WALL_OVER)
    _tube(cv, ao["points"], ao["radii"] + ao["wall"], H.HEART_WALL, WALL_OVER)
    _tube(cv, pa["points"], pa["radius"] + pa["wall"], H.HEART_WALL, WALL_OVER)
    for pts, r in vessels:
        _tube(cv, pts, np.asarray(r) + 1.5, H.HEART_WALL, WALL_OVER)

    # 3. unlabelled vessels (their ends inside the chambers are repainted below)
    for b in P["pa_branches"]:
        _tube(cv, b["points"], b["radius"], H.PA_BRANCH, VESSEL_OVER)
    for v in P["pulmonary_veins"]:
        _tube(cv, v["points"], v["radii"], H.PULM_VEIN, VESSEL_OVER)
    _tube(cv, P["svc"]["points"], P["svc"]["radius"], H.SVC, VESSEL_OVER)
    _tube(cv, P["ivc"]["points"], P["ivc"]["radius"], H.IVC, VESSEL_OVER)
    _tube(cv, ao["points"], ao["radii"], H.AORTA, VESSEL_OVER)

    # 4. labelled structures, later wins
    _ellipsoid(cv, ra["center"], ra["semi"], ra["rot"], H.RA_BLOOD, LABEL_OVER)
    _ellipsoid(cv, la["center"], la["semi"], la["rot"], H.LA_BLOOD, LABEL_OVER)
    _ellipsoid(cv, rv["center"], rv["semi"], Hm, H.RV_BLOOD, LABEL_OVER, clip=rv_clip)
    _tube(cv, rv["rvot"], rv["rvot_r"], H.RV_BLOOD, LABEL_OVER, clip=pv_clip_rv)
    _tube(cv, pa["points"], pa["radius"], H.PA_BLOOD, LABEL_OVER, clip=pv_clip_pa)
    _tube(cv, ao["points"], ao["radii"], H.AO_BLOOD, LABEL_OVER, z_max=ao["z_cut"])
    _paint_lv(cv, lv, lv_outer, lv_clip)


def _paint_lv(cv: Canvas, lv: dict, outer: np.ndarray, clip) -> None:
    """LV myocardium (shell + basal ring), LV cavity, then the mitral (LA) and aortic (AO) orifices."""
    Hm = lv["rot"]
    res = ellipsoid_r2(cv, lv["center"], outer, Hm)
    if res is None:
        return
    reg, r2 = res
    qx, qy, qz = cv.coords(reg)
    d = [qx - np.float32(lv["B"][0]), qy - np.float32(lv["B"][1]), qz - np.float32(lv["B"][2])]
    u = [d[0] * np.float32(Hm[0, j]) + d[1] * np.float32(Hm[1, j]) + d[2] * np.float32(Hm[2, j]) for j in range(3)]
    myo = (r2 < 1) & (u[2] >= -np.float32(lv["t_lid"]))
    cv.paint(reg, myo, H.LV_MYO, over=LABEL_OVER)
    _ellipsoid(cv, lv["center"], [lv["a"], lv["a"], lv["L"]], Hm, H.LV_BLOOD, CAVITY_OVER, clip=(lv["B"], Hm[:, 2]))
    lid = myo & (u[2] < 0)
    for (c1, c2), r, tissue in ((lv["mitral"], lv["mitral_r"], H.LA_BLOOD), (lv["aortic"], lv["aortic_r"], H.AO_BLOOD)):
        hole = (u[0] - np.float32(c1)) ** 2 + (u[1] - np.float32(c2)) ** 2 < np.float32(r * r)
        cv.paint(reg, lid & hole, tissue, over=allow(H.LV_MYO))


def build_heart_labels(anat: Anatomy, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Paint the tissue label map of ``anat`` on the grid with patient-frame coordinates ``axes`` (mm).

    Returns:
        uint8 array (len(px), len(py), len(pz)) of :class:`~fedgin.phantom.heart_tissues.HeartTissue` codes.
    """
    P = anat.parts
    cv = Canvas(axes, anat.rot, anat.scale, (anat.displacement(), anat.disp_sd))
    _paint_chest(cv, P)
    _paint_mediastinum(cv, P)
    _paint_heart(cv, P)
    return cv.labels
