"""The CHAOS layout (Kavur et al., MedIA 2021; Zenodo 3431873, ``CHAOS_Train_Sets.zip``): DICOM slices + PNG masks.

Layout (``--input`` is the folder holding ``Train_Sets/``, or ``Train_Sets/`` itself)::

    Train_Sets/CT/<pid>/DICOM_anon/*.dcm                           + Train_Sets/CT/<pid>/Ground/*.png
    Train_Sets/MR/<pid>/T2SPIR/DICOM_anon/*.dcm                    + Train_Sets/MR/<pid>/T2SPIR/Ground/*.png
    Train_Sets/MR/<pid>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm + Train_Sets/MR/<pid>/T1DUAL/Ground/*.png

CT and MR are different patients. Case ids: ``ct_<pid>`` and ``mr_<pid>_<sequence>`` (e.g. ``mr_1_t2spir``).
A patient folder without its ``Ground`` folder (the test sets) is skipped with a warning. A patient without its
DICOM folder, a dangling link as patient, DICOM or ``Ground`` folder is a listing problem of that case
(``SourceCase.problem``: an error naming the folder, or skipped by ``prepare_site(skip_bad_cases=True)``); a
dangling ``.dcm`` or ``.png`` link is an error when the case is checked (a slice or mask would be missing).

MR sequence (option ``sequence``): ``t2spir`` (default), ``t1dual-in`` (T1 in-phase) or ``t1dual-out`` (T1
opposed-phase); T1DUAL's two phases share ``T1DUAL/Ground``. One sequence per site: the default is T2-SPIR
because it is a series of its own with its own masks, and giving one patient in several sequences to one site would
put the same anatomy in several cases (and possibly on both sides of a train/test split). Prepare another site (or
cache) for another sequence.

Images (``fedgin.data.dicom``): slices stacked by their position along the slice normal (ImagePositionPatient
projected on the normal of ImageOrientationPatient), never by file name; affine from IOP/IPP/PixelSpacing, LPS
converted to RAS; RescaleSlope/Intercept applied. The volume is then put in RAS voxel order.

Pairing of masks with slices (the order rule): each PNG belongs to one DICOM *file*, and goes wherever the geometry
puts that file in the volume. A PNG and a DICOM file are paired by name: by identical stems when the two folders
hold exactly the same stems (MR: ``IMG-0004-00001.png`` <-> ``IMG-0004-00001.dcm``); otherwise by rank, the k-th
PNG in natural name order with the k-th DICOM file in natural name order (CT: ``liver_GT_000.png`` <->
``i0000,0000b.dcm``; T1DUAL, whose phases are numbered apart), which needs the two counts to be equal. CHAOS names
both files after the acquisition order, so this pairs each mask with its own slice whatever the direction of the
stack; the classic flip (stacking the PNGs in name order against a volume sorted by position, which the reference
conversion then undoes by reversing the PNG stack) cannot happen here. A PNG must have the size of its slice
(rows x columns, mask pixel ``[r, c]`` labels DICOM pixel ``[r, c]``).

Label map (grey values of the PNGs, by ranges, inclusive; 0 is background)::

    MR: liver 55-70, kidney_right 110-135, kidney_left 175-200, spleen 240-255; kidneys = both kidney ranges
    CT: liver 255 (the only organ annotated)

Any other grey value is an error naming the PNG and the values. Asking CHAOS CT for another organ than the liver
(or MR for gallbladder/pancreas) is an error: those organs are not annotated there, which is not the same as
background.

Split: CHAOS defines none for the training sets, so ``prepare_site`` draws its seeded split by case.

In ``datalist.json``, ``source_image`` is the DICOM folder, and ``source_shape`` / ``source_affine`` describe the
assembled stack (columns, rows, slices by position; RAS world) before it is put in RAS voxel order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgin.data.dicom import dicom_files, read_dicom_series
from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import class_values, format_values, is_hidden, loaded_case, merge_label_values
from fedgin.data.nifti import RasVolume, reorient_to_ras
from fedgin.data.source import LayoutAdapter, LoadedCase, SourceCase, broken_link, finish_listing, start_listing

__all__ = [
    "SEQUENCES",
    "MR_GREY_RANGES",
    "CT_GREY",
    "CT_CLASSES",
    "MR_CLASSES",
    "natural_key",
    "pair_masks",
    "grey_to_codes",
    "list_cases",
    "check_case",
    "load_case",
    "ADAPTER",
]

log = logging.getLogger(__name__)

#: option value -> (sequence folder, DICOM sub-folder of DICOM_anon or "")
SEQUENCES = {"t2spir": ("T2SPIR", ""), "t1dual-in": ("T1DUAL", "InPhase"), "t1dual-out": ("T1DUAL", "OutPhase")}
DEFAULT_SEQUENCE = "t2spir"
#: MR organ code -> inclusive grey range; codes 1 liver, 2 kidney_right, 3 kidney_left, 4 spleen
MR_GREY_RANGES = {1: (55, 70), 2: (110, 135), 3: (175, 200), 4: (240, 255)}
#: CT: the liver's grey value (code 1)
CT_GREY = 255
CT_CLASSES: Mapping[str, frozenset[int]] = {"liver": frozenset({1})}
MR_CLASSES: Mapping[str, frozenset[int]] = {
    "liver": frozenset({1}),
    "kidney_right": frozenset({2}),
    "kidney_left": frozenset({3}),
    "spleen": frozenset({4}),
    "kidneys": frozenset({2, 3}),
}


def natural_key(name: str) -> list:
    """Sort key that orders the digit runs of a name by value (``IMG-9`` before ``IMG-10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _pngs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    pngs = sorted(p for p in folder.iterdir()
                  if not is_hidden(p.name) and not p.is_dir() and p.suffix.lower() == ".png")
    for p in pngs:
        if broken_link(p):
            raise LayoutError(f"{broken_link(p)} (a mask of {folder})")
    return pngs


def pair_masks(dicoms: Sequence[Path], pngs: Sequence[Path]) -> dict[Path, Path]:
    """``{DICOM file: its PNG mask}`` by the rule of the module docstring (identical stems, else rank).

    Raises:
        LayoutError: no file, or different counts so that no rank pairing exists.
    """
    if not dicoms or not pngs:
        raise LayoutError(f"nothing to pair: {len(dicoms)} DICOM files, {len(pngs)} PNG masks")
    by_stem = {p.stem: p for p in pngs}
    if len(by_stem) == len(pngs) == len(dicoms) and set(by_stem) == {d.stem for d in dicoms}:
        return {d: by_stem[d.stem] for d in dicoms}
    if len(dicoms) != len(pngs):
        raise LayoutError(
            f"{pngs[0].parent}: {len(pngs)} PNG masks for {len(dicoms)} DICOM slices in {dicoms[0].parent}; "
            f"every slice needs exactly one mask"
        )
    ds = sorted(dicoms, key=lambda p: natural_key(p.name))
    ms = sorted(pngs, key=lambda p: natural_key(p.name))
    return dict(zip(ds, ms))


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except Exception as e:  # UnidentifiedImageError, OSError, truncated files ...
        raise LayoutError(f"{path}: cannot read the PNG mask ({type(e).__name__}: {e})") from e
    if mode == "1":
        return arr.astype(np.uint8) * 255
    if mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        return arr
    if mode in ("LA",):
        return arr[..., 0]
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if np.all(rgb == rgb[..., :1]):
            return rgb[..., 0]
        raise LayoutError(f"{path}: colour PNG mask (channels differ); expected a grey-level mask")
    raise LayoutError(f"{path}: unsupported PNG mode {mode!r}; expected a grey-level mask")


def grey_to_codes(grey: np.ndarray, kind: str, path: Path) -> np.ndarray:
    """Organ codes (uint8) of one PNG: MR by the grey ranges, CT 255 -> 1; other values raise ``LayoutError``."""
    codes = np.zeros(grey.shape, dtype=np.uint8)
    if kind == "ct":
        known = (grey == 0) | (grey == CT_GREY)
        codes[grey == CT_GREY] = 1
        rule = f"CT masks hold 0 and {CT_GREY} (liver) only"
    else:
        known = grey == 0
        for code, (lo, hi) in MR_GREY_RANGES.items():
            inside = (grey >= lo) & (grey <= hi)
            codes[inside] = code
            known |= inside
        rule = "MR grey ranges: liver 55-70, kidney_right 110-135, kidney_left 175-200, spleen 240-255"
    if not known.all():
        raise LayoutError(f"{path}: grey values {format_values(np.unique(grey[~known]))} match no organ ({rule})")
    return codes


def _base(root: Path) -> Path:
    return root / "Train_Sets" if (root / "Train_Sets").is_dir() else root


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """The labelled CHAOS cases of one modality (MR: of the chosen sequence), sorted by case id.

    A patient without its DICOM folder, or with a dangling folder link, makes a case with a ``problem``; with
    ``strict`` it raises.

    Raises:
        LayoutError: unknown option or sequence (or a sequence given for CT), unknown modality, no ``CT``/``MR``
            folder, or (``strict``) a case with a listing problem.
    """
    root, options = start_listing("chaos", root, modality, options, declared=["sequence"])
    sequence = options.get("sequence")
    if sequence is not None and modality == "ct":
        raise LayoutError(f"chaos: the sequence option ({sequence!r}) applies to MR only")
    sequence = sequence or DEFAULT_SEQUENCE
    if sequence not in SEQUENCES:
        raise LayoutError(f"chaos: unknown MR sequence {sequence!r}; expected one of {', '.join(SEQUENCES)}")
    base = _base(root)
    kind = "ct" if modality == "ct" else "mr"
    mod_dir = base / kind.upper()
    if not mod_dir.is_dir():
        raise LayoutError(broken_link(mod_dir) or f"{mod_dir}: folder not found (CHAOS layout: "
                          "Train_Sets/CT/<pid>/..., Train_Sets/MR/<pid>/...)")
    cases = []
    for patient in sorted(p for p in mod_dir.iterdir() if not is_hidden(p.name) and (p.is_dir() or broken_link(p))):
        if kind == "ct":
            seq_dir, dicom_dir, case_id = patient, patient / "DICOM_anon", f"ct_{patient.name}"
        else:
            folder, phase = SEQUENCES[sequence]
            seq_dir = patient / folder
            dicom_dir = seq_dir / "DICOM_anon" / phase if phase else seq_dir / "DICOM_anon"
            case_id = f"mr_{patient.name}_{sequence}"
        ground = seq_dir / "Ground"
        problem = None
        if broken_link(patient):
            problem = f"{broken_link(patient)} (a patient folder of {mod_dir})"
        elif not dicom_dir.is_dir():
            problem = broken_link(dicom_dir) or f"{dicom_dir}: DICOM folder not found for patient {patient.name}"
        elif broken_link(ground):
            problem = f"{broken_link(ground)} (the masks of case {case_id})"
        elif not ground.is_dir():
            log.warning("%s: no Ground folder (unlabelled), case %s skipped", seq_dir, case_id)
            continue
        cases.append(SourceCase(
            case_id=case_id, modality=modality, image_path=dicom_dir, folder=seq_dir, label_path=ground,
            extra={"kind": kind, "sequence": sequence if kind == "mr" else None}, problem=problem,
        ))
    return finish_listing(cases, strict)


def _classes(case: SourceCase) -> Mapping[str, frozenset[int]]:
    return CT_CLASSES if case.extra["kind"] == "ct" else MR_CLASSES


def _source(case: SourceCase) -> str:
    return "CHAOS CT" if case.extra["kind"] == "ct" else f"CHAOS MR ({case.extra['sequence']})"


def check_case(case: SourceCase, organs: Sequence[str]) -> None:
    """Requested organs annotated in this modality, and one PNG per DICOM slice (no file decoded)."""
    class_values(organs, _classes(case), source=_source(case))
    dicoms = dicom_files(case.image_path)
    if not dicoms:
        raise LayoutError(f"{case.image_path}: no .dcm file (case {case.case_id})")
    pair_masks(dicoms, _pngs(case.label_path))  # type: ignore[arg-type]


def load_case(case: SourceCase, organs: Sequence[str]) -> LoadedCase:
    """Decode a CHAOS case: float32 image and label ids 1..K (``organs`` order), RAS voxel order."""
    value_sets = class_values(organs, _classes(case), source=_source(case))
    dicoms = dicom_files(case.image_path)
    if not dicoms:
        raise LayoutError(f"{case.image_path}: no .dcm file (case {case.case_id})")
    pairs = pair_masks(dicoms, _pngs(case.label_path))  # type: ignore[arg-type]
    series = read_dicom_series(dicoms)
    codes = np.zeros(series.data.shape, dtype=np.uint8)
    for k, dcm in enumerate(series.files):
        png = pairs[dcm]
        grey = _read_png(png)
        if grey.shape != (series.rows, series.columns):
            raise LayoutError(
                f"{png}: mask size {grey.shape} differs from its slice {dcm.name} ({series.rows} rows x "
                f"{series.columns} columns)"
            )
        codes[:, :, k] = grey_to_codes(grey, case.extra["kind"], png).T
    label = merge_label_values(codes, value_sets)
    image, affine = reorient_to_ras(series.data, series.affine)
    label, label_affine = reorient_to_ras(label, series.affine)
    assert np.array_equal(affine, label_affine)
    shape = tuple(int(n) for n in series.data.shape)
    volume = RasVolume(data=image, affine=affine, source_shape=shape,  # type: ignore[arg-type]
                       source_affine=series.affine, path=case.image_path)
    return loaded_case(case, volume, label)


ADAPTER = LayoutAdapter("chaos", "CHAOS: Train_Sets/{CT,MR}/<pid>/.../DICOM_anon/*.dcm + Ground/*.png", list_cases,
                        load_case, check_case, {"sequence": "MR only: t2spir (default) | t1dual-in | t1dual-out"})
