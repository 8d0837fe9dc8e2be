"""Seeded whole-heart phantom (CT + MRI, 7 classes, MM-WHS / CARE WHS layout): the public entry points.

The default data of the whole-heart use case: LV myocardium, LA, LV, RA, RV, ascending aorta and pulmonary
trunk, written with the raw MM-WHS label values (myo 205, la 420, lv 500, ra 550, rv 600, ao 820, pa 850;
canonical class order myo, la, lv, ra, rv, ao, pa) so that a dataset adapter's remap is exercised.
Geometry: :mod:`~fedgin.phantom.heart_anatomy`; values and sources: :mod:`~fedgin.phantom.heart_tissues`;
protocols (site styles) and signal models: :mod:`~fedgin.phantom.heart_render`.

Public API::

    generate_heart_case(modality, seed, index, *, protocol=None, overrides=None) -> HeartCase
    generate_heart_dataset(output, modality, cases, seed, *, protocol=None, val_fraction=0.2,
                           test_fraction=0.2, progress=True) -> list[str]

Layout (flat, MM-WHS naming, ids from 1001)::

    <output>/ct_train_1001_image.nii.gz   int16 HU          |  mr_train_1001_image.nii.gz  uint16
    <output>/ct_train_1001_label.nii.gz   uint16 raw labels |  mr_train_1001_label.nii.gz  uint16
    <output>/meta.csv                     ';'-separated, image_id;split;modality;protocol;...

Field of view: centred on the heart, ~155-205 mm in-plane (in-plane 1.2-2 mm CT, 1.5-2 mm MRI, i.e. ~85-140
voxels), from below the heart to above the pulmonary bifurcation (~150-200 mm, 20-125 slices). Generation takes
~0.3-0.6 s per case on one CPU core (measured on a loaded 2-core machine, max 0.9 s); ~1-2 MB per case on disk.
Use a different seed per site: the anatomy depends on (modality, seed, index), not on the protocol.

Randomness: case ``i`` of modality ``m`` with seed ``s`` uses ``SeedSequence(entropy=[s, m, i, HEART])`` with one
spawn key per purpose (anatomy, acquisition, grid, texture/noise, protocol), so a case never depends on how many
cases are generated and never coincides with an abdominal phantom case. The voxel order alternates between RAS
and LPS from one case to the next (seed-dependent start), with the affine adjusted so both describe the same
world positions. Splits come from :func:`~fedgin.phantom.dataset.assign_splits` (seeded, same rule as the
abdominal phantom).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cases import (GeneratedCase, apply_overrides, case_rng, grid_meta, meta_number, sample_geometry,
                    written_orientation)
from .dataset import _modality, assign_splits, write_cases
from .grid import reorient_array
from .heart_anatomy import build_heart_labels, sample_heart_anatomy
from .heart_render import (render_heart_ct, render_heart_mri, resolve_protocol, sample_heart_ct_params,
                           sample_heart_mr_params)
from .heart_tissues import HEART_CLASSES, MMWHS_LABELS, label_lut
from .writer import TMP_PREFIX, prepare_output, save_nifti, write_meta

__all__ = ["HeartCase", "generate_heart_case", "generate_heart_dataset", "heart_case_id", "HEART_GENERATOR",
           "HEART_META_COLUMNS", "FIRST_ID"]

HEART_GENERATOR = "fedgin-phantom-heart/1"
HEART_META_COLUMNS = ("image_id", "split", "modality", "protocol", "readout", "field_strength", "spacing",
                      "slice_thickness", "shape", "orientation", "noise", "noise_model", "blood_left_hu",
                      "blood_right_hu", "myocardium_hu", "tr_ms", "te_ms", "flip_deg", "t2prep_ms",
                      "fat_suppression", "inflow_pulses", "bias_field", "body_scale", "seed", "generator")
FIRST_ID = 1001
_PREFIX = {"ct": "ct", "mri": "mr"}
_MOD_CODE = {"ct": 0, "mri": 1}
_HEART_STREAM = 0x4845415254            # "HEART": keeps heart cases apart from abdominal ones
_ANATOMY, _ACQUISITION, _GRID, _NOISE, _ORIENT, _PROTOCOL = range(6)
HEART_FILE_RE = re.compile(r"^(ct|mr)_train_\d{4,}_(image|label)\.nii\.gz$")


def _rng(seed: int, modality: str, index: int, *key: int) -> np.random.Generator:
    return case_rng(seed, _MOD_CODE[modality], index, *key, stream=_HEART_STREAM)


def heart_case_id(modality: str, index: int) -> str:
    """MM-WHS style id of case ``index``: ``ct_train_1001`` / ``mr_train_1001`` for index 0."""
    return f"{_PREFIX[_modality(modality)]}_train_{FIRST_ID + int(index)}"


@dataclass(kw_only=True)
class HeartCase(GeneratedCase):
    """One generated heart case (:class:`~fedgin.phantom.cases.GeneratedCase`): ``tissues`` are
    :class:`~fedgin.phantom.heart_tissues.HeartTissue` codes, ``params`` :class:`HeartCTParams` /
    :class:`HeartMRParams`; ``labels``: uint16 (nx, ny, nz) raw MM-WHS values {0, 205, 420, 500, 550, 600, 820,
    850} (RAS order); ``protocol``: the acquisition protocol."""

    protocol: str
    labels: np.ndarray

    def masks(self) -> dict[str, np.ndarray]:
        """bool masks (RAS voxel order) of the seven classes, keyed by class name in canonical order."""
        return {name: self.labels == MMWHS_LABELS[name] for name in HEART_CLASSES}

    def oriented(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, labels, affine) in the case's written voxel order."""
        return (reorient_array(self.image, self.orientation), reorient_array(self.labels, self.orientation),
                self.written_affine())

    def write(self, output: str | Path) -> tuple[Path, Path]:
        """Write ``<case_id>_image.nii.gz`` and ``<case_id>_label.nii.gz`` into ``output`` (each via a temporary
        file and a rename); returns their paths."""
        out = Path(output)
        image, labels, aff = self.oriented()
        paths = []
        for suffix, array, what in (("image", image, f"{self.protocol} {self.orientation}"),
                                    ("label", labels, "MM-WHS raw labels")):
            final = out / f"{self.case_id}_{suffix}.nii.gz"
            tmp = out / f"{TMP_PREFIX}{final.name}"
            save_nifti(tmp, array, aff, f"fedgin heart phantom {what}")
            os.replace(tmp, final)
            paths.append(final)
        return paths[0], paths[1]


