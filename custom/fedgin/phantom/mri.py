"""MRI rendering: tissue label map -> magnitude signal of a T1w spoiled GRE or T2w TSE acquisition.

Signal equations (reference section 3.4), magnitude, arbitrary units:

* T1w spoiled GRE (VIBE/LAVA-like): ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE / T2*)``,
  ``E1 = exp(-TR / T1)``; TR 4-7 ms, TE 2-3 ms, flip 8-15 deg; T2* taken as 0.6 T2 (1.5 T) or 0.45 T2
  (3 T) (approximation, only a few % at TE 2-3 ms). Fat saturation in 60 % of T1w cases.
* T2w TSE / HASTE: ``S = PD (1 - exp(-TR / T1)) exp(-TE / T2)``; TR 1200-3000 ms (HASTE, 30 %: TR -> inf),
  TE 70-110 ms; fat uses its apparent TSE T2 (J-coupling); SPIR-like fat suppression in 40 % of T2w cases.

Relaxation times follow the field strength column (1.5 T or 3 T) of
:data:`~fedgin.phantom.tissues.MR_TABLE`, with per-case per-tissue log-normal jitter (SD 0.08) and a
per-voxel, spatially correlated log-normal jitter (SD 0.05, one field shared by T1 and T2). Bile T1/T2 are
drawn per case (log-normal, SD 0.25, clipped to the published range; concentrated bile is short-T1).
Fat-saturated tissue keeps 5-20 % of its fat signal.
Flowing blood: flow void on TSE (x0.02-0.15), variable inflow on GRE (x0.5-1.3).
Acquisition: in-plane Gaussian PSF, thick slices (box profile over the painted sub-slices), smooth
multiplicative bias field exp(g) with |g| up to log(1 + 0.1..0.4), Rician noise with SNR 15-40 (relative to the
mean body signal), output uint16 with a random global scale.

The unseen test centre ``t1-gd-3T`` (``MR_PROTOCOLS``): contrast-enhanced (gadolinium, portal venous phase),
fat-saturated T1w GRE at 3 T, 1/T1 = 1/T1_native + r1 C per tissue (``GD_PORTAL_MM``): bright vessels,
kidneys and spleen, dark bile; a contrast no training centre has, with a stronger bias field and lower SNR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import SeparableField, texture_field
from .grid import decimate_slices
from .tissues import BLOOD_TISSUES, MR_TABLE, Tissue, tissue_lut

__all__ = ["MRParams", "MR_PROTOCOLS", "sample_mr_params", "render_mri", "signal_lut", "acquire_mr", "jittered_relaxation"]


@dataclass
class MRParams:
    """Acquisition and tissue parameters of one MR case (times in ms, flip in degrees)."""

    sequence: str            # "t1" | "t2"
    field_strength: float    # 1.5 | 3.0 (tesla)
    tr: float
    te: float
    flip: float
    haste: bool
    fat_sat: bool
    fat_residual: float
    t1_scale: np.ndarray     # float32 (256,) per-tissue multipliers (case jitter)
    t2_scale: np.ndarray
    pd_scale: np.ndarray
    flow: float              # signal multiplier of flowing blood
    voxel_jitter: float      # SD of per-voxel log jitter of T1 / T2
    psf_sigma: float         # in-plane PSF SD (voxels)
    bias: float              # max relative bias (0.1..0.4); 0 disables the bias field
    bias_sigma: float        # correlation length of the bias field (mm)
    snr: float
    out_scale: float         # 99.5th body percentile in the stored units
    gd_mm: np.ndarray | None = None  # float32 (256,) gadolinium concentration per tissue (mM); None: native


#: MRI protocols of the abdominal phantom: ``None`` (the training centres' sequences) or an unseen test centre
MR_PROTOCOLS = (None, "t1-gd-3T")
#: gadolinium relaxivity r1 at 3 T (1/(ms mM); ~3.3 /s/mM for gadoterate-like agents)
GD_R1_PER_MS = 0.0033
#: portal-venous-phase gadolinium concentration per tissue (mM, approximate); bile and fat take up none
GD_PORTAL_MM: dict[Tissue, float] = {
    Tissue.AORTA: 1.0, Tissue.HEART_BLOOD: 1.0, Tissue.VEIN: 1.1, Tissue.LIVER: 0.45, Tissue.LIVER_VESSEL: 1.0,
    Tissue.SPLEEN: 0.6, Tissue.KIDNEY_R_CORTEX: 1.3, Tissue.KIDNEY_L_CORTEX: 1.3, Tissue.KIDNEY_R_MEDULLA: 1.0,
    Tissue.KIDNEY_L_MEDULLA: 1.0, Tissue.PANCREAS: 0.5, Tissue.MUSCLE: 0.15, Tissue.BOWEL_WALL: 0.6,
    Tissue.MYOCARDIUM: 0.6, Tissue.MARROW: 0.2, Tissue.SKIN: 0.2}


def sample_mr_params(rng: np.random.Generator, sequence: str, protocol: str | None = None) -> MRParams:
    """Draw MR parameters; ``sequence`` is "t1", "t2" or "mixed" (50/50). ``protocol`` ``None``: the training
    centres (native T1w GRE or T2w TSE/HASTE at 1.5 or 3 T); ``"t1-gd-3T"``: an unseen centre, a fat-saturated
    T1w GRE at 3 T in the portal venous phase after gadolinium (T1 shortened per tissue, ``GD_PORTAL_MM``), with a
    strong bias field (0.35-0.55) and SNR 12-25 (``sequence`` ignored)."""
    if protocol not in MR_PROTOCOLS:
        raise ValueError(f"MRI protocol must be one of {MR_PROTOCOLS}, got {protocol!r}")
    if protocol == "t1-gd-3T":
        p = sample_mr_params(rng, "t1")
        p.field_strength, p.fat_sat = 3.0, True
        p.gd_mm = (tissue_lut(GD_PORTAL_MM) * np.exp(np.clip(rng.normal(0, 0.15, 256), -0.3, 0.3))).astype(np.float32)
        p.bias, p.snr = float(rng.uniform(0.35, 0.55)), float(rng.uniform(12, 25))
        p.flow = float(rng.uniform(0.9, 1.3))
        return p
    if sequence == "mixed":
        sequence = "t1" if rng.random() < 0.5 else "t2"
    if sequence not in ("t1", "t2"):
        raise ValueError(f"mri_sequence must be 't1', 't2' or 'mixed', got {sequence!r}")
    field = 1.5 if rng.random() < 0.5 else 3.0
    n = 256
    t1s = np.exp(np.clip(rng.normal(0, 0.08, n), -0.16, 0.16)).astype(np.float32)
    t2s = np.exp(np.clip(rng.normal(0, 0.08, n), -0.16, 0.16)).astype(np.float32)
    pds = np.exp(np.clip(rng.normal(0, 0.04, n), -0.08, 0.08)).astype(np.float32)
    # bile: median 1316 / 676 ms, observed 320-2630 / 174-1430 ms (Acta Radiol 2002)
    gb = int(Tissue.GALLBLADDER)
    t1s[gb] = np.clip(np.exp(rng.normal(0, 0.25)), 320 / 1316, 2630 / 1316)
    t2s[gb] = np.clip(np.exp(rng.normal(0, 0.25)), 174 / 676, 1430 / 676)
    if sequence == "t1":
        tr, te, flip = rng.uniform(4, 7), rng.uniform(2, 3), rng.uniform(8, 15)
        haste, fat_sat, flow = False, rng.random() < 0.6, rng.uniform(0.5, 1.3)
    else:
        haste = rng.random() < 0.3
        tr = 1e7 if haste else rng.uniform(1200, 3000)
        te, flip = rng.uniform(70, 110), 90.0
        fat_sat, flow = rng.random() < 0.4, rng.uniform(0.02, 0.15)
    return MRParams(sequence=sequence, field_strength=field, tr=float(tr), te=float(te), flip=float(flip),
                    haste=bool(haste), fat_sat=bool(fat_sat), fat_residual=float(rng.uniform(0.05, 0.2)),
                    t1_scale=t1s, t2_scale=t2s, pd_scale=pds, flow=float(flow), voxel_jitter=0.05,
                    psf_sigma=float(rng.uniform(0.4, 0.6)), bias=float(rng.uniform(0.1, 0.4)),
                    bias_sigma=float(rng.uniform(40, 80)), snr=float(rng.uniform(15, 40)),
                    out_scale=float(rng.uniform(1500, 4000)))


def _tissue_luts(p: MRParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 (256,) T1 (ms), T2 (ms, apparent for the sequence) and effective PD per tissue code."""
    hi = p.field_strength > 2
    t1, t2, pd = {}, {}, {}
    for t, v in MR_TABLE.items():
        t1[t] = v.t1_30 if hi else v.t1_15
        tse = v.t2_tse_30 if hi else v.t2_tse_15
        t2[t] = tse if (p.sequence == "t2" and tse is not None) else (v.t2_30 if hi else v.t2_15)
        frac = v.fat_fraction if p.fat_sat else 0.0
        pd[t] = v.pd * (1 - frac * (1 - p.fat_residual))
        if t in BLOOD_TISSUES:
            pd[t] *= p.flow
    t1l = tissue_lut(t1, default=1000.0) * p.t1_scale
    if p.gd_mm is not None:  # contrast agent: 1/T1 = 1/T1_native + r1 C
        t1l = (1.0 / (1.0 / t1l + np.float32(GD_R1_PER_MS) * p.gd_mm)).astype(np.float32)
    t2l = tissue_lut(t2, default=1.0) * p.t2_scale
    pdl = tissue_lut(pd) * p.pd_scale
    if p.sequence == "t1":  # T2* for the GRE readout
        t2l = t2l * np.float32(0.45 if hi else 0.6)
    return t1l, np.maximum(t2l, 0.1), pdl


