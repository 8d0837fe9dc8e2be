"""Per-case anatomy: random parameters of every structure and the painting of the tissue label map.

Frames: the *patient frame* (mm, RAS: +x patient right, +y anterior, +z superior) is where the FOV is
planned; the *standard-body frame* ``q = (R p + u(p)) / s`` is where the structure parameters below live
(R: patient positioning rotation of a few degrees, u: smooth random displacement, s: body scale 0.9-1.1).

Per-case variation (reference section 3.2): centres +-9 mm (SD 4), semi-axes x0.85-1.15 (plus +-4 % per
axis), organ rotations +-0.15 rad, body scale x0.9-1.1, smooth displacement with per-component SD 1.5-3 mm
(rank-8 separable field, near-Gaussian: median |u| ~2.5-5.5 mm, 98th percentile ~6-13 mm) and correlation length
20-25 mm; subcutaneous fat 8-25 mm, muscle wall 9-14 mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import body, bowel, organs
from .fields import SeparableField
from .shapes import Canvas, frame, rotation

__all__ = ["Anatomy", "sample_anatomy", "build_labels"]


class _Jitter:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def pos(self, base, sd: float = 4.0, lim: float = 9.0) -> np.ndarray:
        return np.asarray(base, float) + np.clip(self.rng.normal(0.0, sd, 3), -lim, lim)

    def size(self, base, lo: float = 0.85, hi: float = 1.15) -> np.ndarray:
        per_axis = np.clip(1.0 + self.rng.normal(0.0, 0.03, 3), 0.96, 1.04)
        return np.asarray(base, float) * self.u(lo, hi) * per_axis

    def rot(self, base: np.ndarray | None = None, sd: float = 0.07, lim: float = 0.15) -> np.ndarray:
        r = rotation(*np.clip(self.rng.normal(0.0, sd, 3), -lim, lim))
        return r if base is None else r @ base

    def points(self, pts, sd: float = 3.0, lim: float = 6.0) -> np.ndarray:
        pts = np.asarray(pts, float)
        return pts + np.clip(self.rng.normal(0.0, sd, pts.shape), -lim, lim)


@dataclass
class Anatomy:
    """Random parameters of one patient (see module docstring for frames and units).

    z_range / x_range / y_range: patient-frame extent (mm) that the FOV must cover (upper abdomen from above
    the liver dome to below the lower kidney pole; body outline); table_y: top of the couch (mm).
    """

    scale: float
    rot: np.ndarray
    disp_sd: float
    disp_sigma: float
    field_seed: int
    parts: dict = field(repr=False)
    z_range: tuple[float, float] = (0.0, 0.0)
    x_range: tuple[float, float] = (0.0, 0.0)
    y_range: tuple[float, float] = (0.0, 0.0)

    def displacement(self) -> list[SeparableField]:
        rng = np.random.default_rng(self.field_seed)
        return [SeparableField(rng, self.disp_sigma, rank=8) for _ in range(3)]


def _random_waves(rng: np.random.Generator, k: int, wavelength: tuple[float, float]) -> np.ndarray:
    """(k, 3) wave vectors (rad/mm) with random directions and wavelengths in ``wavelength`` (mm)."""
    d = rng.normal(size=(k, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * (2 * np.pi / rng.uniform(*wavelength, size=(k, 1)))


def _ellipsoid_z_extent(center, semi, rot) -> tuple[float, float]:
    half = float(np.sqrt(((np.asarray(rot) * np.asarray(semi)[None, :]) ** 2).sum(axis=1))[2])
    return center[2] - half, center[2] + half


def _body_extent(wall: dict) -> tuple[float, float, float, float]:
    """In-plane extent (standard-body mm) of the skin outline, evaluated on a 2 mm polar-free grid."""
    g = np.arange(-260.0, 260.0, 2.0, dtype=np.float32)
    qx, qy = np.meshgrid(g, g, indexing="ij")
    h, cos2, s = body._cavity_height(qx, qy, wall)
    t = wall["muscle"] * (1 + wall["muscle_lat"] * cos2) + \
        np.maximum(wall["fat"] * (1 + wall["fat_ap"] * s + wall["fat_lat"] * cos2), 3.0) + wall["skin"]
    inside = h < t
    xs, ys = qx[inside], qy[inside]
    return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw all structure parameters of one patient from ``rng``."""
    J = _Jitter(rng)
    scale = J.u(0.9, 1.1)
    rot = rotation(*np.clip(rng.normal(0.0, 0.02, 3), -0.05, 0.05))
    P: dict = {}

    P["wall"] = wall = dict(a=118 * J.u(0.94, 1.06), b_ant=85 * J.u(0.92, 1.08), b_post=80 * J.u(0.95, 1.05),
                            box=J.u(-0.45, -0.25), muscle=J.u(9, 14), muscle_lat=J.u(0.0, 0.3), fat=J.u(8, 25),
                            fat_ap=J.u(-0.3, 0.2), fat_lat=J.u(0.0, 0.35), skin=2.0)
    z_right = 120 + J.u(-8, 8)
    P["diaphragm"] = dia = dict(z_right=z_right, z_left=z_right - J.u(6, 18), x_dome=55.0, width=70.0,
                                depth=25 * J.u(0.8, 1.2), y_post=10.0, post_len=60.0, post_drop=45 * J.u(0.8, 1.2),
                                thickness=J.u(4, 6))
    P["heart"] = dict(center=J.pos((-20, 40, dia["z_left"] + 38)), semi=J.size((62, 48, 50)), inner=0.8)
    P["ribs"] = dict(z_low=J.u(-15, 5), anterior_rise=J.u(55, 75), drop=J.u(80, 120), phase=J.u(0, 26),
                     period=J.u(24, 28), height=J.u(8, 11))
    spine_y = -40 + J.u(-3, 3)
    P["spine"] = spine = body.sample_spine(J, spine_y, 22, 17, pedicle=(4, 7), canal_r=(8, 10), spinous_len=(22, 30),
                                           transverse_len=(30, 40), period=(33, 38), disc=(7, 10))
    P["back"] = dict(para_x=30.0, para_y=-75.0, para_a=20 * J.u(0.9, 1.1), para_b=16 * J.u(0.9, 1.1),
                     psoas_z0=J.u(-5, 15), psoas_rmax=J.u(15, 20), psoas_growth=J.u(0.22, 0.32), psoas_y=spine_y,
                     spine_half=spine["half_width"])
    P["vessels"] = dict(
        aorta=dict(x0=-14 + J.u(-4, 4), y0=spine_y + spine["half_depth"] + 12, dx_dz=J.u(-0.03, 0.03),
                   dy_dz=-0.04, semi=(11 * J.u(0.85, 1.15),) * 2, z_min=-1000.0, z_max=1000.0),
        ivc=dict(x0=24 + J.u(-4, 4), y0=spine_y + 28, dx_dz=J.u(-0.03, 0.03), dy_dz=0.03,
                 semi=(13 * J.u(0.85, 1.15), 9 * J.u(0.85, 1.15)), z_min=-1000.0, z_max=z_right - 5))

    a = J.u(0.45, 0.75)
    P["liver"] = dict(
        right=dict(center=J.pos((58, 2, 52)), semi=J.size((72, 88, 72)), rot=J.rot()),
        left=dict(center=J.pos((-8, 42, 70)), semi=J.size((62, 34, 30)), rot=J.rot(rotation(az=-0.35))),
        cut_point=(40 + J.u(-6, 6), J.u(0, 30), -5 + J.u(-8, 8)), cut_normal=(-np.sin(a), 0.0, -np.cos(a)),
        cut_curv=J.u(10, 30))
    gb_fill = J.u(0.85, 1.15)  # distension: short axes only
    P["gallbladder"] = dict(center=J.pos((40, 46, 2)), semi=J.size((15, 16, 36)) * np.array([gb_fill, gb_fill, 1.0]),
                            rot=J.rot(frame((-0.15, -0.45, 1.0), (1.0, 0.0, 0.0))))
    srot = J.rot(frame((0.3, 1.0, -0.5), (-1.0, 0.0, 0.0)))
    ssemi = J.size((24, 42, 60))
    scen = J.pos((-86, -32, 54))
    hilum_r = J.u(16, 22)
    P["spleen"] = dict(center=scen, semi=ssemi, rot=srot, hilum_r=hilum_r,
                       hilum=scen - srot[:, 0] * (ssemi[0] + hilum_r - J.u(5, 9)))
    for side, cen, sgn in (("right", (66, -38, -10), -1.0), ("left", (-66, -36, 6), 1.0)):
        krot = J.rot(frame((0.25 * sgn, -0.15, 1.0), (0.8 * sgn, 0.6, 0.0)))
        ksemi = J.size((28, 21, 58))
        kcen = J.pos(cen)
        P[f"kidney_{side}"] = dict(center=kcen, semi=ksemi, rot=krot, medulla=J.u(0.62, 0.72),
                                   sinus_center=kcen + krot[:, 0] * ksemi[0] * J.u(0.6, 0.75),
                                   sinus_semi=np.array([12.0, 9.0, 24.0]) * J.u(0.85, 1.15))
    P["pancreas"] = dict(
        points=J.points([(30, 6, -22), (12, 20, -10), (-20, 22, 2), (-50, 8, 14), (-72, -12, 30)]),
        radii=np.array([14, 12, 11, 10, 9.0]) * J.u(0.85, 1.15),
        head_center=J.pos((30, 6, -24), sd=3, lim=6), head_semi=J.size((16, 13, 20)), head_rot=J.rot())

    conf = J.pos((8, 8, -8), sd=2, lim=4)
    porta = J.pos((36, 10, 28), sd=3, lim=6)
    ivc_top = np.array([P["vessels"]["ivc"]["x0"], -8.0, z_right - 25])
    tree = [
        ([conf, (22, 10, 8), porta], [7, 7, 6.5], True),                      # main portal vein
        ([porta, (70, 2, 38), (100, -10, 42)], [5.5, 4, 2.5], True),          # right portal branch
        ([porta, (12, 30, 48), (-18, 44, 62)], [4.5, 3.5, 2.5], True),        # left portal branch
        ([conf, (6, 14, -45), (4, 20, -90)], [5.5, 5, 4.5], True),            # superior mesenteric vein
        ([conf, (-20, 10, 2), (-50, -4, 16), (-72, -22, 34)], [4.5, 4.5, 4.5, 4.0], True),  # splenic vein
        ([ivc_top, (70, -20, 75), (105, -18, 55)], [6, 4, 2.5], False),       # right hepatic vein
        ([ivc_top, (45, 20, 80), (55, 50, 50)], [5.5, 4, 2.5], False),        # middle hepatic vein
        ([ivc_top, (0, 20, 92), (-30, 45, 78)], [5, 3.5, 2.5], False),        # left hepatic vein
    ]
    P["veins"] = [dict(points=np.vstack([J.points([p], sd=2, lim=4)[0] if i else np.asarray(p, float)
                                         for i, p in enumerate(pts)]),
                       radii=np.asarray(r, float) * J.u(0.85, 1.15), extrahepatic=ext) for pts, r, ext in tree]

    fill = J.u(0.75, 1.2)
    fundus_c = J.pos((-55, 12, 75))
    fundus_s = J.size((36, 34, 38)) * fill
    P["stomach"] = dict(
        fundus=dict(center=fundus_c, semi=fundus_s, rot=J.rot()),
        antrum=dict(center=J.pos((-15, 50, 42)), semi=J.size((20, 20, 36)) * fill,
                    rot=J.rot(frame((1.0, 0.1, -0.4), (0.0, 1.0, 0.0)))),
        wall=4.0, gas_y=fundus_c[1] + fundus_s[1] * J.u(-0.1, 0.7))
    P["duodenum"] = dict(points=J.points([(8, 52, 12), (32, 38, 4), (48, 14, -14), (46, 4, -40), (20, 0, -52),
                                          (-8, 2, -50), (-22, 10, -36)]),
                         radii=np.full(7, J.u(9, 12)), wall=2.5, gas_y=J.u(25, 60))
    P["colon"] = dict(points=J.points([(84, 8, -110), (84, 14, -60), (76, 30, -22), (40, 66, -38), (-10, 70, -34),
                                       (-55, 50, -5), (-80, 20, 18), (-88, -2, -30), (-86, -4, -110)], sd=5, lim=10),
                      radii=rng.uniform(15, 22, 9), wall=3.0, gas_y=J.u(20, 70),
                      bubble_waves=_random_waves(rng, 6, (9.0, 20.0)), bubble_phases=rng.uniform(0, 2 * np.pi, 6),
                      bubble_level=J.u(1.8, 2.8))
    loops = []
    for _ in range(int(rng.integers(10, 19))):
        c = np.array([J.u(-80, 70), J.u(-10, 75), J.u(-115, -10)])
        s = rng.uniform(10, 20, 3)
        gas = c[1] + s.max() * J.u(0.2, 0.6) if rng.random() < 0.35 else None
        loops.append(dict(center=c, semi=s, rot=rotation(*rng.uniform(0, np.pi, 3)), wall=J.u(2.0, 3.0), gas_y=gas))
    P["loops"] = loops

    disp_sd = J.u(1.5, 3.0)
    disp_sigma = J.u(20, 25)
    field_seed = int(rng.integers(2**63 - 1))

    # FOV requirements (patient frame)
    lows = [_ellipsoid_z_extent(P[k]["center"], P[k]["semi"], P[k]["rot"])[0] for k in ("kidney_right", "kidney_left")]
    z_top = (max(dia["z_right"], dia["z_left"]) + J.u(5, 25)) * scale
    z_bot = (min(lows) - J.u(10, 30)) * scale - 2 * disp_sd
    x0, x1, y0, y1 = _body_extent(wall)
    slack = 2.5 * disp_sd + 4
    P["table"] = dict(y_top=y0 * scale - 1.0, curv=1 / 2500, thick=J.u(10, 16), half_width=230.0)
    anat = Anatomy(scale=scale, rot=rot, disp_sd=disp_sd, disp_sigma=disp_sigma, field_seed=field_seed, parts=P,
                   z_range=(z_bot, z_top), x_range=(x0 * scale - slack, x1 * scale + slack),
                   y_range=(y0 * scale - slack - P["table"]["thick"], y1 * scale + slack))
    return anat


