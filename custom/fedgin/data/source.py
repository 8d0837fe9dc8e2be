"""What a dataset-layout adapter hands to ``prepare_site``: the generic types shared by all layouts.

A layout adapter (see ``fedgin.data.prepare.LAYOUTS``) is two functions:

* ``list_cases(input_dir, modality, options, *, strict=True) -> list[SourceCase]``: the cases of one modality,
  sorted by ``case_id``, each with its split when the dataset defines one (``None`` otherwise, then ``prepare_site``
  draws a seeded split). Every case the dataset lists or holds is returned: a case whose listing is broken (a
  folder listed in ``meta.csv`` that is missing, an image without its label, a dangling case-folder link, ...)
  carries the reason in ``SourceCase.problem``. With ``strict`` (the default) the first such case raises
  ``LayoutError`` instead; ``prepare_site`` passes ``strict=False`` so that ``skip_bad_cases`` can skip it like any
  other bad case. Files that are present but unreadable (including dangling symbolic links) are listed like good
  ones and refused by ``check_case`` / ``load_case``. ``options`` is the layout's own settings
  (``prepare_site(layout_options=...)``, e.g. the MR sequence of CHAOS or the label map of the generic layout);
  their names are declared in ``LayoutAdapter.options``, and ``prepare_site`` refuses a name the layout does not
  declare. Whatever ``load_case`` needs from the options is stored by ``list_cases`` in ``SourceCase.extra``, so
  that ``load_case`` and ``check_case`` keep two arguments;
* ``load_case(case, organs) -> LoadedCase``: the image and the merged label map (ids 1..K in ``organs`` order), both
  in RAS voxel order on the image's grid;
* optionally ``check_case(case, organs)``: a cheap pre-flight check (file presence, headers) run on all cases
  before the first one is decoded, so that a bad case late in the list fails in seconds, not after hours.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgin.data.errors import LayoutError

__all__ = ["SourceCase", "LoadedCase", "LayoutAdapter", "MODALITIES", "broken_link", "present", "start_listing",
           "finish_listing"]

MODALITIES = ("ct", "mri")


@dataclass(frozen=True)
class SourceCase:
    """One case found in a source dataset (nothing decoded yet)."""

    case_id: str
    modality: str
    image_path: Path
    folder: Path
    split: str | None = None  # "training" / "validation" / "test" when the dataset defines it
    #: the case's label file (or folder) when the layout has one per case (not used by ``totalseg``)
    label_path: Path | None = None
    #: layout-private details that ``load_case`` needs (e.g. a value map, DICOM/PNG folders); not compared
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: why a case the dataset lists cannot be used (names the file/folder), ``None`` for a case to prepare
    problem: str | None = None


def broken_link(path: str | Path) -> str | None:
    """``"<path>: is a symbolic link to <target>, which does not exist"`` for a dangling link, else ``None``."""
    p = Path(path)
    if not p.is_symlink() or p.exists():
        return None
    try:
        target = p.resolve()  # follows a chain of links to its missing end
    except (OSError, RuntimeError):  # a loop of links
        return f"{p}: is a symbolic link to {os.readlink(p)}, which loops back on itself"
    return f"{p}: is a symbolic link to {target}, which does not exist"


def present(path: str | Path) -> bool:
    """The name exists in its folder: a file, a folder, or a symbolic link (dangling or not)."""
    return os.path.lexists(path)


def start_listing(layout: str, root: str | Path, modality: str, options: Mapping[str, Any] | None,
                  declared: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """The checks every ``list_cases`` starts with, so that each layout says the same thing the same way.

    Returns:
        (``root`` as a ``Path``, a copy of ``options``: only names in ``declared``).

    Raises:
        LayoutError: an option the layout does not declare, a modality other than ``ct`` / ``mri``, or ``root``
            not a folder.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(declared))
    if unknown and not declared:
        raise LayoutError(f"the {layout} layout has no options, got {', '.join(unknown)}")
    if unknown:
        raise LayoutError(f"the {layout} layout has no option(s) {', '.join(unknown)} (its options: "
                          f"{', '.join(declared)})")
    if modality not in MODALITIES:
        raise LayoutError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: input folder not found")
    return root, options


def finish_listing(cases: Iterable[SourceCase], strict: bool) -> list[SourceCase]:
    """The cases sorted by ``case_id``; with ``strict``, the first case with a ``problem`` raises ``LayoutError``."""
    out = sorted(cases, key=lambda c: c.case_id)
    bad = [c for c in out if c.problem]
    if strict and bad:
        more = f" (and {len(bad) - 1} more case(s) with a listing problem)" if len(bad) > 1 else ""
        raise LayoutError(f"{bad[0].problem}{more}")
    return out


@dataclass(frozen=True)
class LoadedCase:
    """A decoded case in RAS voxel order.

    Attributes:
        case_id: the case's id.
        image: float32 intensities, RAS voxel order.
        label: uint8 label map on the same grid (0 background, 1..K in the requested organ order).
        affine: 4x4 voxel centre -> world mm of ``image``/``label``.
        source_image: the image file read.
        source_shape: the image's 3-D shape as stored in the file.
        source_affine: the image file's affine as stored.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    source_image: Path
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray


@dataclass(frozen=True)
class LayoutAdapter:
    """A dataset layout: how to find its cases and how to load one of them."""

    name: str
    description: str
    #: ``list_cases(input_dir, modality, options, *, strict=True)``
    list_cases: Callable[..., list[SourceCase]]
    load_case: Callable[[SourceCase, Sequence[str]], LoadedCase]
    #: optional cheap check (headers, file presence) run on every case before any case is decoded
    check_case: Callable[[SourceCase, Sequence[str]], None] | None = None
    #: the layout's options: name -> one-line help (``prepare_site`` rejects any other name)
    options: Mapping[str, str] = field(default_factory=dict, compare=False)
