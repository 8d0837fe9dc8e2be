"""The AMOS22 layout (Ji et al., NeurIPS 2022; Zenodo 7262581, ``amos22.zip``): FedGIN's unseen test set.

Layout (``--input`` is the ``amos22`` folder)::

    dataset.json                    required; its "labels" ({"0": "background", "1": "spleen", ...}) are checked
    imagesTr/amos_XXXX.nii.gz       + labelsTr/amos_XXXX.nii.gz    (the dataset's training part)
    imagesVa/amos_XXXX.nii.gz       + labelsVa/amos_XXXX.nii.gz    (the dataset's validation part)
    imagesTs/amos_XXXX.nii.gz       no labels: skipped (counted in a log message)

Rules applied here:

* Modality from the 4-digit id (the AMOS readme): id < 500 is CT, id >= 500 is MRI. ``list_cases(root, "ct")``
  returns only the CT cases, ``"mri"`` only the MRI ones. The case id is the file stem (``amos_0001``).
* Every image of ``imagesTr``/``imagesVa`` needs its label of the same name in ``labelsTr``/``labelsVa`` and the
  other way round; a missing partner is a listing problem of that case (``SourceCase.problem``: an error naming the
  file, or skipped by ``prepare_site(skip_bad_cases=True)``); one id in both parts, or twice in one folder, is an
  error. Names starting with "." are ignored; other files that are not ``amos_<4 digits>.nii[.gz]`` are ignored with
  a warning. A file that is a dangling symbolic link is listed and refused when read (naming the missing target);
  a dangling ``dataset.json`` or part folder is an error.
* Label map (AMOS ids -> our class names)::

      spleen 1, kidney_right 2, kidney_left 3, gallbladder 4, liver 6, pancreas 10, kidneys {2, 3}

  The other AMOS structures (esophagus, stomach, aorta, IVC, adrenal glands, duodenum, bladder, prostate/uterus)
  become background. ``dataset.json`` must name the six ids as AMOS does ("spleen", "right kidney", "left kidney",
  "gall bladder", "liver", "pancreas", compared without case, spaces or underscores), so that a relabelled copy is
  not read with the wrong map. Every value in a label file must be an id listed in ``dataset.json``'s labels;
  anything else is an error naming the file and the values.

Split (option ``split``), decided because AMOS plays the role of FedGIN's *unseen test set*:

* ``"test"`` (default): every labelled case (``Tr`` and ``Va``) goes to the ``test`` split; training and validation
  stay empty. ``fedgin evaluate --split test`` (its default) then scores a model on all of AMOS.
* ``"dataset"``: the dataset's own parts are kept, ``Tr`` -> ``training``, ``Va`` -> ``validation`` (``test``
  stays empty, as the AMOS test labels are not public), for training on AMOS.
* ``"seeded"``: the parts are ignored and ``prepare_site`` draws its seeded split by case.

``imagesTs`` is never used (no labels).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import is_hidden, labelled_nifti_adapter, nifti_stem, read_json_file, reject_unknown_values
from fedgin.data.source import SourceCase, broken_link, finish_listing, start_listing

__all__ = [
    "AMOS_VALUES",
    "AMOS_NAMES",
    "MRI_MIN_ID",
    "PARTS",
    "SPLIT_OPTIONS",
    "read_dataset_labels",
    "list_cases",
    "check_case",
    "load_case",
    "ADAPTER",
]

log = logging.getLogger(__name__)

#: our class name -> AMOS label ids
AMOS_VALUES: Mapping[str, frozenset[int]] = {
    "liver": frozenset({6}),
    "spleen": frozenset({1}),
    "kidney_right": frozenset({2}),
    "kidney_left": frozenset({3}),
    "gallbladder": frozenset({4}),
    "pancreas": frozenset({10}),
    "kidneys": frozenset({2, 3}),
}
#: AMOS id -> its name in dataset.json (normalised: lower case, letters only)
AMOS_NAMES = {1: "spleen", 2: "rightkidney", 3: "leftkidney", 4: "gallbladder", 6: "liver", 10: "pancreas"}
#: ids from this value up are MRI
MRI_MIN_ID = 500
#: labelled parts: (image folder, label folder, split name of the "dataset" option)
PARTS = (("imagesTr", "labelsTr", "training"), ("imagesVa", "labelsVa", "validation"))
SPLIT_OPTIONS = ("test", "dataset", "seeded")
_NAME = re.compile(r"^amos_(\d{4})$")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def read_dataset_labels(root: Path) -> dict[int, str]:
    """``{id: name}`` from ``<root>/dataset.json``, checked against the AMOS ids this adapter uses.

    Raises:
        LayoutError: the file is missing or unreadable, has no ``labels`` object, a non-integer id, or an id of the
            map above whose name is not the AMOS one.
    """
    path = root / "dataset.json"
    meta = read_json_file(path, "dataset.json", "AMOS dataset.json not found (give the amos22 folder as input)")
    raw = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise LayoutError(f"{path}: no 'labels' object (expected {{\"0\": \"background\", \"1\": \"spleen\", ...}})")
    labels: dict[int, str] = {}
    for key, name in raw.items():
        try:
            labels[int(key)] = str(name)
        except ValueError:
            raise LayoutError(f"{path}: label id {key!r} is not an integer") from None
    for value, expected in AMOS_NAMES.items():
        if value not in labels:
            raise LayoutError(f"{path}: label id {value} ({expected}) is missing; this is not the AMOS22 label set")
        if _norm(labels[value]) != expected:
            raise LayoutError(
                f"{path}: label id {value} is {labels[value]!r}, AMOS22 has {expected!r} there; "
                f"this file does not follow the AMOS22 label set"
            )
    return labels


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the AMOS-named NIfTI files of a folder (others skipped)."""
    out: dict[str, Path] = {}
    if broken_link(folder):
        raise LayoutError(broken_link(folder))
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if is_hidden(p.name) or p.is_dir():  # a dangling link is kept: reading it names the missing target
            continue
        stem = nifti_stem(p.name)
        if stem is None or not _NAME.match(stem):
            log.warning("%s: not an AMOS file name (amos_XXXX.nii.gz), ignored", p)
            continue
        if stem in out:
            raise LayoutError(f"{folder}: case {stem!r} is there twice ({out[stem].name} and {p.name})")
        out[stem] = p
    return out


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """The labelled AMOS cases of one modality, sorted by id, with the split chosen by ``options["split"]``.

    An image without its label (or the reverse) is a case with a ``problem``; with ``strict`` it raises.

    Raises:
        LayoutError: unknown modality or split option, a missing/bad ``dataset.json``, no labelled part, one id in
            both ``Tr`` and ``Va``, or (``strict``) a case with a listing problem.
    """
    root, options = start_listing("amos", root, modality, options, declared=["split"])
    split_rule = options.get("split", "test")
    if split_rule not in SPLIT_OPTIONS:
        raise LayoutError(f"amos: unknown split option {split_rule!r}; expected one of {', '.join(SPLIT_OPTIONS)}")
    labels = read_dataset_labels(root)
    known = frozenset(labels)
    if not any((root / images).is_dir() for images, _, _ in PARTS):
        raise LayoutError(f"{root}: neither imagesTr/ nor imagesVa/ found (AMOS22 layout)")
    seen: dict[str, Path] = {}
    cases: list[SourceCase] = []
    for images_dir, labels_dir, part_split in PARTS:
        images = _nifti_files(root / images_dir)
        label_files = _nifti_files(root / labels_dir)
        for stem in sorted(set(images) | set(label_files)):
            image_path = images.get(stem, root / images_dir / f"{stem}.nii.gz")
            label_path = label_files.get(stem, root / labels_dir / image_path.name)
            problem = None
            if stem not in images:
                problem = f"{label_path}: label without an image (expected {image_path})"
            elif stem not in label_files:
                problem = (f"{image_path}: no label file {label_path} "
                           f"(every {images_dir} image needs one in {labels_dir})")
            if stem in seen:
                raise LayoutError(f"case {stem!r} is in two parts: {seen[stem]} and {image_path}")
            seen[stem] = image_path
            case_modality = "mri" if int(_NAME.match(stem).group(1)) >= MRI_MIN_ID else "ct"  # type: ignore[union-attr]
            if case_modality != modality:
                continue
            split = {"test": "test", "dataset": part_split, "seeded": None}[split_rule]
            cases.append(SourceCase(
                case_id=stem, modality=modality, image_path=image_path, folder=image_path.parent, split=split,
                label_path=label_path, extra={"known_values": known, "dataset_json": root / "dataset.json"},
                problem=problem,
            ))
    n_test = len(_nifti_files(root / "imagesTs"))
    if n_test:
        log.info("%s: %d unlabelled imagesTs cases skipped (AMOS test labels are not public)", root, n_test)
    return finish_listing(cases, strict)


def _table_for(case: SourceCase, present: tuple[int, ...]) -> Mapping[str, frozenset[int]]:
    reject_unknown_values(case, present)
    return AMOS_VALUES


ADAPTER = labelled_nifti_adapter(
    "amos",
    "AMOS22: dataset.json + imagesTr/labelsTr + imagesVa/labelsVa, amos_XXXX.nii.gz (id < 500 CT)",
    list_cases,
    _table_for,
    classes=lambda case: AMOS_VALUES,
    source=lambda case: "AMOS22",
    options={"split": "test (default: all labelled cases are test) | dataset (Tr->training, Va->validation) | seeded"},
)

check_case = ADAPTER.check_case  # requested classes known, label on the image's grid (headers only)
load_case = ADAPTER.load_case  # float32 image, label ids 1..K (``organs`` order), RAS voxel order
