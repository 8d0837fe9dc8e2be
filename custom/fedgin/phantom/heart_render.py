"""Acquisition protocols ("site styles") of the whole-heart phantom and its CT / MRI renderers.

Protocols (a site uses one; ``"mixed"`` draws one per case). The paper's heart use case has three training
sites (CT, CT, MRI) and a held-out MRI site; e.g. ``cta`` + ``cta-lowdose`` + ``bssfp-1.5T`` for training and
``tse-bb-3T`` (black blood) held out.

CT (CT angiography, blood pool 300-500 HU, reference section 3.7; all values approximate):

* ``cta`` (default): systemic arterial phase triggered in the ascending aorta with a saline chaser. Left heart,
  aorta and pulmonary veins 300-500 HU; right heart x0.45-1.0 of it (per-case timing / chaser washout);
  SVC x0.3-1.5 of the right heart; IVC unopacified 40-110 HU; smooth mixing pattern of +-30-100 HU in the RA;
  myocardium 100-150 HU; soft tissue 25-50 % of the way from unenhanced to portal venous; noise 10-20 HU,
  PSF sigma 0.5-0.7 voxel, in-plane 1.2-1.6 mm, slices 1.5 / 2 mm.
* ``cta-early``: early (pulmonary arterial) trigger. Right heart and pulmonary trunk 350-500 HU, left heart
  x0.55-0.9 of it, dense undiluted contrast in the SVC (600-1200 HU), strong RA mixing (+-60-150 HU),
  myocardium 100-140 HU; sharper kernel (PSF 0.4-0.6 voxel), noise 12-22 HU, in-plane 1.2-1.5 mm,
  slices 1.5-2.5 mm.
* ``cta-lowdose``: late arterial phase at low dose. Left heart 300-420 HU, right heart x0.35-0.7, weak mixing,
  noise 20-30 HU, smooth kernel (PSF 0.8-1.1 voxel), in-plane 1.5-2 mm, slices 2.5 / 3 mm.

MRI (bright blood, dark myocardium; blood T1/T2 1441/290 ms at 1.5 T, 1932/275 ms at 3 T, Stanisz 2005;
myocardium T1 950-996 / 1052-1184 ms, T2 52-56 / 50-54 ms, Dabir 2014 / Granitz 2019; context tissues from
:data:`~fedgin.phantom.tissues.MR_TABLE`):

* ``bssfp-1.5T`` (default): 3D whole-heart balanced SSFP at 1.5 T,
  ``S = PD sin(a) (1 - E1) / (1 - (E1 - E2) cos(a) - E1 E2) exp(-TE / T2) exp(-TE_prep / T2)``, TR 3-4.2 ms,
  TE = TR / 2, flip 50-70 deg, T2 preparation (TE_prep 30-50 ms) in half of the cases, fat saturation in half
  of the cases (5-20 % fat residual); in-plane 1.5-2 mm, slices 2-3 mm, bias field up to +-10-25 %, SNR 20-40.
* ``gre-3T``: 2D multi-slice spoiled gradient echo at 3 T with inflow (time-of-flight) bright blood:
  ``S = PD sin(a) [Mss + (cos(a) E1)^n (1 - Mss)] exp(-TE / T2*)``, ``Mss = (1 - E1) / (1 - cos(a) E1)``, blood
  has seen n = 8-40 RF pulses (x0.7-1.3 per vessel compartment), static tissue n = infinity; TR 4-6 ms,
  TE 1.5-2.5 ms, flip 12-20 deg, T2* = 0.45 T2; thick slices 5-8 mm, in-plane 1.5-2 mm, stronger bias
  field (B1 at 3 T) up to +-25-45 %, SNR 15-30.

* ``tse-bb-3T``: 2D black-blood T2-weighted turbo spin echo at 3 T (double inversion recovery, ECG-triggered,
  TR = 2 RR intervals 1600-2400 ms, TE 60-85 ms): ``S = PD (1 - exp(-TR / T1)) exp(-TE / T2)``; flowing blood is
  nulled (x0.02-0.1 of its signal, flow void), so blood is *dark* and the myocardium and fat bright: the
  blood-myocardium contrast of the bright-blood protocols (and of CT angiography) is inverted. Fat saturation in
  half of the cases; slices 6-8 mm, in-plane 1.4-1.8 mm, bias field up to +-25-45 %, SNR 12-25. The held-out
  site of the heart experiment: no training site has a dark-blood protocol.

All MR protocols: per-case per-tissue log-normal jitter of T1/T2 (SD 0.08) and PD (SD 0.04), per-voxel
correlated T1/T2 jitter (SD 0.05), then :func:`~fedgin.phantom.mri.acquire_mr` (in-plane PSF, slice profile,
bias, Rician noise, uint16 with a random global scale). CT uses :func:`~fedgin.phantom.ct.acquire_ct`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ct import acquire_ct
from .fields import SeparableField, texture_field
from .heart_tissues import (BLOOD, BLOOD_MR, CONTEXT_CT, CONTEXT_MR, LEFT_BLOOD, RIGHT_BLOOD, HeartTissue)
from .mri import acquire_mr, jittered_relaxation
from .tissues import tissue_lut

__all__ = ["HeartProtocol", "PROTOCOLS", "DEFAULT_PROTOCOL", "resolve_protocol", "HeartCTParams", "HeartMRParams",
           "sample_heart_ct_params", "sample_heart_mr_params", "heart_hu_lut", "heart_signal_lut",
           "render_heart_ct", "render_heart_mri"]

H = HeartTissue


@dataclass(frozen=True)
class HeartProtocol:
    """One site style: modality, a one-line description, in-plane spacing range (mm), slice choices (mm)."""

    name: str
    modality: str
    description: str
    inplane: tuple[float, float]
    slices: tuple[float, ...]


PROTOCOLS: dict[str, HeartProtocol] = {p.name: p for p in (
    HeartProtocol("cta", "ct", "CT angiography, systemic arterial phase, standard dose", (1.2, 1.6), (1.5, 2.0)),
    HeartProtocol("cta-early", "ct", "CT angiography, early (right-heart) phase, sharp kernel", (1.2, 1.5),
                  (1.5, 2.0, 2.5)),
    HeartProtocol("cta-lowdose", "ct", "CT angiography, late arterial phase, low dose, smooth kernel", (1.5, 2.0),
                  (2.5, 3.0)),
    HeartProtocol("bssfp-1.5T", "mri", "3D whole-heart bSSFP at 1.5 T", (1.5, 2.0), (2.0, 2.5, 3.0)),
    HeartProtocol("gre-3T", "mri", "2D multi-slice spoiled GRE with inflow at 3 T", (1.5, 2.0), (5.0, 6.0, 7.0, 8.0)),
    HeartProtocol("tse-bb-3T", "mri", "2D black-blood T2w TSE (double inversion recovery) at 3 T", (1.4, 1.8),
                  (6.0, 7.0, 8.0)),
)}

DEFAULT_PROTOCOL: dict[str, str] = {"ct": "cta", "mri": "bssfp-1.5T"}


def resolve_protocol(modality: str, protocol: str | None, rng: np.random.Generator | None = None) -> HeartProtocol:
    """The protocol of one case: ``None`` -> the modality's default, ``"mixed"`` -> a random one of the modality.

    Raises:
        ValueError: unknown protocol, or one of the other modality.
    """
    names = [n for n, p in PROTOCOLS.items() if p.modality == modality]
    if protocol is None:
        return PROTOCOLS[DEFAULT_PROTOCOL[modality]]
    if protocol == "mixed":
        if rng is None:
            raise ValueError("protocol 'mixed' needs a random generator")
        return PROTOCOLS[names[int(rng.integers(len(names)))]]
    if protocol not in names:
        raise ValueError(f"protocol for {modality!r} must be one of {names} or 'mixed', got {protocol!r}")
    return PROTOCOLS[protocol]


# --- CT -----------------------------------------------------------------------------------------------------------

@dataclass
class HeartCTParams:
    """Per-case CT parameters (HU unless stated).

    left_hu / right_hu: left-heart (LV, LA, aorta, pulmonary veins) and right-heart (RA, RV, pulmonary arteries)
    blood; svc_hu / ivc_hu: caval blood; myo_hu: myocardium (LV and unlabelled walls); arterial_frac: soft-tissue
    enhancement as a fraction of the portal-venous increment; mixing_hu, mixing_sigma: amplitude and correlation
    length (mm) of the RA mixing pattern; hu_offset: float32 (256,) per-tissue offsets of context tissues;
    psf_sigma (voxels in-plane), z_sigma (painting sub-slices), noise_sd, noise_corr (voxels): acquisition.
    """

    protocol: str
    left_hu: float
    right_hu: float
    svc_hu: float
    ivc_hu: float
    myo_hu: float
    arterial_frac: float
    mixing_hu: float
    mixing_sigma: float
    hu_offset: np.ndarray
    psf_sigma: float
    z_sigma: float
    noise_sd: float
    noise_corr: float


def sample_heart_ct_params(rng: np.random.Generator, protocol: str) -> HeartCTParams:
    """Draw the CT parameters of one case for ``protocol`` (see the module docstring for the ranges)."""
    u = rng.uniform
    if protocol == "cta":
        left = u(300, 500)
        right = left * u(0.45, 1.0)
        svc, ivc, mixing, myo = right * u(0.3, 1.5), u(40, 110), u(30, 100), u(100, 150)
        noise, psf, frac = u(10, 20), u(0.5, 0.7), u(0.25, 0.5)
    elif protocol == "cta-early":
        right = u(350, 500)
        left = right * u(0.55, 0.9)
        svc, ivc, mixing, myo = u(600, 1200), u(45, 100), u(60, 150), u(100, 140)
        noise, psf, frac = u(12, 22), u(0.4, 0.6), u(0.1, 0.3)
    elif protocol == "cta-lowdose":
        left = u(300, 420)
        right = left * u(0.35, 0.7)
        svc, ivc, mixing, myo = right * u(0.2, 0.8), u(60, 120), u(20, 60), u(100, 150)
        noise, psf, frac = u(20, 30), u(0.8, 1.1), u(0.4, 0.7)
    else:
        raise ValueError(f"unknown CT protocol {protocol!r}")
    offsets = {t: float(np.clip(rng.normal(0, v.jitter_sd), -2 * v.jitter_sd, 2 * v.jitter_sd))
               for t, v in CONTEXT_CT.items()}
    return HeartCTParams(protocol=protocol, left_hu=float(left), right_hu=float(right), svc_hu=float(svc),
                         ivc_hu=float(ivc), myo_hu=float(myo), arterial_frac=float(frac), mixing_hu=float(mixing),
                         mixing_sigma=float(u(10, 20)), hu_offset=tissue_lut(offsets), psf_sigma=float(psf),
                         z_sigma=float(u(0.3, 0.5)), noise_sd=float(noise), noise_corr=float(u(0.5, 0.9)))


def heart_hu_lut(p: HeartCTParams) -> np.ndarray:
    """float32 (256,) mean HU per tissue code for this case."""
    values = {t: v.unenhanced + p.arterial_frac * (v.portal_venous - v.unenhanced) for t, v in CONTEXT_CT.items()}
    values.update({t: p.left_hu for t in LEFT_BLOOD})
    values.update({t: p.right_hu for t in RIGHT_BLOOD})
    values.update({H.SVC: p.svc_hu, H.IVC: p.ivc_hu, H.LV_MYO: p.myo_hu, H.HEART_WALL: p.myo_hu})
    return tissue_lut(values, default=-1000.0) + p.hu_offset


def render_heart_ct(labels: np.ndarray, sub: int, p: HeartCTParams, rng: np.random.Generator,
                    axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Render a cardiac CT angiogram.

    Args:
        labels: uint8 :class:`HeartTissue` codes on the painting grid (nx, ny, nz * sub).
        sub: painting sub-slices per output slice.
        p: see :class:`HeartCTParams`; rng: generator for texture, mixing pattern and noise.
        axes: patient-frame coordinates (mm) of the painting grid (for the RA mixing pattern).

    Returns:
        int16 (nx, ny, nz) Hounsfield units in [-1024, 3071].
    """
    img = heart_hu_lut(p)[labels]
    tex_sd = tissue_lut({t: v.texture_sd for t, v in CONTEXT_CT.items()})
    for t in BLOOD:
        tex_sd[int(t)] = 5.0
    tex_sd[int(H.LV_MYO)] = tex_sd[int(H.HEART_WALL)] = 6.0
    tex = texture_field(rng, labels.shape, (1.2, 1.2, 1.0))
    tex *= tex_sd[labels]
    img += tex
    del tex
    ra = labels == int(H.RA_BLOOD)
    if p.mixing_hu > 0 and ra.any():
        mix = SeparableField(rng, p.mixing_sigma, rank=3).evaluate(axes)
        img[ra] += np.float32(p.mixing_hu) * mix[ra]
        del mix
    return acquire_ct(img, sub, p.psf_sigma, p.z_sigma, p.noise_sd, p.noise_corr, rng)


