"""``prepare_site``: one site's source dataset -> the slice cache + ``datalist.json`` of ``fedgin.data.datalist``.

Steps per case: the layout adapter decodes the image and maps its labels to the requested classes (RAS voxel order,
ids 1..K in request order; one module per dataset layout, registered in :data:`LAYOUTS`: ``totalseg``, ``amos``,
``whs``, ``msd``, ``chaos``, ``generic``), ``fedgin.data.preprocess`` resamples / pads / z-scores, and the volume is
written as an axial slice stack ``(S, H, W)``. Layout-specific settings (the CHAOS MR sequence, the generic label
map, the AMOS split rule) travel as ``layout_options`` to the adapter and are recorded in ``datalist.json``.

Split policy: when the dataset defines splits for every case (TotalSegmentator: the ``split`` column of
``meta.csv``; AMOS: its rule, see ``fedgin.data.amos``), they are used as they are, even if a split ends up empty (a
warning says so). Otherwise the cases (never slices) are shuffled
with ``numpy.random.default_rng(seed)`` in ``case_id`` order and cut into test, validation and training parts of
``round(n * fraction)`` cases; with 3 or more cases validation and test get at least one case each and training
keeps at least one. With 1 or 2 cases everything is training (with a warning). The split is drawn over every case
the dataset lists, bad ones included, so that skipping a bad case (below) never moves another case to another split.

Nothing dropped, doubled or silently corrupted:

* Every case the adapter lists is prepared or named in an error, including cases whose listing is broken
  (``SourceCase.problem``: a folder listed in ``meta.csv`` that is missing, an image without its label, a dangling
  link, ...). One case id twice, or two ids that differ only in letter case (their cache files would collide on a
  case-insensitive file system), or an id that cannot name a file, is refused naming both sources.
* Non-finite voxels (NaN, +-Inf) of every decoded image are refused (``nonfinite="error"``, the message names the
  file and the counts) or repaired (``"repair"``, see ``fedgin.data.finite``; the case's entry then records
  ``"nonfinite_repaired": {"nan": n, "posinf": n, "neginf": n}``). The cached slices are checked to be finite
  after preprocessing (a bug guard: ``AssertionError``).
* ``skip_bad_cases=True``: a case whose listing, check or load fails with a ``PrepareError`` is named in a warning,
  recorded in ``datalist.json`` under ``"skipped": [{"case_id", "split" (when known), "reason"}]`` (the key is
  written, possibly empty, whenever skipping is on) and the others are prepared; when no case is left it is an
  error. Without it the first bad case stops the run. Dataset-level problems (bad ``meta.csv``/``dataset.json``,
  duplicate ids, bad arguments) are never skipped.

Atomic output: everything is built in a hidden temporary folder next to ``output_dir`` and renamed into place at
the end; on any error (``PrepareError``, or an ``OSError`` while writing such as a full disk, re-raised with its
errno naming the file's place in ``output_dir``) the temporary folder is removed and ``output_dir`` is left as it was. An existing
``output_dir`` is replaced as a whole only when it holds a previous cache (``datalist.json`` and ``cases/``, nothing
else) or is empty; anything else in it is an error. An ``output_dir`` that is a symbolic link is refused (the
message gives its target): the rename would replace the link by a folder and leave the cache it points to
stale, so give the real path instead. An ``output_dir`` that is a file, or below a file, is refused too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fedgin.data import amos, chaos, generic, msd, totalseg, whs
from fedgin.data.datalist import FORMAT, SPLITS
from fedgin.data.errors import LayoutError, PrepareError
from fedgin.data.finite import NONFINITE_POLICIES, check_finite, nonfinite_summary
from fedgin.data.nifti import voxel_spacing
from fedgin.data.preprocess import Z_RULE, normalization_text, preprocess_case, to_slices
from fedgin.data.source import MODALITIES, LayoutAdapter, SourceCase, present
from fedgin.common.outputs import OutputPathError, check_output_dir

__all__ = ["LAYOUTS", "prepare_site", "split_cases"]

#: what a cache holds, for callers that reuse a cache: 2 = the slices plus each case's source label map
CACHE_REVISION = 2

log = logging.getLogger(__name__)

#: dataset layout name -> adapter (add new dataset formats here)
LAYOUTS: dict[str, LayoutAdapter] = {
    a.name: a for a in (totalseg.ADAPTER, amos.ADAPTER, whs.ADAPTER, msd.ADAPTER, chaos.ADAPTER, generic.ADAPTER)
}

_CACHE_ENTRIES = {"datalist.json", "cases"}


def split_cases(
    case_ids: Sequence[str], *, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> dict[str, list[str]]:
    """Seeded split by case: ``{"training": [...], "validation": [...], "test": [...]}`` (each sorted).

    See the module docstring for the rule; the result depends only on the set of ids and the seed.
    """
    ids = sorted(case_ids)
    n = len(ids)
    if n < 3:
        if n:
            log.warning("only %d case(s): all go to training, validation and test are empty", n)
        return {"training": ids, "validation": [], "test": []}
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    n_test = max(1, int(math.floor(n * test_fraction + 0.5)))
    n_val = max(1, int(math.floor(n * val_fraction + 0.5)))
    while n_test + n_val > n - 1:  # keep at least one training case
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    return {
        "test": sorted(order[:n_test]),
        "validation": sorted(order[n_test : n_test + n_val]),
        "training": sorted(order[n_test + n_val :]),
    }


def _check_args(
    layout: str, site: str, modality: str, organs: Sequence[str], spacing: float, size: int,
    val_fraction: float, test_fraction: float, clip_percentiles: Sequence[float] | None,
) -> None:
    if layout not in LAYOUTS:
        raise PrepareError(f"unknown layout {layout!r}; available: {', '.join(sorted(LAYOUTS))}")
    if modality not in MODALITIES:
        raise PrepareError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if not site or "/" in site or "\\" in site:
        raise PrepareError(f"bad site name {site!r}")
    if isinstance(organs, str) or not organs:
        raise PrepareError(f"organs must be a non-empty list of structure names, got {organs!r}")
    for organ in organs:
        if not isinstance(organ, str) or not organ or "/" in organ or "\\" in organ or organ == "background":
            raise PrepareError(f"bad organ name {organ!r}")
    dupes = sorted({o for o in organs if list(organs).count(o) > 1})
    if dupes:
        raise PrepareError(f"organs listed twice: {', '.join(dupes)}")
    if len(organs) > 255:
        raise PrepareError(f"{len(organs)} organs; the uint8 label cache holds at most 255")
    if not (spacing > 0 and math.isfinite(spacing)):
        raise PrepareError(f"spacing must be a positive number of mm, got {spacing}")
    if int(size) != size or size < 1:
        raise PrepareError(f"size must be a positive integer, got {size}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise PrepareError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be >= 0 and sum < 1")
    if clip_percentiles is not None:
        if len(clip_percentiles) != 2 or not (0 <= clip_percentiles[0] < clip_percentiles[1] <= 100):
            raise PrepareError(f"clip_percentiles must be (low, high) with 0 <= low < high <= 100, got {clip_percentiles}")


def _check_output(output_dir: Path, input_dir: Path) -> None:
    """Refuse an output that is a symbolic link (the cache folder is replaced as a whole, which would replace the
    link by a folder), a file, below a file (``fedgin.common.outputs.check_output_dir``), the input, or a folder with other
    files."""
    try:
        check_output_dir(output_dir, "--output")
    except OutputPathError as e:
        raise PrepareError(str(e)) from e
    if output_dir.resolve() == input_dir.resolve():
        raise PrepareError(f"{output_dir}: the output folder cannot be the input folder")
    if output_dir.exists():
        entries = {p.name for p in output_dir.iterdir()}
        if entries and not ("datalist.json" in entries and entries <= _CACHE_ENTRIES):
            raise PrepareError(
                f"{output_dir}: output folder exists and holds other files than a previous cache "
                f"({', '.join(sorted(entries - _CACHE_ENTRIES)[:5]) or 'no datalist.json'}); choose another folder"
            )


def _write_error(e: OSError, path: Path) -> OSError:
    """The ``OSError`` of a failed write (same errno and text) naming ``path``, the file's place in ``output_dir``,
    rather than the temporary folder it was written to (which is removed)."""
    return OSError(e.errno, e.strerror or str(e), str(path)) if e.errno is not None else e


def _install(tmp: Path, output_dir: Path) -> None:
    """Move the finished temporary folder into place, replacing an old cache as a whole."""
    if output_dir.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        backup.rmdir()
        os.rename(output_dir, backup)
        try:
            os.rename(tmp, output_dir)
        except BaseException:
            os.rename(backup, output_dir)
            raise
        shutil.rmtree(backup, ignore_errors=True)
        if present(backup):
            log.warning("%s: could not remove the previous cache (moved there); delete it by hand", backup)
    else:
        os.rename(tmp, output_dir)


def _check_case_ids(cases: Sequence[SourceCase], input_dir: Path) -> None:
    """Each case id once (also ignoring letter case: the cache file names must not collide) and fit for a file name."""
    seen: dict[str, SourceCase] = {}
    for case in cases:
        cid = case.case_id
        if not cid or cid in (".", "..") or "/" in cid or "\\" in cid:
            raise PrepareError(f"{case.image_path}: case id {cid!r} cannot name a cache file")
        other = seen.setdefault(cid.casefold(), case)
        if other is not case:
            how = ("twice" if other.case_id == cid else
                   f"as {other.case_id!r} and {cid!r}, which differ only in letter case (their cache files would "
                   f"collide on a case-insensitive file system)")
            raise PrepareError(f"{input_dir}: case id {cid!r} is found {how}: {other.image_path} and {case.image_path}")


def _select_cases(cases: list[SourceCase], case_splits: dict[str, str], input_dir: Path,
                  modality: str) -> list[SourceCase]:
    """The cases named by a partition, in dataset order; an unknown id or split is an error."""
    bad = sorted({s for s in case_splits.values() if s not in SPLITS})
    if bad:
        raise PrepareError(f"partition: unknown split(s) {bad}; expected {', '.join(SPLITS)}")
    found = {c.case_id for c in cases}
    missing = sorted(set(case_splits) - found)
    if missing:
        raise PrepareError(f"{input_dir}: partition names {len(missing)} {modality} case(s) not in the dataset, "
                           f"e.g. {', '.join(missing[:5])}")
    return [c for c in cases if c.case_id in case_splits]


def _json_safe(value: Any) -> Any:
    """Options as JSON: mappings and sequences kept, paths and other objects as text."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v) for v in items]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _label_counts(label: np.ndarray, k: int) -> list[int]:
    """Voxel count of each id 0..k (no int64 copy of the volume, unlike ``np.bincount``)."""
    return [int(np.count_nonzero(label == i)) for i in range(k + 1)]