def generate_heart_case(modality: str, seed: int, index: int, *, protocol: str | None = None,
                        overrides: dict[str, object] | None = None) -> HeartCase:
    """Generate case ``index`` of a whole-heart phantom dataset in memory.

    Args:
        modality: "ct" or "mri" ("mr" accepted). seed: non-negative int. index: case number (>= 0); its id is
            ``{ct|mr}_train_{1001 + index}``.
        protocol: site style, see :mod:`~fedgin.phantom.heart_render`: CT "cta" (default), "cta-early",
            "cta-lowdose"; MRI "bssfp-1.5T" (default), "gre-3T", "tse-bb-3T" (black blood); or "mixed" (one drawn
            per case).
        overrides: attribute values replacing sampled :class:`HeartCTParams` / :class:`HeartMRParams` fields
            (e.g. ``{"bias": 0.0}``), for tests and experiments.

    Raises:
        ValueError: unknown modality or protocol, negative seed or index, unknown override.
    """
    modality = _modality(modality)
    if int(seed) < 0 or int(index) < 0:
        raise ValueError("seed and index must be non-negative integers")
    proto = resolve_protocol(modality, protocol, _rng(seed, modality, index, _PROTOCOL))
    acq = _rng(seed, modality, index, _ACQUISITION)
    params = sample_heart_ct_params(acq, proto.name) if modality == "ct" else sample_heart_mr_params(acq, proto.name)
    apply_overrides(params, overrides)
    orientation = written_orientation(_rng(seed, modality, 0, _ORIENT), index)
    lut = label_lut()
    wanted = np.array([MMWHS_LABELS[c] for c in HEART_CLASSES])
    anat, grid, fine, tissues = sample_geometry(
        lambda attempt: _rng(seed, modality, index, _ANATOMY, attempt),
        lambda attempt: _rng(seed, modality, index, _GRID, attempt), sample_heart_anatomy, build_heart_labels,
        proto.inplane, proto.slices, lambda t: bool(np.isin(wanted, lut[t]).all()),
        f"heart phantom case {modality}/{seed}/{index}")
    labels = lut[tissues]
    noise = _rng(seed, modality, index, _NOISE)
    px, py, pz = grid.patient_axes()
    if modality == "ct":
        image = render_heart_ct(fine, grid.sub, params, noise, (px, py, pz))
    else:
        image = render_heart_mri(fine, grid.sub, params, noise, (px, py, pz[grid.sub // 2::grid.sub]))
    del fine
    cid = heart_case_id(modality, index)
    meta = {**grid_meta(cid, modality, grid, anat, orientation, seed, HEART_GENERATOR), "protocol": proto.name}
    if modality == "ct":
        meta.update(readout="ct", noise=meta_number(params.noise_sd, 1), noise_model="gaussian_sd_hu",
                    blood_left_hu=meta_number(params.left_hu, 0), blood_right_hu=meta_number(params.right_hu, 0),
                    myocardium_hu=meta_number(params.myo_hu, 0))
    else:
        meta.update(readout=params.readout, field_strength=meta_number(params.field_strength, 1),
                    noise=meta_number(params.snr, 1), noise_model="rician_snr", tr_ms=meta_number(params.tr, 2),
                    te_ms=meta_number(params.te, 2), flip_deg=meta_number(params.flip, 1),
                    t2prep_ms=meta_number(params.t2prep, 1), fat_suppression="yes" if params.fat_sat else "no",
                    inflow_pulses=meta_number(params.inflow_pulses, 1), bias_field=meta_number(params.bias, 3))
    return HeartCase(case_id=cid, modality=modality, protocol=proto.name, image=image, labels=labels,
                     tissues=tissues, affine=grid.affine, orientation=orientation, grid=grid, params=params,
                     anatomy=anat, meta=meta)


def _is_heart_file(entry: Path) -> bool:
    return entry.is_file() and bool(HEART_FILE_RE.match(entry.name))


def generate_heart_dataset(output: str | Path, modality: str, cases: int, seed: int, *, protocol: str | None = None,
                           val_fraction: float = 0.2, test_fraction: float = 0.2, progress: bool = True) -> list[str]:
    """Write a whole-heart phantom dataset in the flat MM-WHS layout and return the case ids written.

    ``<output>/{ct|mr}_train_{1001+i}_image.nii.gz`` (CT int16 HU, MRI uint16), ``..._label.nii.gz`` (uint16 raw
    MM-WHS values, same grid and affine) and ``<output>/meta.csv`` (';'-separated, :data:`HEART_META_COLUMNS`,
    starting ``image_id;split;modality;protocol``). The folder must be empty, absent, or hold only a previous
    heart-phantom run (which is replaced); otherwise :class:`~fedgin.phantom.writer.PhantomOutputError` is raised.

    Args:
        output: dataset folder (one per site). modality: "ct" or "mri". cases: number of cases (>= 1). seed: >= 0.
        protocol: site style (None = the modality's default, "mixed", or a name, see
            :func:`generate_heart_case`). val_fraction, test_fraction: split shares. progress: tqdm progress bar.
    """
    modality = _modality(modality)
    if int(cases) < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    if protocol is not None and protocol != "mixed":
        resolve_protocol(modality, protocol)
    splits = assign_splits(int(cases), seed, modality, val_fraction, test_fraction)
    out = Path(output)
    prepare_output(out, is_case=_is_heart_file)
    rows, ids = write_cases(out, int(cases), lambda i: generate_heart_case(modality, seed, i, protocol=protocol),
                            splits, f"heart phantom {modality}", progress)
    write_meta(out, rows, HEART_META_COLUMNS)
    return ids

