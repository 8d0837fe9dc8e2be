"""Tissue codes of the phantom label map and their physical properties (CT attenuation, MR relaxation).

The anatomy is painted as a ``uint8`` map of :class:`Tissue` codes (finer than the six segmentation
organs: kidneys have cortex and medulla, the liver has intrahepatic vessels, ...). The organ masks written
to disk are unions of tissue codes (:data:`ORGAN_TISSUES`), so they can never overlap.

Sources (see ``shared/reference/datasets_and_phantom.md`` section 3):

* CT Hounsfield units: HU table at radclass.mudr.org (citing Buzug 2008, Heymsfield 2005, Prokop 2003);
  medians measured in the real TotalSegmentator example case (liver 47, spleen 35, kidneys 14-20,
  gallbladder 3, aorta 42, muscle 27, fat -91 HU). Portal-venous values are textbook approximations.
* MR relaxation times (ms): de Bazelaire et al., Radiology 230:652-659 (2004) for liver, spleen, pancreas,
  kidney cortex/medulla, paravertebral muscle, subcutaneous fat and bone marrow at 1.5 T and 3 T;
  Stanisz et al., MRM 54:507-512 (2005) for blood; Dabir et al. JCMR 2014 / Granitz et al. 2019 for
  myocardium; Acta Radiol 43:401 (2002) for bile. Entries marked "approx." are rounded textbook values
  chosen by us (no primary source checked); they only matter for context tissues, not the six organs.
* Proton densities are relative water-equivalent values, approx. 0.7-0.9 for soft tissue, 1.0 for fluids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "Tissue", "ORGANS", "ORGAN_TISSUES", "BLOOD_TISSUES", "CTValue", "MRValue", "CT_TABLE", "MR_TABLE",
    "organ_lut", "tissue_lut",
]


class Tissue(IntEnum):
    """Codes of the painted label map (uint8)."""

    AIR = 0
    TABLE = 1            # patient couch (visible on CT only)
    SKIN = 2
    FAT = 3              # subcutaneous, visceral and retroperitoneal fat, renal sinus fat
    MUSCLE = 4           # abdominal wall, diaphragm, paraspinal muscles, psoas
    CORTICAL_BONE = 5    # vertebral cortex, posterior arch, ribs (partial-volume averaged at ~1.5 mm)
    MARROW = 6           # trabecular bone / red-yellow marrow of the vertebral body and ribs
    DISC = 7             # intervertebral disc
    CSF = 8              # spinal canal (cord and CSF lumped)
    LUNG = 9             # lung bases above the diaphragm
    MYOCARDIUM = 10
    HEART_BLOOD = 11
    AORTA = 12
    VEIN = 13            # IVC, portal vein, splenic vein (outside the liver)
    LIVER = 14
    LIVER_VESSEL = 15    # intrahepatic portal / hepatic vein branches (part of the liver mask)
    SPLEEN = 16
    KIDNEY_R_CORTEX = 17
    KIDNEY_R_MEDULLA = 18
    KIDNEY_L_CORTEX = 19
    KIDNEY_L_MEDULLA = 20
    GALLBLADDER = 21     # bile
    PANCREAS = 22
    BOWEL_WALL = 23      # stomach, duodenum, colon, small-bowel wall
    BOWEL_FLUID = 24     # bowel content (fluid / stool)
    GAS = 25             # bowel gas


#: The six segmentation targets, in the order used for file names and tests.
ORGANS: tuple[str, ...] = ("liver", "spleen", "kidney_left", "kidney_right", "gallbladder", "pancreas")

#: Tissue codes that make up each organ mask.
ORGAN_TISSUES: dict[str, tuple[Tissue, ...]] = {
    "liver": (Tissue.LIVER, Tissue.LIVER_VESSEL),
    "spleen": (Tissue.SPLEEN,),
    "kidney_left": (Tissue.KIDNEY_L_CORTEX, Tissue.KIDNEY_L_MEDULLA),
    "kidney_right": (Tissue.KIDNEY_R_CORTEX, Tissue.KIDNEY_R_MEDULLA),
    "gallbladder": (Tissue.GALLBLADDER,),
    "pancreas": (Tissue.PANCREAS,),
}

#: Flowing blood: flow voids on TSE, inflow effects on GRE.
BLOOD_TISSUES: tuple[Tissue, ...] = (Tissue.AORTA, Tissue.VEIN, Tissue.HEART_BLOOD, Tissue.LIVER_VESSEL)


@dataclass(frozen=True)
class CTValue:
    """CT attenuation of one tissue (HU).

    unenhanced / portal_venous: mean HU per phase; jitter_sd: per-case SD of the mean (HU, clipped to 2 SD);
    texture_sd: SD of the smooth within-tissue texture (HU).
    """

    unenhanced: float
    portal_venous: float
    jitter_sd: float
    texture_sd: float


T = Tissue

CT_TABLE: dict[Tissue, CTValue] = {
    T.AIR: CTValue(-1000, -1000, 0, 0),          # air -1000 (HU table)
    T.TABLE: CTValue(-150, -150, 30, 20),        # carbon-fibre/foam couch, approx.
    T.SKIN: CTValue(30, 45, 8, 5),               # approx. soft tissue
    T.FAT: CTValue(-95, -95, 7, 10),             # -50...-100 (HU table); -91 measured in TS example
    T.MUSCLE: CTValue(45, 60, 7, 5),             # 35-55 unenhanced, 50-70 PV (approx.); 27 measured (paraspinal)
    T.CORTICAL_BONE: CTValue(850, 850, 80, 60),  # cortical 700-3000 (HU table), partial-volume averaged
    T.MARROW: CTValue(260, 270, 40, 25),         # trabecular vertebral bone (table quotes ~400; adults 150-300)
    T.DISC: CTValue(85, 95, 10, 8),              # approx.
    T.CSF: CTValue(15, 15, 5, 5),                # water 0 + cord, approx.
    T.LUNG: CTValue(-870, -870, 25, 25),         # -850...-910 (HU table)
    T.MYOCARDIUM: CTValue(45, 110, 8, 5),        # section 3.7: ~40 -> 100-150 after contrast (approx.)
    T.HEART_BLOOD: CTValue(50, 160, 8, 4),       # blood 45-65; PV 150-200 (approx.)
    T.AORTA: CTValue(48, 170, 8, 4),             # blood 45-65 (42 measured); PV 150-200 (approx.)
    T.VEIN: CTValue(48, 150, 8, 5),              # IVC / portal vein in PV phase, approx.
    T.LIVER: CTValue(56, 110, 6, 4),             # 45-65 (47 measured), PV +50-60 HU
    T.LIVER_VESSEL: CTValue(44, 170, 6, 6),      # unenhanced vessels slightly hypodense; PV portal ~170 (approx.)
    T.SPLEEN: CTValue(45, 120, 6, 4),            # 35-55 (35 measured), PV 110-130
    T.KIDNEY_R_CORTEX: CTValue(32, 175, 6, 5),   # 20-40 (14-20 measured at 3 mm); PV 150-200 nephrographic
    T.KIDNEY_R_MEDULLA: CTValue(28, 135, 6, 6),  # medulla lags the cortex in PV (approx.)
    T.KIDNEY_L_CORTEX: CTValue(32, 175, 6, 5),
    T.KIDNEY_L_MEDULLA: CTValue(28, 135, 6, 6),
    T.GALLBLADDER: CTValue(8, 8, 5, 3),          # bile 0-20 (3 measured)
    T.PANCREAS: CTValue(45, 100, 6, 8),          # 40-50, PV 90-120 (approx.); lobulated texture
    T.BOWEL_WALL: CTValue(40, 90, 8, 6),         # approx.
    T.BOWEL_FLUID: CTValue(15, 15, 10, 15),      # fluid / stool, no oral contrast (approx.)
    T.GAS: CTValue(-950, -950, 30, 30),          # bowel gas -800...-1000
}


@dataclass(frozen=True)
class MRValue:
    """MR properties of one tissue.

    t1_15, t1_30: longitudinal relaxation at 1.5 T / 3 T (ms); t2_15, t2_30: transverse relaxation (ms);
    pd: relative proton density (0..1); fat_fraction: share of the signal from fat protons (suppressed by fat
    saturation); t2_tse_15, t2_tse_30: apparent T2 on turbo spin echo where it differs (J-coupling makes fat
    bright on TSE), else None.
    """

    t1_15: float
    t1_30: float
    t2_15: float
    t2_30: float
    pd: float
    fat_fraction: float = 0.0
    t2_tse_15: float | None = None
    t2_tse_30: float | None = None


MR_TABLE: dict[Tissue, MRValue] = {
    T.AIR: MRValue(1000, 1000, 1, 1, 0.0),
    T.TABLE: MRValue(1000, 1000, 1, 1, 0.0),
    T.SKIN: MRValue(700, 850, 40, 35, 0.7),                     # approx.
    # fat: 343/382 and T2 58/68 (de Bazelaire; 1.5 T "recalled"), TSE apparent T2 165/130 (open simulator table)
    T.FAT: MRValue(343, 382, 58, 68, 0.95, 1.0, 165, 130),
    T.MUSCLE: MRValue(856, 898, 27, 29, 0.75),                  # paravertebral muscle, de Bazelaire 2004
    T.CORTICAL_BONE: MRValue(1000, 1100, 1, 1, 0.05),           # ultrashort T2, approx.
    T.MARROW: MRValue(549, 586, 49, 49, 0.85, 0.5),             # L4 marrow, de Bazelaire; fat fraction approx.
    T.DISC: MRValue(1100, 1200, 90, 80, 0.85),                  # approx.
    T.CSF: MRValue(4000, 4300, 2000, 1800, 1.0),                # approx.
    T.LUNG: MRValue(1200, 1300, 40, 30, 0.12),                  # approx.; low PD, short T2*
    T.MYOCARDIUM: MRValue(973, 1118, 55.8, 51.6, 0.8),          # Dabir 2014 / Granitz 2019
    T.HEART_BLOOD: MRValue(1441, 1932, 290, 275, 0.9),          # Stanisz 2005
    T.AORTA: MRValue(1441, 1932, 290, 275, 0.9),                # Stanisz 2005
    T.VEIN: MRValue(1441, 1932, 290, 275, 0.9),                 # Stanisz 2005
    T.LIVER: MRValue(586, 809, 46, 34, 0.75),                   # de Bazelaire 2004
    T.LIVER_VESSEL: MRValue(1441, 1932, 290, 275, 0.9),         # blood, Stanisz 2005
    T.SPLEEN: MRValue(1057, 1328, 79, 61, 0.82),                # de Bazelaire 2004
    T.KIDNEY_R_CORTEX: MRValue(966, 1142, 87, 76, 0.85),        # de Bazelaire 2004
    T.KIDNEY_R_MEDULLA: MRValue(1412, 1545, 85, 81, 0.88),      # de Bazelaire 2004
    T.KIDNEY_L_CORTEX: MRValue(966, 1142, 87, 76, 0.85),
    T.KIDNEY_L_MEDULLA: MRValue(1412, 1545, 85, 81, 0.88),
    # bile: median T1 1316 (320-2630), T2 676 (174-1430) at 1.5 T, Acta Radiol 2002; no 3 T value: T1 +10 %
    # (approx., the usual 1.5 -> 3 T lengthening of fluid T1), T2 unchanged
    T.GALLBLADDER: MRValue(1316, 1450, 676, 676, 0.95),
    T.PANCREAS: MRValue(584, 725, 46, 43, 0.75),                # de Bazelaire 2004 (1.5 T recalled); Gilligan 2019
    T.BOWEL_WALL: MRValue(900, 1100, 50, 45, 0.8),              # approx.
    T.BOWEL_FLUID: MRValue(2500, 2800, 600, 550, 0.95),         # approx. (fluid content, bright on T2)
    T.GAS: MRValue(1000, 1000, 1, 1, 0.0),
}

N_TISSUES = len(Tissue)


def tissue_lut(values: dict[Tissue, float], default: float = 0.0) -> np.ndarray:
    """A float32 lookup table of length 256 indexed by tissue code (``lut[labels]`` gives a volume)."""
    lut = np.full(256, default, dtype=np.float32)
    for t, v in values.items():
        lut[int(t)] = v
    return lut


def organ_lut() -> np.ndarray:
    """uint8 table mapping tissue code -> organ index (1..6 in :data:`ORGANS` order, 0 = none)."""
    lut = np.zeros(256, dtype=np.uint8)
    for i, organ in enumerate(ORGANS, start=1):
        for t in ORGAN_TISSUES[organ]:
            lut[int(t)] = i
    return lut