# --- MRI ----------------------------------------------------------------------------------------------------------

@dataclass
class HeartMRParams:
    """Per-case MR parameters (times in ms, flip in degrees).

    readout: "bssfp" | "gre" | "tse"; t2prep: T2-preparation echo time (0 = none); inflow_pulses: RF pulses seen
    by inflowing blood on GRE (0 otherwise); blood_void: multiplier of the blood signal (black blood; 1 = none);
    myo_t1 / myo_t2: the case's myocardial relaxation times;
    t1_scale / t2_scale / pd_scale: float32 (256,) per-tissue multipliers; inflow_scale: float32 (256,) per-tissue
    multiplier of ``inflow_pulses``; acquisition as in :func:`~fedgin.phantom.mri.acquire_mr`.
    """

    protocol: str
    readout: str
    field_strength: float
    tr: float
    te: float
    flip: float
    t2prep: float
    fat_sat: bool
    fat_residual: float
    inflow_pulses: float
    myo_t1: float
    myo_t2: float
    t1_scale: np.ndarray
    t2_scale: np.ndarray
    pd_scale: np.ndarray
    inflow_scale: np.ndarray
    voxel_jitter: float
    psf_sigma: float
    bias: float
    bias_sigma: float
    snr: float
    out_scale: float
    blood_void: float = 1.0


