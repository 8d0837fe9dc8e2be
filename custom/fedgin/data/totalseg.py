"""The TotalSegmentator dataset layout (CT v2 and MRI v1 releases, and the project's phantom, which mimics it).

Layout::

    <root>/meta.csv                                   optional; ';'-separated; columns image_id;split;... (any order)
    <root>/<case_id>/ct.nii.gz   or   mri.nii.gz      the image (a folder may hold both; each modality is read apart)
    <root>/<case_id>/segmentations/<organ>.nii.gz     one binary mask per structure, on the image's grid

Rules applied here:

* Cases of a modality are the sub-folders (not starting with ".") that hold ``ct.nii.gz`` (``ct``) or
  ``mri.nii.gz`` (``mri``); ``.nii`` is accepted as well (both ``.nii.gz`` and ``.nii`` of one image is an error).
  They are sorted by folder name, which is the ``case_id``. An image that is a dangling symbolic link still makes
  the folder a case, refused when read (the message names the link and its missing target). A folder holding only
  the other modality's image is not a case of this modality.
* Nothing is dropped without a word; these are cases with a listing problem (``SourceCase.problem``, an error, or
  skipped by ``prepare_site(skip_bad_cases=True)``): a folder with ``segmentations/`` but no image of either
  modality; a dangling symbolic link in ``<root>`` (taken as a case folder); with a split-bearing ``meta.csv``, a
  listed case whose folder is missing or holds no image of either modality, and a case on disk it does not list.
* ``meta.csv``: when it has a ``split`` column, its values ``train``/``val``/``test`` (or ``training``/
  ``validation``) give each case's split; any other value is an error. Without ``meta.csv`` or without a ``split``
  column, the cases carry no split. A ``meta.csv`` that is a dangling link is an error.
* Masks must be binary (every value 0 or 1, any dtype) and lie on the image's grid: same shape and the same affine
  within 1e-3 (mm), compared after both are put in RAS voxel order, so a mask stored in another voxel order of the
  same grid is accepted.
* ``kidneys`` (FedGIN's kidney task) is the union of ``kidney_left`` and ``kidney_right`` when the case has no
  ``kidneys`` mask of its own.
* Merging: organ k of the requested list gets label id k (1-based). Where masks overlap, the organ later in the list
  wins, and a warning gives the number of voxels taken over from each earlier organ.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import AFFINE_TOLERANCE_MM, check_label_grid, loaded_case
from fedgin.data.nifti import RasVolume, open_nifti, ras_geometry, read_nifti_ras
from fedgin.data.source import LayoutAdapter, LoadedCase, SourceCase, broken_link, finish_listing, start_listing, present

__all__ = [
    "IMAGE_NAMES",
    "META_SPLITS",
    "AFFINE_TOLERANCE_MM",
    "list_cases",
    "read_meta_splits",
    "organ_mask_path",
    "available_organs",
    "check_case",
    "merge_organ_masks",
    "load_case",
    "ADAPTER",
]

log = logging.getLogger(__name__)

IMAGE_NAMES = {"ct": "ct", "mri": "mri"}  # modality -> image file stem
NIFTI_SUFFIXES = (".nii.gz", ".nii")
META_SPLITS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
SEGMENTATION_DIR = "segmentations"


def _find_nifti(folder: Path, stem: str) -> Path | None:
    """``<stem>.nii.gz`` or ``<stem>.nii`` (a dangling link counts: reading it names the target); both: an error."""
    found = [folder / f"{stem}{suffix}" for suffix in NIFTI_SUFFIXES if present(folder / f"{stem}{suffix}")]
    if len(found) > 1:
        raise LayoutError(f"{found[0]}: {stem!r} is there twice ({found[0].name} and {found[1].name}); keep one")
    return found[0] if found else None


def read_meta_splits(root: str | Path) -> dict[str, str] | None:
    """Read ``<root>/meta.csv`` and return ``{image_id: split}`` (splits as datalist names), or ``None``.

    ``None`` means there is no ``meta.csv`` or it has no ``split`` column.

    Raises:
        LayoutError: unreadable file, no ``image_id`` column, an empty id, an unknown split value, or one id listed
            with two different splits. The message names ``meta.csv`` and the row.
    """
    path = Path(root) / "meta.csv"
    if not path.is_file():
        if broken_link(path):
            raise LayoutError(f"{broken_link(path)} (the dataset's split table)")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(f"{path}: cannot read meta.csv ({e})") from e
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise LayoutError(f"{path}: meta.csv is empty (expected a ';'-separated header with image_id;split)")
    header = [c.strip() for c in rows[0]]
    if "image_id" not in header:
        raise LayoutError(f"{path}: no 'image_id' column in header {header} (the file must be ';'-separated)")
    if "split" not in header:
        log.info("%s: no 'split' column; the split will be drawn by case with the seed", path)
        return None
    i_id, i_split = header.index("image_id"), header.index("split")
    splits: dict[str, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        if len(cells) <= max(i_id, i_split):
            raise LayoutError(f"{path}: line {line_no} has {len(cells)} fields, expected at least {max(i_id, i_split) + 1}")
        case_id, value = cells[i_id], cells[i_split]
        if not case_id:
            raise LayoutError(f"{path}: line {line_no} has an empty image_id")
        split = META_SPLITS.get(value.lower())
        if split is None:
            raise LayoutError(
                f"{path}: line {line_no}, case {case_id!r}: unknown split {value!r} (expected one of train, val, test)"
            )
        if splits.get(case_id, split) != split:
            raise LayoutError(f"{path}: case {case_id!r} is listed with two splits ({splits[case_id]} and {split})")
        splits[case_id] = split
    return splits


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """The cases of one modality under a TotalSegmentator-layout folder, sorted by ``case_id``.

    The layout has no options (``options`` is accepted for the adapter contract and must be empty). Cases with a
    listing problem (module docstring) carry it in ``SourceCase.problem``; with ``strict`` the first one raises.

    Raises:
        LayoutError: ``root`` is not a folder, an unknown modality, ``meta.csv`` problems (see
            :func:`read_meta_splits`), an image there twice, or (``strict``) a case with a listing problem.
    """
    root, _ = start_listing("totalseg", root, modality, options)
    splits = read_meta_splits(root)
    meta = root / "meta.csv"
    stem = IMAGE_NAMES[modality]
    images = " or ".join(f"{s}.nii.gz" for s in IMAGE_NAMES.values())
    cases: list[SourceCase] = []

    def add(folder: Path, image: Path | None, problem: str | None) -> None:
        split = splits.get(folder.name) if splits is not None else None
        if problem is None and splits is not None and split is None:
            problem = f"{meta}: case {folder.name!r} ({image}) is not listed in meta.csv"
        cases.append(SourceCase(case_id=folder.name, modality=modality, image_path=image or folder / f"{stem}.nii.gz",
                                folder=folder, split=split, problem=problem))

    def listed(case_id: str) -> str:
        return f"case {case_id!r} is listed in {meta} (split {splits[case_id]})"  # type: ignore[index]

    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        in_meta = splits is not None and entry.name in splits
        if entry.is_dir():
            image = _find_nifti(entry, stem)
            if image is not None:
                add(entry, image, None)
            elif any(_find_nifti(entry, s) for s in IMAGE_NAMES.values()):
                continue  # the other modality's case
            elif in_meta:
                add(entry, None, f"{entry}: {listed(entry.name)} but its folder holds no {images}")
            elif (entry / SEGMENTATION_DIR).is_dir():
                add(entry, None, f"{entry}: the case folder has {SEGMENTATION_DIR}/ but no {images}")
        elif broken_link(entry) and entry.name != meta.name:
            add(entry, None, f"{broken_link(entry)} (a case folder of {root})")
        elif in_meta:
            add(entry, None, f"{entry}: {listed(entry.name)} but is not a folder")
    if splits is not None:
        on_disk = {p.name for p in root.iterdir()}
        for case_id in sorted(set(splits) - on_disk):
            add(root / case_id, None, f"{root / case_id}: {listed(case_id)} but its folder does not exist (a partial "
                                      "copy of the dataset? remove the row from meta.csv, or give --skip-bad-cases "
                                      "to prepare the rest and record it as skipped)")
    return finish_listing(cases, strict)


#: classes made of several TotalSegmentator structures when the dataset has no file of that name
MERGED_STRUCTURES = {"kidneys": ("kidney_left", "kidney_right")}


def organ_mask_paths(case: SourceCase, organ: str) -> list[Path]:
    """The mask file(s) of a class: its own file, or the parts of a merged class (``MERGED_STRUCTURES``).

    Raises:
        LayoutError: no file for the organ (nor for every part of a merged class), or both ``.nii.gz`` and ``.nii``.
    """
    path = organ_mask_path(case, organ)
    if present(path):  # a dangling link too: reading it names the missing target
        return [path]
    if organ in MERGED_STRUCTURES:
        parts = [organ_mask_path(case, part) for part in MERGED_STRUCTURES[organ]]
        missing = [q for q in parts if not present(q)]
        if not missing:
            return parts
        raise _missing_organ_error(case, organ, missing[0])
    raise _missing_organ_error(case, organ, path)


def organ_mask_path(case: SourceCase, organ: str) -> Path:
    """Path of an organ's mask for a case (the ``.nii.gz`` name when neither exists)."""
    seg = case.folder / SEGMENTATION_DIR
    return _find_nifti(seg, organ) or seg / f"{organ}.nii.gz"


