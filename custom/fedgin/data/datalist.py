"""The slice-cache datalist: the one contract between ``fedgin prepare`` and everything that trains or evaluates.

``fedgin prepare`` writes, into its ``--output`` folder::

    datalist.json
    cases/<case_id>_image.npy   float32, shape (S, H, W): S axial slices of the preprocessed RAS volume,
                                 ``stack[z] == volume_ras[:, :, z]`` (H = x axis R, W = y axis A), z-scored per volume
    cases/<case_id>_label.npy   uint8,   shape (S, H, W): task label ids (0 background, 1..K in ``labels`` order)
    cases/<case_id>_source_label.nii.gz   uint8 NIfTI: the same task label ids on the source volume's own grid
                                 (RAS voxel order, its affine): what scores are computed against (``geometry="source"``)

``datalist.json`` (MONAI-style: ``training`` / ``validation`` / ``test`` lists, split by case, never by slice)::

    {
      "format": "fedgin-slices/1",
      "site": "site-ct", "modality": "ct", "layout": "totalseg", "source": "/abs/path/of/input",
      "labels": {"0": "background", "1": "liver", ...},     # task label ids -> names
      "spacing_mm": [sx, sy],          # in-plane target spacing of the cache (mm)
      "size_px": [H, W],                # in-plane size of every cached slice
      "z_rule": "keep z spacing; below 2.5 mm -> 3.0 mm",
      "normalization": "...",          # text describing the intensity normalisation
      "seed": 0,
      "layout_options": {...},         # only when the layout was given options (e.g. the CHAOS MR sequence)
      "skipped": [{"case_id", "split", "reason"}, ...],   # only with --skip-bad-cases: cases not prepared, and why
      "training":   [<case>, ...],
      "validation": [<case>, ...],
      "test":       [<case>, ...]
    }

Each ``<case>``::

    {
      "case_id": "s0001", "modality": "ct",
      "image": "cases/s0001_image.npy", "label": "cases/s0001_label.npy",   # relative to the datalist's folder
      "source_label": "cases/s0001_source_label.nii.gz",   # absent in caches made before it was kept
      "num_slices": S,
      "spacing_mm": [sx, sy, sz],        # voxel size of the cached volume (mm)
      "affine": [[4x4]],                 # RAS voxel (i=x, j=y, k=z) -> world mm of the cached volume
      "source_image": "/abs/.../ct.nii.gz",
      "source_shape": [X, Y, Z], "source_affine": [[4x4]],   # the NIfTI as read, before reorientation
      "foreground_voxels": {"liver": n, ...},                # per class, in the cached volume
      "nonfinite_repaired": {"nan": n, "posinf": n, "neginf": n}   # only when --nonfinite repair changed voxels
    }

With ``affine`` and ``source_affine`` a slice prediction can be stacked back into the cached volume and then
resampled into the source geometry.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT = "fedgin-slices/1"
SPLITS = ("training", "validation", "test")

__all__ = ["FORMAT", "SPLITS", "DatalistError", "load_datalist", "case_paths", "task_labels"]


class DatalistError(ValueError):
    """A datalist or one of the files it names is missing or malformed; the message names the file."""


def load_datalist(path: str | Path) -> dict[str, Any]:
    """Read and validate a datalist JSON written by ``fedgin prepare``.

    Checked: the format tag; the types of ``labels`` (ids 0..K, names unique), ``size_px`` (two positive
    integers), ``modality`` and each split (a list of case objects); per case ``case_id`` (text, unique across
    the splits), ``num_slices`` (a positive integer) and ``image``/``label`` (relative paths that stay inside the
    datalist's folder, no ``..`` and no absolute path, naming files that exist). Symbolic links inside the folder
    (e.g. ``cases/`` on another disk) are followed.

    Args:
        path: the ``datalist.json`` file (or the folder holding it).

    Returns:
        The parsed dict with extra keys ``"root"`` (absolute folder of the datalist) and ``"path"`` (the file).

    Raises:
        DatalistError: naming the file and the field: missing file, bad JSON, wrong format tag, a missing key or a
            value of the wrong type, a duplicate case, a path outside the folder, or a missing cached file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "datalist.json"
    if not p.is_file():
        raise DatalistError(f"{p}: datalist not found (run `fedgin prepare` first)")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatalistError(f"{p}: cannot read datalist JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DatalistError(f"{p}: format is {found!r}, expected {FORMAT!r}")
    for key in ("labels", "size_px", "modality", *SPLITS):
        if key not in data:
            raise DatalistError(f"{p}: missing key {key!r}")
    _check_header(p, data)
    root = p.parent.resolve()
    seen: dict[str, str] = {}
    for split in SPLITS:
        if not isinstance(data[split], list):
            raise DatalistError(f"{p}: {split} must be a list of cases, got {type(data[split]).__name__}")
        for i, case in enumerate(data[split]):
            _check_case(p, root, split, i, case)
            cid = case["case_id"]
            if cid in seen:
                raise DatalistError(f"{p}: case {cid!r} is listed twice ({seen[cid]} and {split}[{i}]); each case "
                                    "may appear once")
            seen[cid] = f"{split}[{i}]"
    data["root"] = str(root)
    data["path"] = str(p.resolve())
    return data


def _check_header(p: Path, data: dict[str, Any]) -> None:
    labels = data["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DatalistError(f"{p}: labels must be an object {{\"0\": \"background\", \"1\": name, ...}}")
    try:
        ids = sorted(int(k) for k in labels)
    except (TypeError, ValueError):
        raise DatalistError(f"{p}: labels: keys must be label ids 0, 1, ..., got {sorted(labels)}") from None
    if ids != list(range(len(ids))) or len(ids) < 2:
        raise DatalistError(f"{p}: labels: ids must be 0..K with K >= 1, got {ids}")
    names = list(labels.values())
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise DatalistError(f"{p}: labels: names must be unique, non-empty text, got {names}")
    size = data["size_px"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise DatalistError(f"{p}: size_px must be two positive integers [H, W], got {size!r}")
    if not isinstance(data["modality"], str):
        raise DatalistError(f"{p}: modality must be text, got {data['modality']!r}")


def _check_case(p: Path, root: Path, split: str, i: int, case: Any) -> None:
    where = f"{p}: {split}[{i}]"
    if not isinstance(case, dict):
        raise DatalistError(f"{where}: a case must be an object, got {type(case).__name__}")
    for key in ("case_id", "image", "label", "num_slices"):
        if key not in case:
            raise DatalistError(f"{where} lacks key {key!r}")
    cid = case["case_id"]
    if not isinstance(cid, str) or not cid:
        raise DatalistError(f"{where}: case_id must be non-empty text, got {cid!r}")
    n = case["num_slices"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DatalistError(f"{where} (case {cid!r}): num_slices must be a positive integer, got {n!r}")
    for key in ("image", "label", "source_label"):
        if key == "source_label" and key not in case:  # optional: caches prepared before it was kept
            continue
        rel = case[key]
        if not isinstance(rel, str) or not rel:
            raise DatalistError(f"{where} (case {cid!r}): {key} must be a relative path, got {rel!r}")
        parts = PurePosixPath(rel.replace("\\", "/")).parts
        if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute() or ".." in parts:
            raise DatalistError(f"{where} (case {cid!r}): {key} {rel!r} points outside the datalist's folder "
                                f"{root}; cached files must lie inside it (relative paths, no '..')")
        f = root / rel
        if not f.is_file():
            raise DatalistError(f"{p}: {split} case {cid!r}: {key} file {f} is missing")


def case_paths(datalist: dict[str, Any], case: dict[str, Any]) -> tuple[Path, Path]:
    """Absolute (image, label) paths of one case of a loaded datalist."""
    root = Path(datalist["root"])
    return root / case["image"], root / case["label"]


def source_label_path(datalist: dict[str, Any], case: dict[str, Any]) -> Path | None:
    """Absolute path of a case's label map in its source volume's geometry (NIfTI, RAS voxel order, task label
    ids), or ``None`` for a cache prepared before it was kept."""
    rel = case.get("source_label")
    return None if rel is None else Path(datalist["root"]) / rel


def task_labels(datalist: dict[str, Any]) -> list[str]:
    """Foreground class names in label-id order (id 1 first)."""
    labels = {int(k): v for k, v in datalist["labels"].items()}
    return [labels[i] for i in sorted(labels) if i != 0]