def sample_heart_mr_params(rng: np.random.Generator, protocol: str) -> HeartMRParams:
    """Draw the MR parameters of one case for ``protocol`` (see the module docstring for the ranges)."""
    u = rng.uniform
    n = 256
    t1s = np.exp(np.clip(rng.normal(0, 0.08, n), -0.16, 0.16)).astype(np.float32)
    t2s = np.exp(np.clip(rng.normal(0, 0.08, n), -0.16, 0.16)).astype(np.float32)
    pds = np.exp(np.clip(rng.normal(0, 0.04, n), -0.08, 0.08)).astype(np.float32)
    inflow = u(0.7, 1.3, n).astype(np.float32)
    if protocol == "bssfp-1.5T":
        tr = u(3.0, 4.2)
        kw = dict(readout="bssfp", field_strength=1.5, tr=tr, te=tr / 2, flip=u(50, 70),
                  t2prep=u(30, 50) if rng.random() < 0.5 else 0.0, fat_sat=bool(rng.random() < 0.5),
                  inflow_pulses=0.0, myo_t1=u(950, 996), myo_t2=u(52, 56), psf_sigma=u(0.4, 0.6),
                  bias=u(0.1, 0.25), bias_sigma=u(50, 90), snr=u(20, 40))
    elif protocol == "gre-3T":
        kw = dict(readout="gre", field_strength=3.0, tr=u(4, 6), te=u(1.5, 2.5), flip=u(12, 20), t2prep=0.0,
                  fat_sat=False, inflow_pulses=u(8, 40), myo_t1=u(1052, 1184), myo_t2=u(50, 54),
                  psf_sigma=u(0.5, 0.7), bias=u(0.25, 0.45), bias_sigma=u(40, 70), snr=u(15, 30))
    elif protocol == "tse-bb-3T":
        kw = dict(readout="tse", field_strength=3.0, tr=u(1600, 2400), te=u(60, 85), flip=90.0, t2prep=0.0,
                  fat_sat=bool(rng.random() < 0.5), inflow_pulses=0.0, myo_t1=u(1052, 1184), myo_t2=u(50, 54),
                  psf_sigma=u(0.5, 0.7), bias=u(0.25, 0.45), bias_sigma=u(40, 70), snr=u(12, 25),
                  blood_void=u(0.02, 0.1))
    else:
        raise ValueError(f"unknown MRI protocol {protocol!r}")
    kw = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in kw.items()}
    return HeartMRParams(protocol=protocol, fat_residual=float(u(0.05, 0.2)), t1_scale=t1s, t2_scale=t2s,
                         pd_scale=pds, inflow_scale=inflow, voxel_jitter=0.05, out_scale=float(u(1500, 4000)), **kw)


