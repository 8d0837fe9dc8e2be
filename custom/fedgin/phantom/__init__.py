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

Modules: ``tissues`` (codes, HU / relaxation tables with sources), ``anatomy`` (per-case parameters and
painting order), ``body`` / ``organs`` / ``bowel`` (structures), ``shapes`` and ``fields`` (primitives and
smooth random fields), ``grid`` (acquisition grid, thick slices, RAS/LPS), ``ct`` and ``mri`` (renderers),
``writer`` (NIfTI, TotalSegmentator layout, output-folder policy), ``dataset`` (seeding, splits).
"""

from __future__ import annotations

from .dataset import PhantomCase, assign_splits, case_id, generate_case, generate_dataset
from .tissues import ORGANS, Tissue
from .writer import GENERATOR, META_COLUMNS, PhantomOutputError

__all__ = ["generate_dataset", "generate_case", "PhantomCase", "assign_splits", "case_id", "ORGANS", "Tissue",
           "GENERATOR", "META_COLUMNS", "PhantomOutputError"]
