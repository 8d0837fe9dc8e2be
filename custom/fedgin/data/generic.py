"""A generic layout: a folder of image/label NIfTI pairs plus a user-given label map.

Pairing rules (option ``pairing``)::

    folders:  <root>/images/<id>.nii.gz   + <root>/labels/<id>.nii.gz
    suffix:   <root>/<id>_image.nii.gz    + <root>/<id>_label.nii.gz        (flat, in <root> itself)
    auto:     (default) ``folders`` when <root>/images/ exists, else ``suffix``

``.nii`` works as well as ``.nii.gz`` (image and label may differ). Names starting with "." are ignored; other files
that cannot be an image or label (non-NIfTI files in ``images/``/``labels/``; with ``suffix``, NIfTI files in
``<root>`` named neither ``<id>_image`` nor ``<id>_label``) are ignored with a warning. An image without its label,
or a label without its image, is a listing problem of that case (``SourceCase.problem``: an error naming the file
and the expected partner, or skipped by ``prepare_site(skip_bad_cases=True)``). A file that is a dangling symbolic
link is listed and refused when read, naming the missing target. The case id is ``<id>``.

Label map (option ``label_map``, required): ``{class name: [values]}``, as a mapping or the path of a JSON file, e.g.
``{"liver": [1], "kidneys": [2, 3], "kidney_right": [2]}``. A single value may be given without the list. Values are
whole numbers other than 0 (0 is always background). Classes may share values in the map (``kidneys`` and
``kidney_right`` above), but two *requested* classes may not. Map values of classes that are not requested become
background.

Unlisted values (option ``unlisted``): a non-zero value in a label file that no class of the map lists is an error
naming the file and the values (``"error"``, default), or, only when asked explicitly with ``"background"``, it
becomes background.

Modality: the one given to ``prepare_site`` (``--modality``) applies to every case. Split: none; ``prepare_site``
draws its seeded split by case. Label files must lie on the image's grid (shape and affine in RAS voxel order).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import (NIFTI_SUFFIXES, format_values, is_hidden, labelled_nifti_adapter, nifti_stem,
                                   read_json_file)
from fedgin.data.source import SourceCase, finish_listing, start_listing

__all__ = ["PAIRINGS", "UNLISTED", "read_label_map", "list_cases", "check_case", "load_case", "ADAPTER"]

log = logging.getLogger(__name__)

PAIRINGS = ("auto", "folders", "suffix")
UNLISTED = ("error", "background")
_OPTIONS = ("label_map", "pairing", "unlisted")


def read_label_map(spec: Mapping[str, Any] | str | Path) -> dict[str, frozenset[int]]:
    """Validate a label map given as a mapping or as the path of a JSON file.

    Raises:
        LayoutError: unreadable file, not an object, an empty or ``background`` class name, a class without values,
            or a value that is not a whole number or is 0. The message names the file (when there is one).
    """
    where = "label map"
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        where = str(path)
        spec = read_json_file(path, "the label map JSON", "label map file not found")
    if not isinstance(spec, Mapping) or not spec:
        raise LayoutError(f"{where}: expected a non-empty object {{\"class\": [values], ...}}, got {spec!r}")
    out: dict[str, frozenset[int]] = {}
    for name, values in spec.items():
        if not isinstance(name, str) or not name or name == "background" or "/" in name or "\\" in name:
            raise LayoutError(f"{where}: bad class name {name!r}")
        vals = values if isinstance(values, (list, tuple)) else [values]
        if not vals:
            raise LayoutError(f"{where}: class {name!r} has no values")
        clean = set()
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                raise LayoutError(f"{where}: class {name!r}: value {v!r} is not a whole number")
            if int(v) == 0:
                raise LayoutError(f"{where}: class {name!r}: value 0 is background and cannot be a class")
            clean.add(int(v))
        out[name] = frozenset(clean)
    return out


def _files(folder: Path) -> list[Path]:
    """The entries of a folder that may be data: not folders, not named "." (dangling links included)."""
    return sorted(p for p in folder.iterdir() if not is_hidden(p.name) and not p.is_dir())


def _nifti_by_stem(folder: Path, suffix: str = "") -> dict[str, Path]:
    """``{id: path}`` of the NIfTI files named ``<id><suffix>.nii[.gz]`` in a folder."""
    out: dict[str, Path] = {}
    for p in _files(folder):
        stem = nifti_stem(p.name)
        if stem is None or not stem.endswith(suffix) or len(stem) == len(suffix):
            continue
        case_id = stem[: len(stem) - len(suffix)] if suffix else stem
        if case_id in out:
            raise LayoutError(f"{folder}: {case_id!r} is there twice ({out[case_id].name} and {p.name})")
        out[case_id] = p
    return out


def _pairs(root: Path, pairing: str) -> list[tuple[str, Path, Path, str | None]]:
    """``(id, image, label, listing problem or None)`` of every image and every label, sorted by id."""
    if pairing == "auto":
        pairing = "folders" if (root / "images").is_dir() else "suffix"
    if pairing == "folders":
        images_dir, labels_dir = root / "images", root / "labels"
        if not images_dir.is_dir():
            raise LayoutError(f"{root}: no images/ folder (pairing 'folders': images/<id>.nii.gz + labels/<id>.nii.gz)")
        images = _nifti_by_stem(images_dir)
        labels = _nifti_by_stem(labels_dir) if labels_dir.is_dir() else {}
        expected = {cid: labels_dir / f"{cid}{NIFTI_SUFFIXES[0]}" for cid in images}
        image_of = {cid: images_dir / f"{cid}{NIFTI_SUFFIXES[0]}" for cid in labels}
        ignored = [p for d in (images_dir, labels_dir) if d.is_dir() for p in _files(d) if nifti_stem(p.name) is None]
    else:
        images = _nifti_by_stem(root, "_image")
        labels = _nifti_by_stem(root, "_label")
        expected = {cid: root / f"{cid}_label{NIFTI_SUFFIXES[0]}" for cid in images}
        image_of = {cid: root / f"{cid}_image{NIFTI_SUFFIXES[0]}" for cid in labels}
        stems = [(p, nifti_stem(p.name)) for p in _files(root)]
        ignored = [p for p, stem in stems if stem and not stem.endswith(("_image", "_label"))]
    for p in ignored:
        log.warning("%s: neither an image nor a label of the generic layout (pairing %r), ignored", p, pairing)
    pairs = []
    for cid in sorted(set(images) | set(labels)):
        image, label = images.get(cid, image_of.get(cid)), labels.get(cid, expected.get(cid))
        problem = (None if cid in images and cid in labels else
                   f"{image}: no label file (expected {label}; pairing {pairing!r})" if cid in images else
                   f"{label}: label without an image (expected {image})")
        pairs.append((cid, image, label, problem))
    return pairs


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """Every image/label pair under ``root``, all with the given modality, sorted by case id.

    An unpaired image or label makes a case with a ``problem``; with ``strict`` it raises.

    Args:
        options: ``label_map`` (required), ``pairing`` (``auto``/``folders``/``suffix``), ``unlisted``
            (``error``/``background``); see the module docstring.

    Raises:
        LayoutError: a missing or bad option, unknown modality, missing folder, or (``strict``) an unpaired file.
    """
    root, options = start_listing("generic", root, modality, options, declared=_OPTIONS)
    if options.get("label_map") is None:
        raise LayoutError("the generic layout needs a label map ({\"class\": [values]}, e.g. --label-map map.json)")
    pairing = options.get("pairing") or "auto"
    unlisted = options.get("unlisted") or "error"
    if pairing not in PAIRINGS:
        raise LayoutError(f"generic: unknown pairing {pairing!r}; expected one of {', '.join(PAIRINGS)}")
    if unlisted not in UNLISTED:
        raise LayoutError(f"generic: unknown 'unlisted' policy {unlisted!r}; expected one of {', '.join(UNLISTED)}")
    label_map = read_label_map(options["label_map"])
    source = str(options["label_map"]) if isinstance(options["label_map"], (str, Path)) else "label map"
    extra = {"label_map": label_map, "unlisted": unlisted, "source": source}
    return finish_listing((
        SourceCase(case_id=cid, modality=modality, image_path=image, folder=image.parent, label_path=label,
                   extra=extra, problem=problem)
        for cid, image, label, problem in _pairs(root, pairing)), strict)


def _table_for(case: SourceCase, present: tuple[int, ...]) -> Mapping[str, frozenset[int]]:
    label_map: Mapping[str, frozenset[int]] = case.extra["label_map"]
    listed = set().union(*label_map.values())
    other = sorted(set(present) - listed - {0})
    if other:
        if case.extra["unlisted"] != "background":
            raise LayoutError(
                f"{case.label_path}: case {case.case_id!r}: label values {format_values(other)} are not in the "
                f"label map ({case.extra['source']}: {', '.join(f'{k}={sorted(v)}' for k, v in label_map.items())}); "
                f"add them to the map, or treat unlisted values as background explicitly (unlisted=background)"
            )
        log.info("%s: unlisted values %s treated as background", case.label_path, format_values(other))
    return label_map


ADAPTER = labelled_nifti_adapter(
    "generic",
    "image/label NIfTI pairs (images/<id> + labels/<id>, or <id>_image + <id>_label) + a label map",
    list_cases,
    _table_for,
    classes=lambda case: case.extra["label_map"],
    source=lambda case: case.extra["source"],
    options={
        "label_map": "required: {class: [values]} or a JSON file path",
        "pairing": "auto (default) | folders (images/<id> + labels/<id>) | suffix (<id>_image + <id>_label)",
        "unlisted": "error (default) | background: what a label value missing from the map means",
    },
)

check_case = ADAPTER.check_case  # requested classes known, label on the image's grid (headers only)
load_case = ADAPTER.load_case  # float32 image, label ids 1..K (``organs`` order), RAS voxel order