def available_organs(case: SourceCase) -> list[str]:
    """Names of the structures that have a mask file in the case's ``segmentations`` folder."""
    seg = case.folder / SEGMENTATION_DIR
    if not seg.is_dir():
        return []
    names = set()
    for p in seg.iterdir():
        for suffix in NIFTI_SUFFIXES:
            if p.name.endswith(suffix):
                names.add(p.name[: -len(suffix)])
                break
    return sorted(names)


def _check_grid(case: SourceCase, mask_path: Path, mask_shape: tuple, mask_affine: np.ndarray,
                image_path: Path, image_shape: tuple, image_affine: np.ndarray) -> None:
    """Shapes and affines given in RAS voxel order; errors name the mask file and the case."""
    check_label_grid(case.case_id, mask_path, mask_shape, mask_affine, image_path, image_shape, image_affine,
                     kind="mask")


def _missing_organ_error(case: SourceCase, organ: str, path: Path) -> LayoutError:
    have = available_organs(case)
    shown = (", ".join(have[:20]) + (" ..." if len(have) > 20 else "")) if have else "none"
    return LayoutError(f"{path}: case {case.case_id!r} has no mask for organ {organ!r} (masks present: {shown})")


def check_case(case: SourceCase, organs: Sequence[str]) -> None:
    """Cheap pre-flight check from the NIfTI headers only (no voxel data decoded).

    Finds, before any heavy work, a missing organ mask, an unreadable header, a non-3-D file, and a mask whose grid
    (shape/affine, in RAS voxel order) differs from the image's. Corrupt voxel data and non-binary masks are found
    by :func:`load_case`.
    """
    img, shape = open_nifti(case.image_path)
    image_shape, image_affine = ras_geometry(shape, img.affine)
    for organ in organs:
        for path in organ_mask_paths(case, organ):
            m, m_shape = open_nifti(path)
            mask_shape, mask_affine = ras_geometry(m_shape, m.affine)
            _check_grid(case, path, mask_shape, mask_affine, case.image_path, image_shape, image_affine)


