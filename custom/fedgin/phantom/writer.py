"""Writing phantom cases in the TotalSegmentator layout, atomically, and guarding the output folder.

Layout::

    <output>/meta.csv                           ';'-separated, header ``image_id;split;modality;...``
    <output>/<case_id>/ct.nii.gz | mri.nii.gz
    <output>/<case_id>/segmentations/<organ>.nii.gz   uint8 0/1, same shape and affine as the image

Each case is written into ``<output>/.phantom-tmp-<case_id>`` and renamed into place; ``meta.csv`` is written
last (via a temporary file) so an interrupted run leaves no half-written case and no ``meta.csv``.

Output-folder policy: a folder is (re)used only if it is empty or holds nothing but what a previous phantom
run writes (a ``meta.csv`` whose ``generator`` column says ``fedgin-phantom``, case folders named
``ct0000``/``mr0000``-style holding only the image and ``segmentations/*.nii.gz``, leftover temporary
folders); that content is then deleted and replaced. Anything else (e.g. a real dataset's ``meta.csv`` or
unrelated files) raises :class:`PhantomOutputError` and nothing is touched. The heart phantom uses the same
policy with its flat MM-WHS file names (``ct_train_1001_image.nii.gz`` ...) in place of case folders.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["GENERATOR", "META_COLUMNS", "PhantomOutputError", "save_nifti", "write_case_folder", "write_meta",
           "prepare_output"]

GENERATOR = "fedgin-phantom/1"
META_COLUMNS = ("image_id", "split", "modality", "sequence", "readout", "field_strength", "phase", "fat_suppression",
                "spacing", "slice_thickness", "shape", "orientation", "noise", "noise_model", "tr_ms", "te_ms",
                "flip_deg", "bias_field", "body_scale", "seed", "generator")
CASE_ID_RE = re.compile(r"^(ct|mr)\d{4,}$")
IMAGE_NAMES = ("ct.nii.gz", "mri.nii.gz")
TMP_PREFIX = ".phantom-tmp-"


class PhantomOutputError(RuntimeError):
    """The output folder holds data the phantom did not write; the message says what was found."""


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, descrip: str = "") -> None:
    """Write ``array`` with ``affine`` as both qform and sform (code 1, scanner), units mm."""
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if descrip:
        img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    nib.save(img, str(path))


def write_case_folder(output: Path, case_id: str, image_name: str, image: np.ndarray,
                      masks: dict[str, np.ndarray], affine: np.ndarray, descrip: str = "") -> Path:
    """Write one case atomically (temporary folder, then rename); returns the final case folder."""
    tmp = output / f"{TMP_PREFIX}{case_id}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "segmentations").mkdir(parents=True)
    save_nifti(tmp / image_name, image, affine, descrip)
    for organ, mask in masks.items():
        save_nifti(tmp / "segmentations" / f"{organ}.nii.gz", mask, affine, f"fedgin phantom {organ}")
    final = output / case_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def write_meta(output: Path, rows: list[dict[str, object]],
               columns: tuple[str, ...] = META_COLUMNS) -> Path:
    """Write ``meta.csv`` (';'-separated, ``columns``, :data:`META_COLUMNS` by default) via a temporary file."""
    path = output / "meta.csv"
    tmp = output / f"{TMP_PREFIX}meta.csv"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), delimiter=";", extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k, "") for k in columns})
    os.replace(tmp, path)
    return path


def _is_phantom_case(folder: Path) -> bool:
    if not CASE_ID_RE.match(folder.name) or not folder.is_dir():
        return False
    for entry in folder.iterdir():
        if entry.name in IMAGE_NAMES and entry.is_file():
            continue
        if entry.name == "segmentations" and entry.is_dir():
            if all(f.is_file() and f.name.endswith(".nii.gz") for f in entry.iterdir()):
                continue
        return False
    return True


def _is_phantom_meta(path: Path) -> bool:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return all(str(r.get("generator") or "").startswith("fedgin-phantom") for r in rows) and \
        (not rows or "generator" in rows[0])


def prepare_output(output: Path, is_case: Callable[[Path], bool] | None = None) -> None:
    """Create ``output`` or clear a previous phantom run there (see module docstring for the policy).

    Args:
        output: the dataset folder.
        is_case: predicate recognising an entry written by the phantom for one case (default: a case folder
            of the TotalSegmentator layout); the heart phantom passes its flat MM-WHS file names.

    Raises:
        PhantomOutputError: the folder holds anything a phantom run would not have written.
    """
    if output.exists() and not output.is_dir():
        raise PhantomOutputError(f"{output}: exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    foreign, ours = [], []
    for entry in sorted(output.iterdir()):
        if entry.name == "meta.csv":
            (ours if entry.is_file() and _is_phantom_meta(entry) else foreign).append(entry)
        elif entry.name.startswith(TMP_PREFIX):
            ours.append(entry)
        elif (is_case or _is_phantom_case)(entry):
            ours.append(entry)
        else:
            foreign.append(entry)
    if foreign:
        names = ", ".join(e.name for e in foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise PhantomOutputError(
            f"{output}: refusing to write phantom cases into a folder that holds other data ({names}); "
            "a meta.csv not written by the phantom means another dataset lives here. Use an empty folder "
            "(one folder per modality/site).")
    for entry in ours:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