def _mr_luts(p: HeartMRParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """float32 (256,) T1 (ms), apparent T2 (ms; T2* on GRE), effective PD and RF pulses seen (inf = static)."""
    hi = p.field_strength > 2
    t1, t2, pd = {}, {}, {}
    for t, v in CONTEXT_MR.items():
        t1[t], t2[t] = (v.t1_30, v.t2_30) if hi else (v.t1_15, v.t2_15)
        pd[t] = v.pd * (1 - (v.fat_fraction if p.fat_sat else 0.0) * (1 - p.fat_residual))
    for t in BLOOD:
        t1[t], t2[t] = (BLOOD_MR.t1_30, BLOOD_MR.t2_30) if hi else (BLOOD_MR.t1_15, BLOOD_MR.t2_15)
        pd[t] = BLOOD_MR.pd * p.blood_void
    for t in (H.LV_MYO, H.HEART_WALL):
        t1[t], t2[t], pd[t] = p.myo_t1, p.myo_t2, 0.8
    t1l = tissue_lut(t1, default=1000.0) * p.t1_scale
    t2l = tissue_lut(t2, default=1.0) * p.t2_scale
    pdl = tissue_lut(pd) * p.pd_scale
    if p.readout == "gre":
        t2l = t2l * np.float32(0.45 if hi else 0.6)
    pulses = np.full(256, np.inf, dtype=np.float32)
    if p.inflow_pulses > 0:
        for t in BLOOD:
            pulses[int(t)] = p.inflow_pulses * p.inflow_scale[int(t)]
    return t1l, np.maximum(t2l, 0.1), pdl, pulses


def _mr_signal(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, pulses: np.ndarray | None,
               p: HeartMRParams) -> np.ndarray:
    """Signal equation of the protocol's readout, elementwise (see the module docstring)."""
    if p.readout == "tse":
        return pd * (1 - np.exp(-np.float32(p.tr) / t1)) * np.exp(-np.float32(p.te) / t2)
    a = np.deg2rad(p.flip)
    sa, ca = np.float32(np.sin(a)), np.float32(np.cos(a))
    e1 = np.exp(-np.float32(p.tr) / t1)
    if p.readout == "bssfp":
        e2 = np.exp(-np.float32(p.tr) / t2)
        s = pd * sa * (1 - e1) / (1 - (e1 - e2) * ca - e1 * e2)
        return s * np.exp(-np.float32(p.te + p.t2prep) / t2)
    mss = (1 - e1) / (1 - ca * e1)
    if pulses is not None:
        mss = mss + np.power(ca * e1, pulses) * (1 - mss)
    return pd * sa * mss * np.exp(-np.float32(p.te) / t2)


def heart_signal_lut(p: HeartMRParams) -> np.ndarray:
    """Noise-free signal per tissue code without voxel jitter, float32 (256,) (for tests and reports)."""
    t1, t2, pd, pulses = _mr_luts(p)
    return _mr_signal(pd, t1, t2, pulses, p).astype(np.float32)


def render_heart_mri(labels: np.ndarray, sub: int, p: HeartMRParams, rng: np.random.Generator,
                     axes_out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Render a cardiac MR volume (bright blood, or dark blood on ``tse``).

    Args:
        labels: uint8 :class:`HeartTissue` codes on the painting grid (nx, ny, nz * sub).
        sub: painting sub-slices per output slice.
        p: see :class:`HeartMRParams`; rng: generator for texture, bias and noise.
        axes_out: patient-frame coordinates (mm) of the output voxel centres (px, py, pz) for the bias field.

    Returns:
        uint16 (nx, ny, nz) magnitude image, arbitrary units.
    """
    t1l, t2l, pdl, pulses = _mr_luts(p)
    t1, t2 = jittered_relaxation(rng, labels, t1l, t2l, p.voxel_jitter)
    img = _mr_signal(pdl[labels], t1, t2, pulses[labels] if p.readout == "gre" else None, p)
    img = img.astype(np.float32, copy=False)
    del t1, t2
    body = labels[:, :, (sub // 2)::sub] > int(H.TABLE)
    return acquire_mr(img, body, sub, p.psf_sigma, p.bias, p.bias_sigma, p.snr, p.out_scale, rng, axes_out)