def _signal(pd: np.ndarray, t1: np.ndarray, t2: np.ndarray, p: MRParams) -> np.ndarray:
    """Signal equation, elementwise on arrays of PD, T1 (ms), T2 (ms)."""
    if p.sequence == "t1":
        a = np.deg2rad(p.flip)
        e1 = np.exp(-np.float32(p.tr) / t1)
        s = pd * np.float32(np.sin(a)) * (1 - e1) / (1 - np.float32(np.cos(a)) * e1)
        return s * np.exp(-np.float32(p.te) / t2)
    s = pd * (1 - np.exp(-np.float32(p.tr) / t1))
    return s * np.exp(-np.float32(p.te) / t2)


def signal_lut(p: MRParams) -> np.ndarray:
    """Noise-free signal per tissue code without voxel jitter, float32 (256,) (for tests and reports)."""
    t1, t2, pd = _tissue_luts(p)
    return _signal(pd, t1, t2, p).astype(np.float32)


def jittered_relaxation(rng: np.random.Generator, labels: np.ndarray, t1_lut: np.ndarray, t2_lut: np.ndarray,
                        voxel_jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel T1 and T2 (ms, float32, shape of ``labels``) from per-tissue lookup tables, both scaled by one
    smooth log-normal texture exp(N(0, voxel_jitter)) (correlation lengths 1, 1, 0.7 voxels)."""
    jit = texture_field(rng, labels.shape, (1.0, 1.0, 0.7))
    jit *= np.float32(voxel_jitter)
    np.exp(jit, out=jit)
    t1 = t1_lut[labels]
    t1 *= jit
    t2 = t2_lut[labels]
    t2 *= jit
    return t1, t2


def render_mri(labels: np.ndarray, sub: int, p: MRParams, rng: np.random.Generator,
               axes_out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Render an MR volume.

    Args:
        labels: uint8 tissue codes on the painting grid (nx, ny, nz * sub).
        sub: painting sub-slices per output slice.
        p: see :class:`MRParams`; rng: generator for texture, bias and noise.
        axes_out: patient-frame coordinates (mm) of the output voxel centres (px, py, pz) for the bias field.

    Returns:
        uint16 (nx, ny, nz) magnitude image, arbitrary units.
    """
    t1l, t2l, pdl = _tissue_luts(p)
    t1, t2 = jittered_relaxation(rng, labels, t1l, t2l, p.voxel_jitter)
    img = _signal(pdl[labels], t1, t2, p).astype(np.float32, copy=False)
    del t1, t2
    body = labels[:, :, (sub // 2)::sub] > int(Tissue.TABLE)
    return acquire_mr(img, body, sub, p.psf_sigma, p.bias, p.bias_sigma, p.snr, p.out_scale, rng, axes_out)


def acquire_mr(img: np.ndarray, body: np.ndarray, sub: int, psf_sigma: float, bias: float, bias_sigma: float,
               snr: float, out_scale: float, rng: np.random.Generator,
               axes_out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Acquisition chain shared by the phantoms: noise-free magnitude signal -> stored MR slices.

    In-plane Gaussian PSF (``psf_sigma`` voxels), box slice profile over the ``sub`` painting sub-slices, smooth
    multiplicative bias field ``exp(g)`` (correlation length ``bias_sigma`` mm) with ``|g|`` up to ``log(1 + bias)``
    over the body (0 disables it), Rician noise ``|S + n1 + i n2|`` with SD = mean body signal / ``snr``, then
    scaling so that the body's 99.5th percentile equals ``out_scale``.

    Args:
        img: float32 (nx, ny, nz * sub) signal on the painting grid; filtered in place.
        body: bool (nx, ny, nz) voxels inside the patient at the output slice centres.
        rng: generator for the bias field and the noise.
        axes_out: patient-frame coordinates (mm) of the output voxel centres (px, py, pz).

    Returns:
        uint16 (nx, ny, nz) magnitude image, arbitrary units.
    """
    ndimage.gaussian_filter(img, (psf_sigma, psf_sigma, 0.0), output=img, truncate=2.5)
    img = decimate_slices(img, sub)
    if bias > 0:
        g = SeparableField(rng, bias_sigma, rank=3).evaluate(axes_out)
        gmax = float(np.percentile(np.abs(g[::3, ::3, :][body[::3, ::3, :]]), 99)) if body.any() else 1.0
        g *= np.float32(np.log1p(bias) / max(gmax, 1e-6))
        np.exp(g, out=g)
        img *= g
        del g
    ref = float(img[body].mean()) if body.any() else float(img.mean())
    sigma = np.float32(ref / snr)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= sigma
    img += n1
    rng.standard_normal(img.shape, dtype=np.float32, out=n1)
    n1 *= sigma
    img *= img
    n1 *= n1
    img += n1
    del n1
    np.sqrt(img, out=img)
    top = float(np.percentile(img[::2, ::2, :][body[::2, ::2, :]], 99.5)) if body.any() else float(img.max())
    img *= np.float32(out_scale / max(top, 1e-6))
    np.clip(img, 0, 65535, out=img)
    return np.rint(img).astype(np.uint16)