def build_labels(anat: Anatomy, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Paint the tissue label map of ``anat`` on the grid with patient-frame coordinates ``axes`` (mm).

    Returns:
        uint8 array (len(px), len(py), len(pz)) of :class:`~fedgin.phantom.tissues.Tissue` codes.
    """
    P = anat.parts
    cv = Canvas(axes, anat.rot, anat.scale, (anat.displacement(), anat.disp_sd))
    body.paint_body_wall(cv, P["wall"])
    body.paint_table(cv, P["table"])
    body.paint_thorax(cv, P["diaphragm"], P["heart"])
    body.paint_ribs(cv, P["ribs"])
    cv.wall = None
    bowel.paint_stomach(cv, P["stomach"])
    bowel.paint_tube_bowel(cv, P["duodenum"])
    bowel.paint_tube_bowel(cv, P["colon"])
    bowel.paint_loops(cv, P["loops"])
    organs.paint_liver(cv, P["liver"], P["diaphragm"])
    organs.paint_gallbladder(cv, P["gallbladder"])
    organs.paint_spleen(cv, P["spleen"])
    organs.paint_kidney(cv, P["kidney_right"], "right")
    organs.paint_kidney(cv, P["kidney_left"], "left")
    organs.paint_pancreas(cv, P["pancreas"])
    organs.paint_veins(cv, P["veins"])
    organs.paint_great_vessels(cv, P["vessels"])
    body.paint_back(cv, P["back"])
    body.paint_spine(cv, P["spine"])
    return cv.labels
