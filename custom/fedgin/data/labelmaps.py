"""Shared helpers for layouts that ship one integer label map per case (AMOS, WHS, MSD, generic).

Such a layout gives, per case, an image NIfTI and a label NIfTI whose voxel values are dataset-specific ids. The
adapter supplies a *value table* ``{class name: label values}`` (e.g. AMOS ``{"liver": {6}, "kidneys": {2, 3}}``)
and a check of the values present in each file; this module does the rest the same way for every layout:

* the label file must lie on the image's grid: the same shape and the same affine within
  :data:`AFFINE_TOLERANCE_MM`, compared after both are put in RAS voxel order (so a label stored in another voxel
  order of the same grid, e.g. LPS, is accepted);
* label values must be integers (any dtype: float files holding whole numbers are accepted);
* requested class ``k`` (1-based, in request order) gets label id ``k``; values of classes that are not requested
  become background (0). Two requested classes may not share a label value (e.g. ``kidneys`` and ``kidney_left``):
  that is an error, not a silent "later wins".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgin.data.errors import LayoutError
from fedgin.data.nifti import RasVolume, open_nifti, ras_geometry, read_nifti_ras
from fedgin.data.source import LayoutAdapter, LoadedCase, SourceCase, broken_link

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "NIFTI_SUFFIXES",
    "ValueTable",
    "nifti_stem",
    "is_hidden",
    "format_values",
    "class_values",
    "check_label_grid",
    "check_pair_headers",
    "read_label_values",
    "merge_label_values",
    "load_labelled_nifti",
    "loaded_case",
    "reject_unknown_values",
    "read_json_file",
    "labelled_nifti_adapter",
]

AFFINE_TOLERANCE_MM = 1e-3
NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: class name -> the label values that make up the class
ValueTable = Mapping[str, frozenset[int]]


def nifti_stem(name: str) -> str | None:
    """The file name without ``.nii.gz`` / ``.nii``, or ``None`` for any other file."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_hidden(name: str) -> bool:
    """Hidden files and macOS resource forks (``._la_029.nii.gz`` in the MSD tarballs): never data."""
    return name.startswith(".")


def read_json_file(path: Path, what: str, missing: str) -> Any:
    """The JSON value in ``path`` (a ``dataset.json``, a label map; UTF-8, a BOM allowed).

    Raises:
        LayoutError: a dangling link (naming its target), no file (``"<path>: <missing>"``), or a file that cannot
            be read or parsed (``"<path>: cannot read <what> (<reason>)"``).
    """
    if not path.is_file():
        raise LayoutError(broken_link(path) or f"{path}: {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{path}: cannot read {what} ({e})") from e


def format_values(values: Iterable[float], limit: int = 12) -> str:
    """``[1, 2, 421]`` for a message; at most ``limit`` values, then ``...``."""
    vals = sorted(values)
    shown = [int(v) if float(v).is_integer() else float(v) for v in vals[:limit]]
    return f"{shown}{' ...' if len(vals) > limit else ''}"


def class_values(organs: Sequence[str], table: ValueTable, *, source: str) -> list[frozenset[int]]:
    """The label values of each requested class, in request order.

    Args:
        organs: requested class names.
        table: what the dataset annotates, ``{name: values}``.
        source: the dataset named in messages (e.g. ``"AMOS22"`` or a file).

    Raises:
        LayoutError: a class the dataset does not annotate (the message lists those it does), or two requested
            classes that share a label value.
    """
    out: list[frozenset[int]] = []
    for organ in organs:
        if organ not in table:
            raise LayoutError(
                f"{source}: class {organ!r} is not annotated in this dataset (annotated: {', '.join(table)})"
            )
        out.append(frozenset(table[organ]))
    for a in range(len(organs)):
        for b in range(a + 1, len(organs)):
            shared = out[a] & out[b]
            if shared:
                raise LayoutError(
                    f"{source}: classes {organs[a]!r} and {organs[b]!r} share label values {format_values(shared)}; "
                    f"a voxel can have one class only, request them in separate tasks"
                )
    return out


def check_label_grid(case_id: str, label_path: Path, label_shape: Sequence[int], label_affine: np.ndarray,
                     image_path: Path, image_shape: Sequence[int], image_affine: np.ndarray,
                     kind: str = "label") -> None:
    """Shapes and affines given in RAS voxel order; the error names the ``kind`` of file (label, mask) and the case."""
    if tuple(label_shape) != tuple(image_shape):
        raise LayoutError(
            f"{label_path}: case {case_id!r}: {kind} shape {tuple(label_shape)} differs from its image "
            f"{image_path.name} shape {tuple(image_shape)} (both in RAS voxel order)"
        )
    diff = float(np.abs(np.asarray(label_affine) - np.asarray(image_affine)).max())
    if diff > AFFINE_TOLERANCE_MM:
        raise LayoutError(
            f"{label_path}: case {case_id!r}: {kind} affine differs from its image {image_path.name} by up to "
            f"{diff:.4g} mm (tolerance {AFFINE_TOLERANCE_MM} mm)\n{kind}:\n{np.asarray(label_affine)}\n"
            f"image:\n{np.asarray(image_affine)}"
        )


def check_pair_headers(case: SourceCase) -> None:
    """Cheap pre-flight check from the headers only: both files readable and 3-D, the label on the image's grid."""
    if case.label_path is None:
        raise LayoutError(f"{case.image_path}: case {case.case_id!r} has no label file")
    img, shape = open_nifti(case.image_path)
    lab, lab_shape = open_nifti(case.label_path)
    image_shape, image_affine = ras_geometry(shape, img.affine)
    label_shape, label_affine = ras_geometry(lab_shape, lab.affine)
    check_label_grid(case.case_id, case.label_path, label_shape, label_affine, case.image_path, image_shape,
                     image_affine)


