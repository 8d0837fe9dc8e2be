"""Seeded generation of phantom cases and datasets (the public entry points).

Randomness: case ``i`` of modality ``m`` with seed ``s`` uses ``SeedSequence(entropy=[s, m, i])`` with one
spawn key per purpose (anatomy, acquisition, grid, texture/noise), so a case never depends on how many cases
are generated, and a CT and an MRI set with the same seed are different patients. The voxel order (RAS or
LPS) alternates between consecutive cases with a seed-dependent start, so any two consecutive cases cover
both orders.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .anatomy import build_labels, sample_anatomy
from .cases import (GeneratedCase, apply_overrides, case_rng, grid_meta, meta_number, sample_geometry,
                    written_orientation)
from .ct import render_ct, sample_ct_params
from .grid import reorient_array
from .mri import render_mri, sample_mr_params
from .tissues import ORGANS, organ_lut
from .writer import GENERATOR, prepare_output, write_case_folder, write_meta

__all__ = ["PhantomCase", "generate_case", "generate_dataset", "assign_splits", "case_id"]

MODALITIES = {"ct": (0, "ct", "ct.nii.gz"), "mri": (1, "mr", "mri.nii.gz")}
_ANATOMY, _ACQUISITION, _GRID, _NOISE, _SPLIT, _ORIENT = range(6)
CT_INPLANE = (1.2, 2.0)                  # mm; coarser than clinical CT (0.6-0.9 mm) to keep cases small and fast
CT_SLICES = (1.5, 2.0, 2.5, 3.0, 5.0)    # mm
MR_INPLANE = (1.3, 2.0)                  # mm
MR_SLICES = (4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0)  # mm, thick 2D slices


def _modality(modality: str) -> str:
    m = str(modality).lower()
    if m == "mr":
        m = "mri"
    if m not in MODALITIES:
        raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
    return m


def _rng(seed: int, modality: str, index: int, *key: int) -> np.random.Generator:
    return case_rng(seed, MODALITIES[modality][0], index, *key)


def case_id(modality: str, index: int) -> str:
    """``ct0000`` / ``mr0000`` style id of case ``index``."""
    return f"{MODALITIES[_modality(modality)][1]}{index:04d}"


@dataclass(kw_only=True)
class PhantomCase(GeneratedCase):
    """One generated abdominal case (:class:`~fedgin.phantom.cases.GeneratedCase`): ``tissues`` are
    :class:`~fedgin.phantom.tissues.Tissue` codes, ``params`` :class:`CTParams` / :class:`MRParams`."""

    def organ_masks(self) -> dict[str, np.ndarray]:
        """uint8 0/1 masks (RAS voxel order) of the six organs, keyed by organ name."""
        org = organ_lut()[self.tissues]
        return {name: (org == i).astype(np.uint8) for i, name in enumerate(ORGANS, start=1)}

    def oriented(self) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(image, masks, affine) in the case's written voxel order."""
        masks = {k: reorient_array(v, self.orientation) for k, v in self.organ_masks().items()}
        return reorient_array(self.image, self.orientation), masks, self.written_affine()

    def write(self, output: str | Path) -> Path:
        """Write ``<output>/<case_id>/`` (image + segmentations) atomically; returns the case folder."""
        image, masks, aff = self.oriented()
        name = MODALITIES[self.modality][2]
        return write_case_folder(Path(output), self.case_id, name, image, masks, aff,
                                 f"fedgin phantom {self.meta.get('sequence', '')} {self.orientation}")


