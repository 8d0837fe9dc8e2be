"""The Medical Segmentation Decathlon layout (Antonelli et al., Nat Commun 2022): Task02, Task03, Task07, Task09.

Layout (``--input`` is one task folder, e.g. ``Task03_Liver``)::

    dataset.json     {"name": "Liver", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", ...},
                      "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}, ...],
                      "test": ["./imagesTs/liver_132.nii.gz", ...]}
    imagesTr/  labelsTr/  imagesTs/

Rules applied here:

* The task comes from ``dataset.json``'s ``name`` and from the folder name ``TaskNN_...``; when both are present
  they must agree. ``dataset.json``'s ``labels`` must hold the task's ids with the organ's name at id 1 (checked, so
  that another task is not read with the wrong map).
* Label map (MSD values -> our class names; tumour merged into its organ)::

      Task02_Heart     (name LeftAtrium)  MRI   {1} -> la   (the left atrium of fedgin.data.labels' heart classes)
      Task03_Liver                        CT    {1 liver, 2 cancer} -> liver
      Task07_Pancreas                     CT    {1 pancreas, 2 cancer} -> pancreas
      Task09_Spleen                       CT    {1} -> spleen

  Requesting any other class is an error naming the task and what it annotates. Every value of a label file must
  be an id of ``dataset.json``'s labels; anything else is an error naming the file and the values.
* Modality from ``dataset.json``'s ``modality`` (one channel, ``CT`` -> ``ct``, ``MRI``/``MR`` -> ``mri``); asking
  for the other modality lists no case (with a warning).
* Cases are the ``training`` entries of ``dataset.json`` (paths relative to the task folder); without that list,
  the ``imagesTr``/``labelsTr`` pairs of the same name. Names starting with "." (the macOS resource forks
  ``._la_029.nii.gz`` of the MSD tarballs) are skipped either way. The case id is the image file's stem (one id
  twice is an error). ``imagesTs`` has no labels and is not used.
* Nothing listed is dropped: a ``training`` entry whose image or label is missing, an ``imagesTr`` image without
  its label (or a ``labelsTr`` label without its image) is a case with a listing problem (``SourceCase.problem``:
  an error naming the file, or skipped by ``prepare_site(skip_bad_cases=True)``). A file that is a dangling
  symbolic link is listed and refused when read, naming the missing target. ``imagesTr`` images that the
  ``training`` list does not name are not used, with a warning.

Split: MSD defines none for the labelled cases, so ``prepare_site`` draws its seeded split by case.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgin.data.errors import LayoutError
from fedgin.data.labelmaps import is_hidden, labelled_nifti_adapter, nifti_stem, read_json_file, reject_unknown_values
from fedgin.data.source import SourceCase, broken_link, finish_listing, present, start_listing

__all__ = ["MsdTask", "TASKS", "detect_task", "list_cases", "check_case", "load_case", "ADAPTER"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MsdTask:
    """One supported decathlon task."""

    number: str  # "03"
    folder: str  # "Task03_Liver"
    name: str  # dataset.json "name", normalised (lower case, letters only)
    modality: str  # "ct" / "mri"
    label_names: Mapping[int, str]  # id -> normalised name, as in dataset.json
    classes: Mapping[str, frozenset[int]]  # our class name -> MSD values


TASKS: dict[str, MsdTask] = {
    t.number: t
    for t in (
        MsdTask("02", "Task02_Heart", "leftatrium", "mri", {0: "background", 1: "leftatrium"}, {"la": frozenset({1})}),
        MsdTask("03", "Task03_Liver", "liver", "ct", {0: "background", 1: "liver", 2: "cancer"},
                {"liver": frozenset({1, 2})}),
        MsdTask("07", "Task07_Pancreas", "pancreas", "ct", {0: "background", 1: "pancreas", 2: "cancer"},
                {"pancreas": frozenset({1, 2})}),
        MsdTask("09", "Task09_Spleen", "spleen", "ct", {0: "background", 1: "spleen"}, {"spleen": frozenset({1})}),
    )
}
_MODALITY = {"ct": "ct", "mri": "mri", "mr": "mri"}
_FOLDER = re.compile(r"^Task(\d{2})_", re.IGNORECASE)


def _norm(name: object) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def _supported() -> str:
    return ", ".join(t.folder for t in TASKS.values())


def _read_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if broken_link(path):
        raise LayoutError(f"{broken_link(path)} (the task's dataset.json)")
    if not path.is_file():
        hint = ""
        if root.is_dir():
            tasks = sorted(p.name for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name))
            if tasks:
                hint = f"; this folder holds task folders ({', '.join(tasks)}): give one of them as input"
        raise LayoutError(f"{path}: MSD dataset.json not found{hint}")
    meta = read_json_file(path, "dataset.json", "MSD dataset.json not found")
    if not isinstance(meta, dict):
        raise LayoutError(f"{path}: expected a JSON object")
    return meta


def detect_task(root: Path, meta: Mapping[str, Any]) -> tuple[MsdTask, str]:
    """The task of a folder (from ``dataset.json`` name and folder name) and its modality (``ct``/``mri``).

    Raises:
        LayoutError: unsupported or contradicting task, labels that are not the task's, or a bad ``modality``.
    """
    path = root / "dataset.json"
    by_name = next((t for t in TASKS.values() if t.name == _norm(meta.get("name", ""))), None)
    m = _FOLDER.match(root.resolve().name)
    by_folder = TASKS.get(m.group(1)) if m else None
    if m and by_folder is None:
        raise LayoutError(f"{root}: task {root.name} is not supported (supported: {_supported()})")
    if by_name and by_folder and by_name is not by_folder:
        raise LayoutError(
            f"{path}: name {meta.get('name')!r} is {by_name.folder} but the folder is {root.name} ({by_folder.folder})"
        )
    task = by_folder or by_name
    if task is None:
        raise LayoutError(
            f"{path}: cannot tell the task (name {meta.get('name')!r}, folder {root.name!r}); supported: {_supported()}"
        )
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        raise LayoutError(f"{path}: no 'labels' object")
    try:
        got = {int(k): _norm(v) for k, v in labels.items()}
    except ValueError:
        raise LayoutError(f"{path}: label ids must be integers, got {sorted(labels)}") from None
    if set(got) != set(task.label_names) or got[1] != task.label_names[1]:
        raise LayoutError(
            f"{path}: labels {labels} are not those of {task.folder} ({dict(task.label_names)})"
        )
    modality = meta.get("modality")
    if not isinstance(modality, dict) or len(modality) != 1:
        raise LayoutError(f"{path}: expected one image channel in 'modality', got {modality!r}")
    value = _MODALITY.get(_norm(next(iter(modality.values()))))
    if value is None:
        raise LayoutError(f"{path}: modality {modality!r} is neither CT nor MRI")
    return task, value


def _resolve(root: Path, rel: object, what: str, index: int) -> Path:
    if not isinstance(rel, str) or not rel:
        raise LayoutError(f"{root / 'dataset.json'}: training[{index}] has no {what} path")
    p = Path(rel)
    return p if p.is_absolute() else root / p


#: (image, label, listing problem or None)
Pair = tuple[Path, Path, str | None]


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{name: path}`` of the NIfTI files of a folder (dangling links included, names starting with "." not)."""
    if broken_link(folder):
        raise LayoutError(broken_link(folder))
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir())
            if not is_hidden(p.name) and not p.is_dir() and nifti_stem(p.name) is not None}


