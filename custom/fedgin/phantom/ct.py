"""CT rendering: tissue label map -> Hounsfield units with contrast phase, texture, PSF blur and noise.

Model (reference section 3.3): per-tissue mean HU for the case's phase (unenhanced or portal venous, 50/50)
from :data:`~fedgin.phantom.tissues.CT_TABLE`, portal-venous enhancement scaled per case x0.8-1.2 (bolus
timing), per-tissue offsets N(0, jitter_sd) clipped to 2 SD, smooth texture, Gaussian PSF (sigma 0.5-0.8
voxel in-plane) and slice profile, correlated Gaussian noise with SD 8-25 HU, clip to [-1024, 3071], int16.
The unseen test centre ``arterial-lowdose`` (``CT_PROTOCOLS``): late arterial phase (``ARTERIAL_FRACTION``),
noise SD 30-45 HU, sharper kernel: a phase and a dose no training centre has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import texture_field
from .grid import decimate_slices
from .tissues import CT_TABLE, Tissue, tissue_lut

__all__ = ["CTParams", "CT_PROTOCOLS", "sample_ct_params", "render_ct", "acquire_ct", "mean_hu_lut"]

HU_MIN, HU_MAX = -1024, 3071


@dataclass
class CTParams:
    """Acquisition parameters of one CT case.

    phase: "unenhanced" | "portal_venous" | "arterial"; enhancement: multiplier of the PV increment; hu_offset: float32
    (256,) per-tissue mean shift (HU); psf_sigma: in-plane PSF SD (voxels); z_sigma: extra SD along z
    (painting sub-slices); noise_sd: noise SD (HU); noise_corr: noise correlation SD in-plane (voxels).
    """

    phase: str
    enhancement: float
    hu_offset: np.ndarray
    psf_sigma: float
    z_sigma: float
    noise_sd: float
    noise_corr: float


#: CT protocols of the abdominal phantom: ``None`` (the training centres' mix) or an unseen test centre
CT_PROTOCOLS = (None, "arterial-lowdose")

#: late arterial phase: enhancement as a fraction of each tissue's portal-venous increment (approximate; the liver
#: is mostly portal-fed, the pancreas and renal cortex peak early, the aorta is at its brightest)
ARTERIAL_FRACTION: dict[Tissue, float] = {
    Tissue.AORTA: 2.2, Tissue.HEART_BLOOD: 1.8, Tissue.VEIN: 0.3, Tissue.LIVER: 0.25, Tissue.LIVER_VESSEL: 0.6,
    Tissue.SPLEEN: 0.9, Tissue.KIDNEY_R_CORTEX: 1.4, Tissue.KIDNEY_L_CORTEX: 1.4, Tissue.KIDNEY_R_MEDULLA: 0.4,
    Tissue.KIDNEY_L_MEDULLA: 0.4, Tissue.PANCREAS: 1.2, Tissue.BOWEL_WALL: 0.8, Tissue.MYOCARDIUM: 0.8}


def sample_ct_params(rng: np.random.Generator, protocol: str | None = None) -> CTParams:
    """Draw the CT parameters of one case. ``protocol`` ``None``: the training centres (unenhanced or portal
    venous, 50/50, standard dose); ``"arterial-lowdose"``: an unseen centre (late arterial phase, low dose: noise
    30-45 HU, a sharp kernel, PSF 0.3-0.45 voxel)."""
    if protocol not in CT_PROTOCOLS:
        raise ValueError(f"CT protocol must be one of {CT_PROTOCOLS}, got {protocol!r}")
    offsets = {t: float(np.clip(rng.normal(0, v.jitter_sd), -2 * v.jitter_sd, 2 * v.jitter_sd))
               for t, v in CT_TABLE.items()}
    params = CTParams(phase="portal_venous" if rng.random() < 0.5 else "unenhanced",
                      enhancement=float(rng.uniform(0.8, 1.2)), hu_offset=tissue_lut(offsets),
                      psf_sigma=float(rng.uniform(0.5, 0.8)), z_sigma=float(rng.uniform(0.3, 0.5)),
                      noise_sd=float(rng.uniform(8, 25)), noise_corr=float(rng.uniform(0.5, 0.9)))
    if protocol == "arterial-lowdose":
        params.phase = "arterial"
        params.noise_sd = float(rng.uniform(30, 45))
        params.psf_sigma = float(rng.uniform(0.3, 0.45))
        params.noise_corr = float(rng.uniform(0.3, 0.6))
    return params


def mean_hu_lut(params: CTParams) -> np.ndarray:
    """float32 (256,) mean HU per tissue code for this case (phase, enhancement and offsets applied)."""
    base = {t: v.unenhanced for t, v in CT_TABLE.items()}
    if params.phase == "portal_venous":
        base = {t: v.unenhanced + params.enhancement * (v.portal_venous - v.unenhanced) for t, v in CT_TABLE.items()}
    elif params.phase == "arterial":
        base = {t: v.unenhanced + params.enhancement * ARTERIAL_FRACTION.get(t, 0.5) * (v.portal_venous - v.unenhanced)
                for t, v in CT_TABLE.items()}
    return tissue_lut(base, default=-1000.0) + params.hu_offset


def render_ct(labels: np.ndarray, sub: int, params: CTParams, rng: np.random.Generator) -> np.ndarray:
    """Render a CT volume.

    Args:
        labels: uint8 tissue codes on the painting grid (nx, ny, nz * sub).
        sub: painting sub-slices per output slice.
        params: see :class:`CTParams`; rng: generator for texture and noise.

    Returns:
        int16 (nx, ny, nz) Hounsfield units.
    """
    img = mean_hu_lut(params)[labels]
    tex_lut = tissue_lut({t: v.texture_sd for t, v in CT_TABLE.items()})
    tex = texture_field(rng, labels.shape, (1.2, 1.2, 1.0))
    tex *= tex_lut[labels]
    img += tex
    del tex
    return acquire_ct(img, sub, params.psf_sigma, params.z_sigma, params.noise_sd, params.noise_corr, rng)


def acquire_ct(img: np.ndarray, sub: int, psf_sigma: float, z_sigma: float, noise_sd: float, noise_corr: float,
               rng: np.random.Generator) -> np.ndarray:
    """Acquisition chain shared by the phantoms: ideal HU map -> stored CT slices.

    Gaussian PSF (``psf_sigma`` voxels in-plane, ``z_sigma`` painting sub-slices along z), box slice profile over
    the ``sub`` sub-slices, Gaussian noise correlated in-plane (SD ``noise_corr`` voxels) scaled to ``noise_sd``
    HU, clip to [-1024, 3071].

    Args:
        img: float32 (nx, ny, nz * sub) HU on the painting grid; filtered in place.
        rng: generator for the noise.

    Returns:
        int16 (nx, ny, nz) Hounsfield units.
    """
    ndimage.gaussian_filter(img, (psf_sigma, psf_sigma, z_sigma), output=img, truncate=2.5)
    img = decimate_slices(img, sub)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, (noise_corr, noise_corr, 0.0), output=noise, truncate=2.5)
    noise *= np.float32(noise_sd / max(float(noise[::2, ::2, :].std()), 1e-6))
    img += noise
    del noise
    np.clip(img, HU_MIN, HU_MAX, out=img)
    return np.rint(img).astype(np.int16)