def generate_case(modality: str, seed: int, index: int, *, mri_sequence: str = "mixed",
                  protocol: str | None = None, overrides: dict[str, object] | None = None) -> PhantomCase:
    """Generate case ``index`` of a phantom dataset in memory.

    Args:
        modality: "ct" or "mri". seed: non-negative int. index: case number (>= 0).
        mri_sequence: "mixed" (random T1w/T2w per case), "t1" or "t2"; ignored for CT.
        protocol: ``None`` (the training centres) or an unseen test centre: CT ``"arterial-lowdose"``
            (``fedgin.phantom.ct``), MRI ``"t1-gd-3T"`` (``fedgin.phantom.mri``; ``mri_sequence`` ignored).
        overrides: attribute values replacing the sampled :class:`CTParams` / :class:`MRParams` fields
            (e.g. ``{"bias": 0.0}``), for tests and experiments.
    """
    modality = _modality(modality)
    if int(seed) < 0 or int(index) < 0:
        raise ValueError("seed and index must be non-negative integers")
    acq = _rng(seed, modality, index, _ACQUISITION)
    params = (sample_ct_params(acq, protocol) if modality == "ct" else
              sample_mr_params(acq, mri_sequence, protocol))
    apply_overrides(params, overrides)
    orientation = written_orientation(_rng(seed, modality, 0, _ORIENT), index)
    inplane, slices = (CT_INPLANE, CT_SLICES) if modality == "ct" else (MR_INPLANE, MR_SLICES)
    lut = organ_lut()
    anat, grid, fine, tissues = sample_geometry(
        lambda attempt: _rng(seed, modality, index, _ANATOMY, attempt),
        lambda attempt: _rng(seed, modality, index, _GRID, attempt), sample_anatomy, build_labels, inplane, slices,
        lambda t: bool(np.all(np.bincount(lut[t].ravel(), minlength=len(ORGANS) + 1)[1:] > 0)),
        f"phantom case {modality}/{seed}/{index}")
    noise = _rng(seed, modality, index, _NOISE)
    if modality == "ct":
        image = render_ct(fine, grid.sub, params, noise)
    else:
        px, py, pz = grid.patient_axes()
        image = render_mri(fine, grid.sub, params, noise, (px, py, pz[grid.sub // 2::grid.sub]))
    del fine
    cid = case_id(modality, index)
    meta = grid_meta(cid, modality, grid, anat, orientation, seed, GENERATOR)
    if modality == "ct":
        meta.update(sequence="ct", readout="ct", phase=params.phase, noise=meta_number(params.noise_sd, 1),
                    noise_model="gaussian_sd_hu")
    else:
        meta.update(sequence=params.sequence,
                    readout="spgr" if params.sequence == "t1" else ("haste" if params.haste else "tse"),
                    field_strength=meta_number(params.field_strength, 1),
                    phase="native" if params.gd_mm is None else "gadolinium_portal_venous",
                    fat_suppression="yes" if params.fat_sat else "no", noise=meta_number(params.snr, 1),
                    noise_model="rician_snr", tr_ms=meta_number(params.tr, 1) if not params.haste else "inf",
                    te_ms=meta_number(params.te, 1), flip_deg=meta_number(params.flip, 1),
                    bias_field=meta_number(params.bias, 3))
    return PhantomCase(case_id=cid, modality=modality, image=image, tissues=tissues, affine=grid.affine,
                       orientation=orientation, grid=grid, params=params, anatomy=anat, meta=meta)


def assign_splits(cases: int, seed: int, modality: str, val_fraction: float = 0.2,
                  test_fraction: float = 0.2) -> list[str]:
    """Seeded split per case ("train" / "val" / "test").

    ``round(fraction * cases)`` cases each for val and test; with ``cases >= 3`` a positive fraction gives at least
    one case; at least one training case is kept.
    """
    modality = _modality(modality)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")
    n_val, n_test = int(round(val_fraction * cases)), int(round(test_fraction * cases))
    if cases >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    while n_val + n_test > max(cases - 1, 0):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    order = _rng(seed, modality, 0, _SPLIT).permutation(cases)
    splits = ["train"] * cases
    for j in order[:n_val]:
        splits[int(j)] = "val"
    for j in order[n_val:n_val + n_test]:
        splits[int(j)] = "test"
    return splits


def write_cases(out: Path, cases: int, make_case, splits: list[str], desc: str,
                progress: bool) -> tuple[list[dict[str, object]], list[str]]:
    """Generate ``make_case(i)`` for ``i < cases`` and write each into ``out`` (``case.write``); returns the meta rows
    (with ``split`` from ``splits``) and the case ids. Compressing case i (zlib releases the GIL) overlaps with
    generating case i + 1."""
    rows: list[dict[str, object]] = []
    ids: list[str] = []
    iterator = range(cases)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc=desc, unit="case")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for i in iterator:
            case = make_case(i)
            if pending is not None:
                pending.result()
            pending = pool.submit(case.write, out)
            rows.append({**case.meta, "split": splits[i]})
            ids.append(case.case_id)
            del case
        if pending is not None:
            pending.result()
    return rows, ids


def generate_dataset(output: str | Path, modality: str, cases: int, seed: int, *, mri_sequence: str = "mixed",
                     protocol: str | None = None, val_fraction: float = 0.2, test_fraction: float = 0.2,
                     progress: bool = True) -> list[str]:
    """Write a phantom dataset in the TotalSegmentator layout and return the case ids written.

    ``<output>/<id>/{ct|mri}.nii.gz``, ``<output>/<id>/segmentations/<organ>.nii.gz`` (six organs, uint8 0/1,
    same grid and affine as the image) and ``<output>/meta.csv`` (';'-separated, ``image_id;split;modality;...``).
    The folder must be empty, absent, or hold only a previous phantom run (which is replaced); otherwise
    :class:`~fedgin.phantom.writer.PhantomOutputError` is raised.

    Args:
        output: dataset folder. modality: "ct" or "mri". cases: number of cases (>= 1). seed: >= 0.
        mri_sequence: "mixed" | "t1" | "t2" (MRI only). protocol: ``None`` or an unseen test centre
            (:func:`generate_case`). val_fraction, test_fraction: split shares.
        progress: show a tqdm progress bar.
    """
    modality = _modality(modality)
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if mri_sequence not in ("mixed", "t1", "t2"):
        raise ValueError(f"mri_sequence must be 'mixed', 't1' or 't2', got {mri_sequence!r}")
    splits = assign_splits(int(cases), seed, modality, val_fraction, test_fraction)
    out = Path(output)
    prepare_output(out)
    rows, ids = write_cases(out, int(cases), lambda i: generate_case(modality, seed, i, mri_sequence=mri_sequence,
                                                                     protocol=protocol),
                            splits, f"phantom {modality}", progress)
    write_meta(out, rows)
    return ids
