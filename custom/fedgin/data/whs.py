"""The whole-heart layout of MM-WHS 2017 and the CARE WHS challenges (CT and MRI).

Layout (``--input`` is any folder; the files may lie in it directly or in sub-folders at any depth)::

    ct_train_1001_image.nii.gz   ct_train_1001_label.nii.gz
    mr_train_1001_image.nii.gz   mr_train_1001_label.nii.gz
    ct_test_2001_image.nii.gz    ct_test_2001_label.nii.gz      (test names are accepted when labelled)

Rules applied here:

* A file is ``<ct|mr>_<rest>_<image|label>.nii[.gz]``; the case id is ``<ct|mr>_<rest>`` (``ct_train_1001``) and
  the prefix gives the modality (``ct`` -> ``ct``, ``mr`` -> ``mri``). Names starting with "." and other files are
  ignored; linked sub-folders are followed (each real folder once). One case id found twice (e.g. in two
  sub-folders) is an error naming both files. A file that is a dangling symbolic link is listed and refused when
  read (naming the missing target).
* An image without a label (unlabelled test data) is skipped with a warning; a label without an image is a listing
  problem of that case (``SourceCase.problem``: an error naming the file, or skipped by
  ``prepare_site(skip_bad_cases=True)``).
* Classes (``fedgin.data.labels``): ``myo la lv ra rv ao pa`` and the binary ``heart`` (union of the seven).
* Value scheme, detected **per label file** from its distinct values: *raw* when they all lie in
  ``{0, 205, 420, 500, 550, 600, 820, 850}``, *remapped* when they all lie in ``{0, 1, ..., 7}`` (1 = myo ... 7 = pa).
  Anything else (a stray 421, a mix of both schemes, a negative value) is an error naming the file and the values
  that fit neither scheme: an unknown value is never mapped silently (not to background, not to the nearest class).
* Label files must lie on the image's grid (shape and affine in RAS voxel order; a file stored in LPS voxel order is
  reoriented like its image).

Split: none is defined by the files (the labelled public data is the training part), so ``prepare_site`` draws its
seeded split by case; ``test`` in a file name does not put the case in the test split.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import format_values, is_hidden, labelled_nifti_adapter, nifti_stem
from fedgin.data.labels import HEART_CLASS_IDS, HEART_LABEL_NAMES, HEART_RAW_VALUES, heart_values
from fedgin.data.source import SourceCase, finish_listing, start_listing

__all__ = ["RAW_VALUES", "REMAPPED_VALUES", "detect_scheme", "list_cases", "check_case", "load_case", "ADAPTER"]

log = logging.getLogger(__name__)

RAW_VALUES = frozenset(HEART_RAW_VALUES.values())
REMAPPED_VALUES = frozenset(HEART_CLASS_IDS.values())
_PREFIX = {"ct": "ct", "mr": "mri"}
_NAME = re.compile(r"^(?P<prefix>ct|mr)_(?P<rest>.+)_(?P<kind>image|label)$", re.IGNORECASE)


def detect_scheme(values: Sequence[int], where: str) -> str:
    """``"raw"`` or ``"remapped"`` from the distinct values of one label file.

    A file holding only background counts as ``"remapped"`` (it has no class either way).

    Raises:
        LayoutError: the values fit neither scheme; the message names ``where`` and the offending values.
    """
    fg = set(values) - {0}
    if fg <= REMAPPED_VALUES:
        return "remapped"
    if fg <= RAW_VALUES:
        return "raw"
    not_raw, not_remapped = fg - RAW_VALUES, fg - REMAPPED_VALUES
    if not_raw and not_remapped and not (not_raw & not_remapped):
        detail = (f"a mix of raw values {format_values(fg & RAW_VALUES)} and remapped ids "
                  f"{format_values(fg & REMAPPED_VALUES)}")
    else:
        detail = f"unknown values {format_values(not_raw & not_remapped)}"
    raise LayoutError(
        f"{where}: label values {format_values(sorted(set(values)))} are neither raw MM-WHS values "
        f"{format_values(RAW_VALUES)} nor remapped ids 1..7: {detail}"
    )


def _files(root: Path) -> list[Path]:
    """Every file under ``root``, sorted, following linked folders (each real folder once); names starting with "."
    skipped. Dangling links are kept (reading them names the missing target)."""
    out, seen = [], set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        subfolders[:] = [] if real in seen else [d for d in subfolders if not is_hidden(d)]
        if real not in seen:
            seen.add(real)
            out += [Path(folder) / f for f in files if not is_hidden(f)]
    return sorted(out)


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """The labelled WHS cases of one modality under ``root`` (searched recursively), sorted by case id.

    A label file without its image makes a case with a ``problem``; with ``strict`` it raises.

    Raises:
        LayoutError: options given (the layout has none), unknown modality, missing folder, a case id found twice,
            or (``strict``) a label file without its image.
    """
    root, _ = start_listing("whs", root, modality, options)
    found: dict[str, dict[str, Path]] = {}
    for p in _files(root):
        stem = nifti_stem(p.name)
        m = _NAME.match(stem) if stem else None
        if m is None:
            continue
        case_id = f"{m['prefix'].lower()}_{m['rest']}"
        kind = m["kind"].lower()
        entry = found.setdefault(case_id, {})
        if kind in entry:
            raise LayoutError(f"case {case_id!r}: two {kind} files, {entry[kind]} and {p}")
        entry[kind] = p
    cases: list[SourceCase] = []
    for case_id, files in sorted(found.items()):
        if _PREFIX[case_id[:2]] != modality:
            continue
        problem = None
        if "image" not in files:
            problem = f"{files['label']}: label without an image ({case_id}_image.nii.gz not found)"
        elif "label" not in files:
            log.warning("%s: no label file, case %s skipped", files["image"], case_id)
            continue
        image = files.get("image", files["label"].with_name(f"{case_id}_image.nii.gz"))
        cases.append(SourceCase(case_id=case_id, modality=modality, image_path=image, folder=image.parent,
                                label_path=files["label"], problem=problem))
    return finish_listing(cases, strict)


def _table_for(case: SourceCase, present: tuple[int, ...]) -> Mapping[str, frozenset[int]]:
    scheme = detect_scheme(present, f"{case.label_path}: case {case.case_id!r}")
    log.debug("%s: %s label values", case.label_path, scheme)
    return heart_values(raw=scheme == "raw")


ADAPTER = labelled_nifti_adapter(
    "whs", f"MM-WHS/CARE whole heart: <ct|mr>_*_image.nii.gz + _label.nii.gz; classes {', '.join(HEART_LABEL_NAMES)}",
    list_cases, _table_for, classes=lambda case: heart_values(raw=True),
    source=lambda case: "whole heart (MM-WHS/CARE)")
check_case = ADAPTER.check_case  # requested classes are heart classes, label on the image's grid (headers only)
load_case = ADAPTER.load_case  # float32 image, label ids 1..K (``organs`` order), RAS voxel order
