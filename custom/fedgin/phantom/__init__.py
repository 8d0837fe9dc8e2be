"""Seeded, physics-grounded synthetic abdominal phantom (the project's default data).

A CT "hospital" and an MRI "hospital" each get cases with the same kind of anatomy (organ shapes and
positions are modality-independent) but intensities from real physics: Hounsfield units with unenhanced or
portal-venous contrast for CT; T1w spoiled GRE or T2w TSE signal equations with 1.5 T / 3 T relaxation times
for MRI. Organ contrast therefore inverts between CT, T1w and T2w (e.g. spleen darker than liver on T1w,
brighter on T2w; bile dark on CT, very bright on T2w).

Public API::

    generate_dataset(output, modality, cases, seed, *, mri_sequence="mixed", val_fraction=0.2,
                     test_fraction=0.2, progress=True) -> list[str]
    generate_case(modality, seed, index, *, mri_sequence="mixed", overrides=None) -> PhantomCase

Whole-heart variant (7 classes, MM-WHS / CARE layout and raw label values, CT angiography and bright-blood MRI
with per-site protocols)::

    generate_heart_dataset(output, modality, cases, seed, *, protocol=None, val_fraction=0.2,
                           test_fraction=0.2, progress=True) -> list[str]
    generate_heart_case(modality, seed, index, *, protocol=None, overrides=None) -> HeartCase

Modules: ``tissues`` (codes, HU / relaxation tables with sources), ``anatomy`` (per-case parameters and
painting order), ``body`` / ``organs`` / ``bowel`` (structures), ``shapes`` and ``fields`` (primitives and
smooth random fields), ``grid`` (acquisition grid, thick slices, RAS/LPS), ``ct`` and ``mri`` (renderers),
``writer`` (NIfTI, TotalSegmentator layout, output-folder policy), ``dataset`` (seeding, splits); for the heart,
``heart`` (entry points, MM-WHS layout), ``heart_anatomy`` (geometry, painting order), ``heart_tissues`` (codes,
label values, physical values and sources), ``heart_render`` (protocols, CT / MR rendering).

May import ``fedgin.common`` only: the phantom writes source volumes as a hospital's scanner would, and
``fedgin.data`` prepares them like any other dataset.
"""

from __future__ import annotations

from .dataset import PhantomCase, assign_splits, case_id, generate_case, generate_dataset
from .heart import (HEART_GENERATOR, HEART_META_COLUMNS, HeartCase, generate_heart_case, generate_heart_dataset,
                    heart_case_id)
from .heart_render import DEFAULT_PROTOCOL as HEART_DEFAULT_PROTOCOL
from .heart_render import PROTOCOLS as HEART_PROTOCOLS
from .heart_tissues import HEART_CLASSES, MMWHS_LABELS, HeartTissue
from .tissues import ORGANS, Tissue
from .writer import GENERATOR, META_COLUMNS, PhantomOutputError

__all__ = ["generate_dataset", "generate_case", "PhantomCase", "assign_splits", "case_id", "ORGANS", "Tissue",
           "GENERATOR", "META_COLUMNS", "PhantomOutputError",
           "generate_heart_dataset", "generate_heart_case", "HeartCase", "heart_case_id", "HeartTissue",
           "HEART_CLASSES", "MMWHS_LABELS", "HEART_PROTOCOLS", "HEART_DEFAULT_PROTOCOL", "HEART_GENERATOR",
           "HEART_META_COLUMNS"]
