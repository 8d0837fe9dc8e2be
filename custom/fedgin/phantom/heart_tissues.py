"""Tissue codes of the whole-heart phantom, the MM-WHS label values, and the per-tissue physics.

The heart phantom paints a ``uint8`` map of :class:`HeartTissue` codes; the label map written to disk uses the
raw MM-WHS / CARE WHS values (reference ``datasets_and_phantom.md`` section 2.5, CARE 2024 WHS++ track page):

======  =====  =====================================================================================
class   value  tissue
======  =====  =====================================================================================
myo     205    LV myocardium only (the RV free wall and the atrial walls are unlabelled, as in MM-WHS)
la      420    left atrial blood cavity
lv      500    left ventricular blood cavity
ra      550    right atrial blood cavity
rv      600    right ventricular blood cavity (with the outflow tract up to the pulmonary valve)
ao      820    ascending aorta from the aortic valve to the superior level of the atria
pa      850    pulmonary artery trunk from the pulmonary valve to the bifurcation
======  =====  =====================================================================================

Everything else (pulmonary veins, venae cavae, pulmonary artery branches, the aorta above the atria and the
descending aorta, walls, chest) is background (0), as in the real data.

Codes 0-9 (air ... lung) equal those of :class:`~fedgin.phantom.tissues.Tissue` so that the abdominal
phantom's chest-wall, rib and spine painters (:mod:`~fedgin.phantom.body`) can be reused; this is checked at
import time.

Physics (sources in ``datasets_and_phantom.md`` sections 3.3, 3.4 and 3.7):

* Context tissues take their HU and relaxation times from the abdominal tables
  (:data:`~fedgin.phantom.tissues.CT_TABLE`, :data:`~fedgin.phantom.tissues.MR_TABLE`): HU table at
  radclass.mudr.org (Buzug 2008, Prokop 2003), de Bazelaire et al. Radiology 2004, Stanisz et al. MRM 2005.
  Arterial-phase CT values of soft tissue are interpolated between the unenhanced and portal-venous columns.
* Blood: T1 1441 / T2 290 ms at 1.5 T, 1932 / 275 ms at 3 T (Stanisz 2005); CT 300-500 HU in CT angiography
  (section 3.7, approx.), per-case timing decides the left/right heart ratio (see ``heart_render``).
* Myocardium: T1 950-996 ms at 1.5 T, 1052-1184 ms at 3 T, T2 55.8 / 51.6 ms (Dabir et al. JCMR 2014;
  Granitz et al. 2019); CT 100-150 HU after contrast (section 3.7, approx.).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .tissues import CT_TABLE, MR_TABLE, CTValue, MRValue, Tissue

__all__ = ["HeartTissue", "HEART_CLASSES", "MMWHS_LABELS", "CLASS_TISSUE", "LEFT_BLOOD", "RIGHT_BLOOD",
           "BLOOD", "CONTEXT_CT", "CONTEXT_MR", "BLOOD_MR", "MYOCARDIUM_MR", "label_lut"]


class HeartTissue(IntEnum):
    """Codes of the painted heart-phantom label map (uint8)."""

    AIR = 0
    TABLE = 1            # unused (the cardiac field of view crops the couch); kept for code alignment
    SKIN = 2
    FAT = 3              # subcutaneous, mediastinal, epicardial fat
    MUSCLE = 4           # chest-wall and paraspinal muscles
    CORTICAL_BONE = 5    # ribs, sternum, vertebral cortex (partial-volume averaged)
    MARROW = 6
    DISC = 7
    CSF = 8
    LUNG = 9
    DIAPHRAGM = 10
    LIVER = 11           # liver dome below the right hemidiaphragm
    ABDOMEN = 12         # stomach / spleen region below the left hemidiaphragm (soft tissue, lumped)
    ESOPHAGUS = 13
    HEART_WALL = 14      # RV free wall, atrial and great-vessel walls (myocardium-like, unlabelled)
    LV_MYO = 15
    LV_BLOOD = 16
    RV_BLOOD = 17
    LA_BLOOD = 18
    RA_BLOOD = 19
    AO_BLOOD = 20        # ascending aorta, aortic valve -> superior level of the atria
    PA_BLOOD = 21        # pulmonary trunk, pulmonary valve -> bifurcation
    AORTA = 22           # aorta above the atria and descending aorta (systemic arterial blood, unlabelled)
    PULM_VEIN = 23       # pulmonary veins (left-heart blood, unlabelled)
    PA_BRANCH = 24       # left / right pulmonary arteries (right-heart blood, unlabelled)
    SVC = 25             # superior vena cava (contrast injection side in CT)
    IVC = 26             # inferior vena cava (unopacified venous return)


H = HeartTissue
T = Tissue

_SHARED = ("AIR", "TABLE", "SKIN", "FAT", "MUSCLE", "CORTICAL_BONE", "MARROW", "DISC", "CSF", "LUNG")
if any(int(H[n]) != int(T[n]) for n in _SHARED):  # pragma: no cover - guards the reuse of body.py painters
    raise ImportError("HeartTissue codes 0-9 must equal Tissue codes (body.py painters are reused)")

#: Canonical class order of the project's heart task.
HEART_CLASSES: tuple[str, ...] = ("myo", "la", "lv", "ra", "rv", "ao", "pa")

#: Raw MM-WHS / CARE WHS label values.
MMWHS_LABELS: dict[str, int] = {"myo": 205, "la": 420, "lv": 500, "ra": 550, "rv": 600, "ao": 820, "pa": 850}

#: Tissue code carrying each label.
CLASS_TISSUE: dict[str, HeartTissue] = {"myo": H.LV_MYO, "la": H.LA_BLOOD, "lv": H.LV_BLOOD, "ra": H.RA_BLOOD,
                                        "rv": H.RV_BLOOD, "ao": H.AO_BLOOD, "pa": H.PA_BLOOD}

#: Oxygenated blood (left heart, aorta, pulmonary veins) and venous blood of the right heart.
LEFT_BLOOD: tuple[HeartTissue, ...] = (H.LV_BLOOD, H.LA_BLOOD, H.AO_BLOOD, H.AORTA, H.PULM_VEIN)
RIGHT_BLOOD: tuple[HeartTissue, ...] = (H.RV_BLOOD, H.RA_BLOOD, H.PA_BLOOD, H.PA_BRANCH)
BLOOD: tuple[HeartTissue, ...] = LEFT_BLOOD + RIGHT_BLOOD + (H.SVC, H.IVC)

_CONTEXT_SOURCE: dict[HeartTissue, Tissue] = {
    H.AIR: T.AIR, H.TABLE: T.TABLE, H.SKIN: T.SKIN, H.FAT: T.FAT, H.MUSCLE: T.MUSCLE,
    H.CORTICAL_BONE: T.CORTICAL_BONE, H.MARROW: T.MARROW, H.DISC: T.DISC, H.CSF: T.CSF, H.LUNG: T.LUNG,
    H.DIAPHRAGM: T.MUSCLE, H.LIVER: T.LIVER, H.ABDOMEN: T.SPLEEN, H.ESOPHAGUS: T.BOWEL_WALL,
}

#: CT values of the non-cardiac tissues (unenhanced and portal-venous columns; arterial phase in between).
CONTEXT_CT: dict[HeartTissue, CTValue] = {h: CT_TABLE[t] for h, t in _CONTEXT_SOURCE.items()}

#: MR properties of the non-cardiac tissues.
CONTEXT_MR: dict[HeartTissue, MRValue] = {h: MR_TABLE[t] for h, t in _CONTEXT_SOURCE.items()}

#: Blood: T1 1441 / 1932 ms, T2 290 / 275 ms (Stanisz 2005), PD 0.9.
BLOOD_MR: MRValue = MR_TABLE[T.HEART_BLOOD]

#: Myocardium reference values (Dabir 2014 / Granitz 2019); the renderer draws the case's T1/T2 in the ranges
#: T1 950-996 ms (1.5 T) / 1052-1184 ms (3 T), T2 52-56 ms (1.5 T) / 50-54 ms (3 T).
MYOCARDIUM_MR: MRValue = MR_TABLE[T.MYOCARDIUM]


def label_lut() -> np.ndarray:
    """uint16 table (256,) mapping a tissue code to its raw MM-WHS label value (0 = background)."""
    lut = np.zeros(256, dtype=np.uint16)
    for name, tissue in CLASS_TISSUE.items():
        lut[int(tissue)] = MMWHS_LABELS[name]
    return lut