def _pairs_from_json(root: Path, meta: Mapping[str, Any]) -> list[Pair]:
    entries = meta["training"]
    if not isinstance(entries, list):
        raise LayoutError(f"{root / 'dataset.json'}: 'training' is not a list")
    pairs = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise LayoutError(f"{root / 'dataset.json'}: training[{i}] is not an object with image and label")
        image, label = _resolve(root, e.get("image"), "image", i), _resolve(root, e.get("label"), "label", i)
        if is_hidden(image.name) or is_hidden(label.name):
            continue
        missing = [(p, what) for p, what in ((image, "image"), (label, "label")) if not present(p)]
        problem = (f"{missing[0][0]}: {missing[0][1]} of training[{i}] in {root / 'dataset.json'} not found"
                   if missing else None)
        pairs.append((image, label, problem))
    listed = {p[0].resolve() for p in pairs}
    unused = [p for p in _nifti_files(root / "imagesTr").values() if p.resolve() not in listed]
    if unused:
        log.warning("%s: %d imagesTr file(s) not in dataset.json's training list, not used: %s%s", root, len(unused),
                    ", ".join(p.name for p in unused[:5]), " ..." if len(unused) > 5 else "")
    return pairs


def _pairs_from_folders(root: Path) -> list[Pair]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise LayoutError(f"{root}: dataset.json has no 'training' list and there is no imagesTr/ folder")
    images, labels = _nifti_files(images_dir), _nifti_files(labels_dir)
    pairs = []
    for name in sorted(set(images) | set(labels)):
        image, label = images.get(name, images_dir / name), labels.get(name, labels_dir / name)
        problem = (None if name in images and name in labels else
                   f"{image}: no label file {label}" if name in images else
                   f"{label}: label without an image (expected {image})")
        pairs.append((image, label, problem))
    return pairs


def list_cases(root: str | Path, modality: str, options: Mapping[str, Any] | None = None, *,
               strict: bool = True) -> list[SourceCase]:
    """The labelled cases of an MSD task folder when the task's modality is ``modality`` (else none).

    A listed file that is missing makes a case with a ``problem`` (module docstring); with ``strict`` it raises.

    Raises:
        LayoutError: options given (the layout has none), unknown modality, bad ``dataset.json`` or task, one case
            id twice, or (``strict``) a case with a listing problem.
    """
    root, _ = start_listing("msd", root, modality, options)
    meta = _read_json(root)
    task, task_modality = detect_task(root, meta)
    if task_modality != modality:
        log.warning("%s: %s is %s data; no %s case", root, task.folder, task_modality, modality)
        return []
    pairs = _pairs_from_json(root, meta) if "training" in meta else _pairs_from_folders(root)
    known = frozenset(int(k) for k in meta["labels"])
    cases: dict[str, SourceCase] = {}
    for image, label, problem in pairs:
        case_id = nifti_stem(image.name) or image.name
        if case_id in cases:
            raise LayoutError(f"{root}: case {case_id!r} is listed twice ({cases[case_id].image_path} and {image})")
        cases[case_id] = SourceCase(
            case_id=case_id, modality=modality, image_path=image, folder=image.parent, label_path=label,
            extra={"task": task, "known_values": known, "dataset_json": root / "dataset.json"}, problem=problem,
        )
    return finish_listing(cases.values(), strict)


def _table_for(case: SourceCase, present: tuple[int, ...]) -> Mapping[str, frozenset[int]]:
    reject_unknown_values(case, present)
    return case.extra["task"].classes


ADAPTER = labelled_nifti_adapter(
    "msd",
    "Medical Segmentation Decathlon task folder (Task02/03/07/09): dataset.json + imagesTr/labelsTr",
    list_cases,
    _table_for,
    classes=lambda case: case.extra["task"].classes,
    source=lambda case: f"MSD {case.extra['task'].folder}",
)

check_case = ADAPTER.check_case  # requested classes known, label on the image's grid (headers only)
load_case = ADAPTER.load_case  # float32 image, label ids 1..K (``organs`` order), RAS voxel order
