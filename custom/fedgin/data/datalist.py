"""The slice-cache datalist: the one contract between ``fedgin prepare`` and everything that trains or evaluates.

``fedgin prepare`` writes, into its ``--output`` folder::

    datalist.json
    cases/<case_id>_image.npy   float32, shape (S, H, W): S axial slices of the preprocessed RAS volume,
                                 ``stack[z] == volume_ras[:, :, z]`` (H = x axis R, W = y axis A), z-scored per volume
    cases/<case_id>_label.npy   uint8,   shape (S, H, W): task label ids (0 background, 1..K in ``labels`` order)

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
      "training":   [<case>, ...],
      "validation": [<case>, ...],
      "test":       [<case>, ...]
    }

Each ``<case>``::

    {
      "case_id": "s0001", "modality": "ct",
      "image": "cases/s0001_image.npy", "label": "cases/s0001_label.npy",   # relative to the datalist's folder
      "num_slices": S,
      "spacing_mm": [sx, sy, sz],        # voxel size of the cached volume (mm)
      "affine": [[4x4]],                 # RAS voxel (i=x, j=y, k=z) -> world mm of the cached volume
      "source_image": "/abs/.../ct.nii.gz",
      "source_shape": [X, Y, Z], "source_affine": [[4x4]],   # the NIfTI as read, before reorientation
      "foreground_voxels": {"liver": n, ...}                 # per class, in the cached volume
    }

With ``affine`` and ``source_affine`` a slice prediction can be stacked back into the cached volume and then
resampled into the source geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "fedgin-slices/1"
SPLITS = ("training", "validation", "test")

__all__ = ["FORMAT", "SPLITS", "DatalistError", "load_datalist", "case_paths", "task_labels"]


class DatalistError(ValueError):
    """A datalist or one of the files it names is missing or malformed; the message names the file."""


def load_datalist(path: str | Path) -> dict[str, Any]:
    """Read and validate a datalist JSON written by ``fedgin prepare``.

    Args:
        path: the ``datalist.json`` file (or the folder holding it).

    Returns:
        The parsed dict with an extra key ``"root"`` (absolute folder of the datalist, a str).

    Raises:
        DatalistError: missing file, bad JSON, wrong format tag, missing keys, or a case whose cached files are absent.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "datalist.json"
    if not p.is_file():
        raise DatalistError(f"{p}: datalist not found (run `fedgin prepare` first)")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatalistError(f"{p}: cannot read datalist JSON: {e}") from e
    if data.get("format") != FORMAT:
        raise DatalistError(f"{p}: format is {data.get('format')!r}, expected {FORMAT!r}")
    for key in ("labels", "size_px", "modality", *SPLITS):
        if key not in data:
            raise DatalistError(f"{p}: missing key {key!r}")
    root = p.parent.resolve()
    for split in SPLITS:
        for i, case in enumerate(data[split]):
            for key in ("case_id", "image", "label", "num_slices"):
                if key not in case:
                    raise DatalistError(f"{p}: {split}[{i}] lacks key {key!r}")
            for key in ("image", "label"):
                f = root / case[key]
                if not f.is_file():
                    raise DatalistError(f"{p}: {split} case {case['case_id']!r}: {key} file {f} is missing")
    data["root"] = str(root)
    data["path"] = str(p.resolve())
    return data


def case_paths(datalist: dict[str, Any], case: dict[str, Any]) -> tuple[Path, Path]:
    """Absolute (image, label) paths of one case of a loaded datalist."""
    root = Path(datalist["root"])
    return root / case["image"], root / case["label"]


def task_labels(datalist: dict[str, Any]) -> list[str]:
    """Foreground class names in label-id order (id 1 first)."""
    labels = {int(k): v for k, v in datalist["labels"].items()}
    return [labels[i] for i in sorted(labels) if i != 0]