def _save(tmp: Path, rel: str, array: np.ndarray, output_dir: Path) -> None:
    try:
        np.save(tmp / rel, array)
    except OSError as e:
        raise _write_error(e, output_dir / rel) from e


def _save_nifti(tmp: Path, rel: str, label: np.ndarray, affine: np.ndarray, output_dir: Path) -> None:
    """The task label map in the source volume's geometry (RAS voxel order, uint8), for scoring a prediction
    mapped back onto it (``fedgin.engine.Engine.evaluate(geometry="source")``)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(np.uint8)
    try:
        nib.save(img, str(tmp / rel))
    except OSError as e:
        raise _write_error(e, output_dir / rel) from e


def _case_entry(case: SourceCase, organs: Sequence[str], tmp: Path, adapter: LayoutAdapter, spacing: float,
                size: int, clip_percentiles: Sequence[float] | None, nonfinite: str,
                output_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    loaded = adapter.load_case(case, organs)
    reoriented = not np.allclose(loaded.affine, loaded.source_affine)
    image = check_finite(loaded.image, case.image_path, nonfinite,
                         what="image (voxel indices in RAS order)" if reoriented else "image")
    repaired = None
    if image is not loaded.image:
        raw = loaded.image
        repaired = {"nan": int(np.isnan(raw).sum()), "posinf": int(np.isposinf(raw).sum()),
                    "neginf": int(np.isneginf(raw).sum())}
    source_counts = _label_counts(loaded.label, len(organs))
    pre = preprocess_case(
        image, loaded.label, loaded.affine, spacing=spacing, size=size, clip_percentiles=clip_percentiles
    )
    counts = _label_counts(pre.label, len(organs))
    for k, organ in enumerate(organs, start=1):
        if source_counts[k] and not counts[k]:
            log.warning("case %s: organ %r (%d source voxels) is lost in the cache (cropped away?)",
                        case.case_id, organ, int(source_counts[k]))
        elif not source_counts[k]:
            log.warning("case %s: the mask of organ %r is empty", case.case_id, organ)
    image_rel = f"cases/{case.case_id}_image.npy"
    label_rel = f"cases/{case.case_id}_label.npy"
    slices = to_slices(pre.image).astype(np.float32, copy=False)
    bad = nonfinite_summary(slices)
    if bad:  # the source is finite here: preprocessing made these
        raise AssertionError(f"bug: the cached slices of case {case.case_id} ({case.image_path}) are not finite: {bad}")
    for rel in (image_rel, label_rel):
        if present(tmp / rel):  # ids are checked unique, also ignoring letter case: a bug guard
            raise AssertionError(f"bug: {tmp / rel} written twice (case {case.case_id})")
    _save(tmp, image_rel, slices, output_dir)
    _save(tmp, label_rel, to_slices(pre.label).astype(np.uint8, copy=False), output_dir)
    source_label_rel = f"cases/{case.case_id}_source_label.nii.gz"
    _save_nifti(tmp, source_label_rel, loaded.label, loaded.affine, output_dir)
    log.debug("case %s prepared in %.2f s", case.case_id, time.perf_counter() - t0)
    return {
        "case_id": case.case_id,
        "modality": case.modality,
        "image": image_rel,
        "label": label_rel,
        "num_slices": int(pre.image.shape[2]),
        "spacing_mm": [round(float(s), 9) for s in voxel_spacing(pre.affine)],
        "affine": np.asarray(pre.affine, dtype=float).tolist(),
        "source_label": source_label_rel,
        "source_image": str(Path(case.image_path).resolve()),
        "source_shape": [int(s) for s in loaded.source_shape],
        "source_affine": np.asarray(loaded.source_affine, dtype=float).tolist(),
        "foreground_voxels": {organ: int(counts[k]) for k, organ in enumerate(organs, start=1)},
        **({"nonfinite_repaired": repaired} if repaired else {}),
    }


def prepare_site(
    *,
    layout: str,
    input_dir: str | Path,
    output_dir: str | Path,
    site: str,
    modality: str,
    organs: list[str],
    spacing: float = 1.5,
    size: int = 256,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    clip_percentiles: Sequence[float] | None = (0.5, 99.5),
    progress: bool = True,
    case_splits: dict[str, str] | None = None,
    layout_options: Mapping[str, Any] | None = None,
    nonfinite: str = "error",
    skip_bad_cases: bool = False,
) -> Path:
    """Build one site's slice cache and ``datalist.json`` (format of ``fedgin.data.datalist``).

    Args:
        layout: dataset layout, a key of :data:`LAYOUTS` (``"totalseg"``, ``"amos"``, ``"whs"``, ``"msd"``,
            ``"chaos"``, ``"generic"``).
        input_dir: the source dataset folder.
        output_dir: the cache folder to create (see the module docstring for what may already be there).
        site: site name stored in the datalist.
        modality: ``"ct"`` or ``"mri"``: the cases of that modality (totalseg: ``ct.nii.gz`` / ``mri.nii.gz``;
            AMOS: id below / from 500; generic: all cases).
        organs: classes to segment (names of ``fedgin.data.labels``, or of the generic label map); label id k is
            ``organs[k-1]``.
        spacing: in-plane target spacing (mm); z follows the paper's rule (keep, below 2.5 mm -> 3 mm).
        size: in-plane size of the cached slices (centre pad/crop).
        seed: seed of the by-case split (used only when the dataset defines no split).
        val_fraction, test_fraction: fractions of cases for the seeded split.
        clip_percentiles: percentile clip before the z-score, ``None`` to turn clipping off.
        progress: show a tqdm bar over cases.
        case_splits: ``{case_id: split}`` from a partition (``fedgin.data.partition``): only these cases are prepared,
            each into its given split (``training``/``validation``/``test``); overrides the dataset's own split.
        layout_options: the layout's own settings, names from ``LAYOUTS[layout].options`` (e.g. chaos
            ``{"sequence": "t1dual-in"}``, generic ``{"label_map": "map.json"}``, amos ``{"split": "dataset"}``).
        nonfinite: ``"error"`` or ``"repair"``: what NaN/Inf voxels of a source image do (module docstring).
        skip_bad_cases: skip (and record under ``"skipped"``) a case that fails with a ``PrepareError`` instead of
            stopping the run (module docstring).

    Returns:
        The path of the written ``datalist.json``.

    Raises:
        PrepareError (and its subclasses NiftiError / LayoutError / NonFiniteError): bad arguments or output path, no
            case of that modality, duplicate case ids, a bad, missing or dangling file, non-finite voxels, every case
            skipped; the message names the file, case or folder.
        OSError: writing the cache failed (disk full, read-only, permission); its filename is in ``output_dir``.
        Nothing is left behind on error and a previous cache in ``output_dir`` is left as it was.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    organs = list(organs) if not isinstance(organs, str) else organs
    _check_args(layout, site, modality, organs, spacing, size, val_fraction, test_fraction, clip_percentiles)
    if not input_dir.is_dir():
        raise PrepareError(f"{input_dir}: input folder not found")
    _check_output(output_dir, input_dir)
    adapter = LAYOUTS[layout]
    options = dict(layout_options or {})
    unknown = sorted(set(options) - set(adapter.options))
    if unknown:
        accepted = ", ".join(adapter.options) or "none"
        raise PrepareError(f"layout {layout!r} has no option {', '.join(unknown)} (its options: {accepted})")
    if nonfinite not in NONFINITE_POLICIES:
        raise PrepareError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {nonfinite!r}")
    cases = adapter.list_cases(input_dir, modality, options, strict=False)
    if not cases:
        raise PrepareError(
            f"{input_dir}: no {modality} case found for site {site!r} (layout {layout!r}: {adapter.description})"
        )
    _check_case_ids(cases, input_dir)
    if case_splits is not None:
        cases = _select_cases(cases, case_splits, input_dir, modality)
    listed = [c for c in cases if c.problem is None]
    if case_splits is not None:
        split_of: dict[str, str | None] = dict(case_splits)
        policy = "partition"
    elif listed and all(c.split is not None for c in listed):
        split_of = {c.case_id: c.split for c in cases}
        policy = "dataset"
    else:
        parts = split_cases([c.case_id for c in cases], seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
        split_of = {cid: split for split, ids in parts.items() for cid in ids}
        policy = f"seeded (seed {seed})"

    skipped: list[dict[str, Any]] = []

    def skip(case: SourceCase, error: PrepareError) -> None:
        log.warning("case %s skipped: %s", case.case_id, error)
        split = split_of.get(case.case_id)
        skipped.append({"case_id": case.case_id, **({"split": split} if split else {}), "reason": str(error)})

    def none_left() -> PrepareError:
        reasons = "; ".join(f"{s['case_id']}: {s['reason']}" for s in skipped[:3])
        return PrepareError(f"{input_dir}: none of the {len(cases)} {modality} case(s) could be prepared, all were "
                            f"skipped ({reasons}{' ...' if len(skipped) > 3 else ''})")

    good: list[SourceCase] = []
    for case in cases:  # cheap checks of every case before the first one is decoded
        try:
            if case.problem is not None:
                raise LayoutError(case.problem)
            if adapter.check_case is not None:
                adapter.check_case(case, organs)
        except PrepareError as e:
            if not skip_bad_cases:
                raise
            skip(case, e)
        else:
            good.append(case)
    if not good:
        raise none_left()

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "cases").mkdir()
        datalist: dict[str, Any] = {
            "format": FORMAT,
            "site": site,
            "modality": modality,
            "layout": layout,
            "source": str(input_dir.resolve()),
            "labels": {"0": "background", **{str(k): o for k, o in enumerate(organs, start=1)}},
            "spacing_mm": [float(spacing), float(spacing)],
            "size_px": [int(size), int(size)],
            "z_rule": Z_RULE,
            "normalization": normalization_text(clip_percentiles),
            "clip_percentiles": list(clip_percentiles) if clip_percentiles is not None else None,
            "seed": int(seed),
            **({"layout_options": _json_safe(options)} if options else {}),
            **{split: [] for split in SPLITS},
        }
        with tqdm(good, desc=f"prepare {site}", unit="case", disable=not progress) as bar:
            for case in bar:
                bar.set_postfix_str(case.case_id)
                try:
                    entry = _case_entry(case, organs, tmp, adapter, spacing, int(size), clip_percentiles, nonfinite,
                                        output_dir)
                except PrepareError as e:
                    if not skip_bad_cases:
                        raise
                    skip(case, e)
                else:
                    datalist[split_of[case.case_id]].append(entry)
        if not any(datalist[split] for split in SPLITS):
            raise none_left()
        if skip_bad_cases:
            datalist["skipped"] = sorted(skipped, key=lambda s: s["case_id"])
        for split in SPLITS:
            if not datalist[split]:  # a partition's empty splits are intended: info only
                (log.info if policy == "partition" else log.warning)(
                    "site %s: the %s split is empty (%s split of %d cases)", site, split, policy, len(cases))
        try:
            (tmp / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")
        except OSError as e:
            raise _write_error(e, output_dir / "datalist.json") from e
        _install(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n = {s: len(datalist[s]) for s in SPLITS}
    log.info("site %s: %d %s cases prepared into %s (%s split: %s; %d skipped)", site, sum(n.values()), modality,
             output_dir, policy, n, len(skipped))
    return output_dir / "datalist.json"