def read_label_values(case: SourceCase, image: RasVolume) -> tuple[np.ndarray, tuple[int, ...]]:
    """Read a case's label file in RAS voxel order, check it against the image grid, return it and its values.

    Returns:
        (label array in RAS voxel order, in the file's dtype; the sorted distinct values as ints).

    Raises:
        LayoutError: no label file, a grid mismatch, or values that are not whole numbers.
        NiftiError: the label file is missing, unreadable or not 3-D.
    """
    if case.label_path is None:
        raise LayoutError(f"{case.image_path}: case {case.case_id!r} has no label file")
    label = read_nifti_ras(case.label_path)
    check_label_grid(case.case_id, case.label_path, label.data.shape, label.affine, image.path, image.data.shape,
                     image.affine)
    data = label.data
    if data.dtype == np.bool_:
        data = data.view(np.uint8)
    uniq = np.unique(data)
    if not np.issubdtype(uniq.dtype, np.integer):
        bad = uniq[~np.isfinite(uniq) | (uniq != np.round(uniq))]
        if bad.size:
            raise LayoutError(
                f"{case.label_path}: case {case.case_id!r}: label values must be whole numbers, found "
                f"{format_values(bad)}"
            )
    return data, tuple(int(v) for v in uniq)


def merge_label_values(data: np.ndarray, value_sets: Sequence[frozenset[int]]) -> np.ndarray:
    """uint8 label map: voxels whose value is in ``value_sets[k-1]`` get id ``k``, everything else 0.

    ``value_sets`` must be disjoint (see :func:`class_values`).
    """
    if len(value_sets) > 255:
        raise LayoutError(f"{len(value_sets)} classes requested; the uint8 label map holds at most 255")
    label = np.zeros(data.shape, dtype=np.uint8)
    for k, values in enumerate(value_sets, start=1):
        if values:
            np.copyto(label, np.uint8(k), where=np.isin(data, sorted(values)))
    return label


def load_labelled_nifti(
    case: SourceCase,
    organs: Sequence[str],
    table_for: Callable[[SourceCase, tuple[int, ...]], ValueTable],
) -> LoadedCase:
    """Decode an image + integer label-map pair into the canonical form (RAS voxel order, ids 1..K).

    Args:
        case: the case (``image_path`` and ``label_path`` set).
        organs: requested class names; id ``k`` is ``organs[k-1]``.
        table_for: the layout's check of the label values present in this file (sorted ints). It raises
            ``LayoutError`` naming the file and the offending values, or returns the ``{name: values}`` table that
            applies to the file (e.g. raw or remapped heart values).
    """
    image = read_nifti_ras(case.image_path, dtype=np.float32)
    data, present = read_label_values(case, image)
    table = table_for(case, present)
    value_sets = class_values(organs, table, source=str(case.label_path))
    return loaded_case(case, image, merge_label_values(data, value_sets))


def loaded_case(case: SourceCase, image: RasVolume, label: np.ndarray) -> LoadedCase:
    """The canonical case from ``image`` as ``read_nifti_ras`` returns it (RAS data, affine, source geometry) and
    its uint8 ``label`` (same shape, ids 1..K)."""
    return LoadedCase(
        case_id=case.case_id,
        image=image.data,
        label=label,
        affine=image.affine,
        source_image=case.image_path,
        source_shape=image.source_shape,
        source_affine=image.source_affine,
    )


def reject_unknown_values(case: SourceCase, present: tuple[int, ...]) -> None:
    """Raise ``LayoutError`` naming the label file when ``present`` (sorted ints) holds ids that are not labels of
    the dataset's ``dataset.json`` (``case.extra["known_values"]``, read from ``case.extra["dataset_json"]``)."""
    unknown = sorted(set(present) - set(case.extra["known_values"]))
    if unknown:
        raise LayoutError(
            f"{case.label_path}: case {case.case_id!r}: label values {format_values(unknown)} are not labels of "
            f"{case.extra['dataset_json']} (known ids: {format_values(case.extra['known_values'])})"
        )


def labelled_nifti_adapter(
    name: str,
    description: str,
    list_cases: Callable[..., list[SourceCase]],
    table_for: Callable[[SourceCase, tuple[int, ...]], ValueTable],
    classes: Callable[[SourceCase], ValueTable],
    source: Callable[[SourceCase], str],
    options: Mapping[str, str] | None = None,
) -> LayoutAdapter:
    """The adapter of a layout of image + integer label-map NIfTI pairs. The layout brings what is its own: how to
    list its cases, ``table_for`` (the check of the values found in one label file, see :func:`load_labelled_nifti`)
    and where its class table comes from (``classes(case)``, called ``source(case)`` in errors). Shared: the
    cheap check (requested classes known, label on the image's grid; headers only) and the decoding (float32
    image, label ids 1..K in ``organs`` order, RAS voxel order)."""

    def check_case(case: SourceCase, organs: Sequence[str]) -> None:
        class_values(organs, classes(case), source=source(case))
        check_pair_headers(case)

    def load_case(case: SourceCase, organs: Sequence[str]) -> LoadedCase:
        return load_labelled_nifti(case, organs, table_for)

    return LayoutAdapter(name=name, description=description, list_cases=list_cases, load_case=load_case,
                         check_case=check_case, options=dict(options or {}))