def _check_mask(mask: RasVolume, image: RasVolume, case: SourceCase) -> np.ndarray:
    """Validate one mask against its image and return it as a bool array."""
    _check_grid(case, mask.path, mask.data.shape, mask.affine, image.path, image.data.shape, image.affine)
    data = mask.data
    if data.dtype == np.bool_:
        return data
    if np.issubdtype(data.dtype, np.integer):
        ok = int(data.max()) <= 1 and (np.issubdtype(data.dtype, np.unsignedinteger) or int(data.min()) >= 0)
    else:
        ok = bool(np.all((data == 0) | (data == 1)))
    if not ok:
        bad = np.unique(data[(data != 0) & (data != 1)])
        raise LayoutError(
            f"{mask.path}: case {case.case_id!r}: mask is not binary (values other than 0/1: "
            f"{bad[:5].tolist()}{' ...' if bad.size > 5 else ''})"
        )
    return data != 0


def merge_organ_masks(case: SourceCase, organs: Sequence[str], image: RasVolume) -> np.ndarray:
    """Merge the requested organs' masks into one uint8 label map (ids 1..K in ``organs`` order), RAS voxel order.

    Overlaps: the organ later in ``organs`` wins; a warning logs how many voxels it took from each earlier organ.

    Raises:
        LayoutError: a requested organ has no mask file (the message lists the organs the case has), a mask's
            shape or affine differs from the image's, or a mask is not binary.
        NiftiError: a mask file is unreadable/corrupt or not 3-D.
    """
    if len(organs) > 255:
        raise LayoutError(f"{len(organs)} organs requested; the uint8 label map holds at most 255")
    label = np.zeros_like(image.data, dtype=np.uint8)  # same memory layout as the image
    for k, organ in enumerate(organs, start=1):
        mask = None
        for path in organ_mask_paths(case, organ):  # a merged class is the union of its parts
            part = _check_mask(read_nifti_ras(path), image, case)
            mask = part if mask is None else (mask | part)
        if np.logical_and(mask, label).any():
            taken = label[mask]
            counts = np.bincount(taken, minlength=k)
            detail = ", ".join(f"{organs[j - 1]}: {int(counts[j])}" for j in range(1, k) if counts[j])
            log.warning(
                "case %s: %d voxels of %r overlap earlier organs (%s); the later organ %r wins",
                case.case_id, int(np.count_nonzero(taken)), organ, detail, organ,
            )
        np.copyto(label, np.uint8(k), where=mask)
    return label


def load_case(case: SourceCase, organs: Sequence[str]) -> LoadedCase:
    """Decode a case: float32 image and merged label map in RAS voxel order, plus the source geometry."""
    image = read_nifti_ras(case.image_path, dtype=np.float32)
    return loaded_case(case, image, merge_organ_masks(case, organs, image))


ADAPTER = LayoutAdapter("totalseg", "TotalSegmentator layout: <case>/{ct,mri}.nii.gz + <case>/segmentations/"
                        "<organ>.nii.gz + meta.csv", list_cases, load_case, check_case)
