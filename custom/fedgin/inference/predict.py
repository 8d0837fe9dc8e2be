"""``fedgin predict``: a model file + NIfTI images or DICOM series → label maps in each input's own geometry, as
NIfTI and/or DICOM Segmentation (SEG) objects.

Per image: read and reorient to RAS (``fedgin.data.nifti``), the training preprocessing (``preprocess_image``:
the model's in-plane spacing with the z rule, centre pad/crop to the model's size, per-volume z-score with the
model's clip), the model on every axial slice, then the labels back onto the input grid (nearest neighbour;
voxels outside the model's field of view are background) and into the file's own voxel order. The output has the
input's exact shape and affine (sform and qform codes kept), uint8 label ids 0 = background, 1..K = the model's
classes in order. Everything comes from the model file (``classes``, ``model_config``, ``size_px``,
``spacing_mm``, ``clip_percentiles``); the modality is needed only by DSBN models (one batch-norm branch each).

DICOM inputs (``fedgin.data.dicom.find_dicom_series``): a folder (sub-folders included) may hold NIfTI files (top
level only, as before) and DICOM series (files grouped by SeriesInstanceUID, any file name). Each series that stacks
into a volume is segmented; each refused group (a localizer, fewer than ``MIN_SLICES`` slices, mixed orientation,
non-uniform spacing, multi-frame, not an image, an unreadable header) is listed under ``skipped`` with its
SeriesInstanceUID, description and reason. A series is read by ``read_dicom_series`` (slices by position along the
normal, LPS -> RAS affine, rescale slope/intercept) and segmented like a NIfTI volume; its label map has the series'
own voxel order: voxel ``(i, j, k)`` = column ``i``, row ``j`` of the ``k``-th slice by ascending position, with the
series' RAS affine (sform and qform code 1, scanner; qform code 0 for a sheared, gantry-tilted stack).

Outputs (``output_format``, ``--format``): ``nifti`` (default) the label map ``<name>_seg.nii.gz``; ``seg`` a DICOM SEG
``<name>_seg.dcm`` (``fedgin.inference.dicom_seg``: the same labels on the source slices, referencing them); ``both``
both. ``<name>`` is a NIfTI input's stem, or a series' SeriesDescription (made file-safe; its SeriesInstanceUID when
it has none), followed by ``_<SeriesInstanceUID>`` when two series (or a series and a NIfTI input) would share it.
A SEG needs a DICOM series to reference: with ``seg`` a NIfTI input is skipped (reason in ``skipped``; a run left with
nothing to segment is refused), with ``both`` it gets its label map only and a note says so.

What is checked when (``run_predictions``, ``fedgin predict``):

* Before anything is written (the whole run is refused with a ``ValueError``: :class:`PredictionError`,
  ``OutputPathError``, ``ModelFileError``; ``fedgin predict`` exits 2): the inputs (a NIfTI file, or a folder holding
  NIfTI files or DICOM series; a single DICOM file is refused: give its series' folder), the output folder (``fedgin.common.outputs.check_output_dir``: not a symbolic link, the message saying where it
  points; not a file nor under one; and not the input folder unless ``allow_output_in_input``, compared resolved so a
  symlinked folder is the same folder), every output path (two inputs that map to one output name, ``x.nii`` and
  ``x.nii.gz``, compared case-insensitively; an output that would replace an input; an existing output that is a
  symbolic link, never replaced nor written through, or a folder), then the model file (and ``--modality`` for a
  DSBN model).
* Per input (the failure is collected, the other inputs are still segmented; ``fedgin predict`` exits 1): unreadable,
  truncated or non-NIfTI files, DICOM pixel data that cannot be decoded, a SEG highdicom refuses, 2-D images,
  non-finite voxels (``nonfinite="error"``; ``"repair"`` repairs them and records what under ``repaired``), write
  errors (full disk, ...), out of memory. ``predictions.json`` lists the successes under ``predictions``, the failures
  under ``failed`` (``{"input", "error"}``), the skipped files and series under ``skipped`` (``{"input", "reason"}``;
  a series adds ``series_instance_uid``, ``series_description``, ``files``). A DICOM series' ``input`` is
  ``<folder> [series <uid> '<description>']``.
* Earlier fedgin outputs found in an input folder (``*_seg.nii.gz`` with header descrip ``fedgin predict``, DICOM SEGs
  by manufacturer ``fedgin``, or named as an output by the folder's ``predictions.json``) are not segmented again:
  skipped with a note. They may be replaced by this run's outputs; an input never is.
* Every file is written to a hidden partial file beside its target (``.<name>.partial.nii.gz``/``.dcm``/``.png``; a
  stale one is removed first, never written through) and renamed over the target, so a target holds the old file or
  the complete new one; ``predictions.json`` likewise (``fedgin.common.outputs.write_text_atomic``). Partial files are
  removed on any error, Ctrl-C included: the ``KeyboardInterrupt`` propagates once ``predictions.json`` records the inputs done
  so far and ``interrupted``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import torch

from fedgin.data.dicom import RefusedSeries, SeriesInfo, find_dicom_series, is_dicom_file, read_dicom_series
from fedgin.data.errors import LayoutError
from fedgin.data.finite import NONFINITE_POLICIES, finite_volume
from fedgin.data.nifti import NiftiError, RasVolume, read_nifti_ras, reorient_to_ras
from fedgin.data.preprocess import labels_onto, preprocess_image, to_slices
from fedgin.engine import ModelFileError, load_model_file
from fedgin.engine.norm import set_domain
from fedgin.engine.trainer import logits_to_labels
from fedgin.common.outputs import check_output_dir, describe_os_error, write_text_atomic
from fedgin.inference.dicom_seg import SEG_SUFFIX as DICOM_SEG_SUFFIX, build_seg

__all__ = ["Predictor", "predict_files", "run_predictions", "plan_outputs", "nifti_inputs", "find_inputs",
           "read_dicom_volume", "Job", "FORMATS", "PredictionError"]

_RAS = nio.axcodes2ornt(("R", "A", "S"))
SEG_SUFFIX = "_seg.nii.gz"
DESCRIP = b"fedgin predict"  # header descrip of every label map written here: how a later run recognises it
#: ``--format``: the NIfTI label map, the DICOM SEG (DICOM inputs only), or both
FORMATS = ("nifti", "seg", "both")
#: why a NIfTI input gets no DICOM SEG
NO_SEG_FOR_NIFTI = ("a NIfTI input: a DICOM SEG must reference the DICOM series it segments, and a NIfTI file has "
                    "none; use --format nifti or both for NIfTI inputs")

Source = Path | SeriesInfo  # a NIfTI file or a DICOM series


class PredictionError(ValueError):
    """An input cannot be predicted (not a 3-D volume, unreadable, ...) or an output cannot be written; the message
    names the file."""


def _is_nifti_name(p: Path) -> bool:
    return p.name.endswith((".nii", ".nii.gz"))


def nifti_inputs(path: str | Path) -> list[Path]:
    """A NIfTI file, or the ``.nii``/``.nii.gz`` files of a folder (sorted; hidden ones, such as partial files, and
    folders left out); error when there are none."""
    p = Path(path)
    if p.is_dir():
        files = _nifti_files(p)
        if not files:
            raise PredictionError(f"{p}: no .nii or .nii.gz files in this folder")
        return files
    if not p.is_file():
        raise PredictionError(f"{p}: no such file or folder")
    if not _is_nifti_name(p):
        raise PredictionError(f"{p}: not a NIfTI file (.nii or .nii.gz)")
    return [p]


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if _is_nifti_name(f) and not f.name.startswith(".") and not f.is_dir())


def find_inputs(path: str | Path) -> tuple[list[Path], list[SeriesInfo], list[RefusedSeries]]:
    """The inputs under ``--input``: a NIfTI file, or a folder's NIfTI files (top level) and DICOM series (any depth).

    Returns:
        (NIfTI files, DICOM series that are volumes, refused DICOM groups with their reasons).

    Raises:
        PredictionError: no such path, a file that is not NIfTI (a single DICOM file: give its folder), a folder
            with neither.
    """
    p = Path(path)
    if p.is_dir():
        files = _nifti_files(p)
        series, refused = find_dicom_series(p, skip=_is_nifti_name)
        if not files and not series and not refused:
            raise PredictionError(f"{p}: no .nii or .nii.gz files and no DICOM series in this folder (DICOM: "
                                  "searched in its sub-folders too)")
        return files, series, refused
    if not p.is_file():
        raise PredictionError(f"{p}: no such file or folder")
    if not _is_nifti_name(p):
        if is_dicom_file(p):
            raise PredictionError(f"{p}: a single DICOM file; give the folder of its series (--input {p.parent})")
        raise PredictionError(f"{p}: not a NIfTI file (.nii or .nii.gz), nor a folder of NIfTI files or DICOM series")
    return [p], [], []


def output_name(path: Path) -> str:
    name = path.name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4]
    return f"{stem}{SEG_SUFFIX}"


def overlay_name(target: Path) -> Path:
    """``<name>_overlay.png`` next to the label map ``<name>_seg.nii.gz``."""
    return target.with_name(target.name[: -len(SEG_SUFFIX)] + "_overlay.png")


def _safe(text: str) -> str:
    """``text`` as a file name part: runs of anything but letters, digits, ``.``, ``-`` and ``_`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:96]


def series_stem(s: SeriesInfo) -> str:
    """A series' output name before ``_seg``: its SeriesDescription, else its SeriesInstanceUID, else its folder."""
    return _safe(s.description) or _safe(s.uid) or _safe(s.folder.name) or "series"


def _series_stems(series: list[SeriesInfo], taken: set[str]) -> list[str]:
    """:func:`series_stem` of each series, ``_<SeriesInstanceUID>`` (or ``_<folder>``) appended where two series, or a
    series and a NIfTI stem in ``taken`` (casefolded), would share one."""
    base = [series_stem(s) for s in series]
    count = Counter(b.casefold() for b in base)
    return [f"{b}_{_safe(s.uid) or _safe(s.folder.name) or 'series'}" if count[b.casefold()] > 1 or b.casefold() in taken
            else b for s, b in zip(series, base)]


@dataclass(frozen=True)
class Job:
    """One input and its outputs ``<out_dir>/<stem>_seg.nii.gz`` (``nifti``), ``<stem>_seg.dcm`` (``seg``),
    ``<stem>_overlay.png``; ``note``: an output the format asked for that this input does not get."""

    source: Source
    out_dir: Path
    stem: str
    nifti: bool = True
    seg: bool = False
    note: str | None = None

    @property
    def input(self) -> str:
        """How reports and messages name the input: the file, or ``<folder> [series <uid> '<description>']``."""
        return self.source.label if isinstance(self.source, SeriesInfo) else str(self.source)

    @property
    def label_map(self) -> Path | None:
        return self.out_dir / f"{self.stem}{SEG_SUFFIX}" if self.nifti else None

    @property
    def seg_file(self) -> Path | None:
        return self.out_dir / f"{self.stem}{DICOM_SEG_SUFFIX}" if self.seg else None

    @property
    def overlay(self) -> Path:
        return self.out_dir / f"{self.stem}_overlay.png"

    def targets(self, overlay: bool) -> list[Path]:
        return [t for t in (self.label_map, self.seg_file, self.overlay if overlay else None) if t is not None]


def _real(p: Path) -> Path:
    """``p`` with its folder resolved (symlinked folders compare equal) but not ``p`` itself (a link stays a link)."""
    return p.absolute().parent.resolve() / p.name


def _partial(target: Path) -> Path:
    """The hidden temporary file for ``target``, with its extension (nibabel and matplotlib pick the format by it)."""
    ext = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix
    return target.with_name(f".{target.name}.partial{ext}")


def _check_target(p: Path) -> None:
    """An output path that may be (re)placed: refused when it is a symbolic link or a folder."""
    if p.is_symlink():
        raise PredictionError(f"{p}: the output exists as a symbolic link (to {os.readlink(p)}); fedgin predict "
                              "neither replaces it nor writes through it: remove it or choose another --output")
    if p.is_dir():
        raise PredictionError(f"{p}: the output path is an existing folder; remove it or choose another --output")


def _listed_outputs(folder: Path) -> set[str]:
    """Names of the outputs (label maps, SEGs) a ``predictions.json`` in ``folder`` lists (empty when there is none
    or it is bad)."""
    try:
        report = json.loads((folder / "predictions.json").read_text())
        return {Path(r[k]).name for r in report.get("predictions", []) for k in ("output", "seg") if r.get(k)}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return set()


def _earlier_output(f: Path, listed: set[str]) -> str | None:
    """Why ``f`` is a label map of an earlier ``fedgin predict`` run (not to be segmented again), else ``None``."""
    if not f.name.endswith(SEG_SUFFIX):
        return None
    if f.name in listed:
        return "an earlier fedgin predict output (listed in predictions.json there), not segmented again"
    try:
        descrip = nib.load(str(f)).header["descrip"].tobytes().rstrip(b"\0")
    except Exception:  # unreadable: not recognisably ours; it is segmented and fails with a clear message
        return None
    return "an earlier fedgin predict output (header descrip 'fedgin predict'), not segmented again" \
        if descrip == DESCRIP else None


def _refused_entry(r: RefusedSeries, listed: set[str]) -> dict[str, Any]:
    """The ``skipped`` entry of a refused DICOM group (an earlier fedgin SEG is named as such)."""
    reason = r.reason
    manufacturer = str(getattr(r.header, "Manufacturer", "") or "")
    if reason.startswith("not an image") and "(SEG)" in reason and (
            manufacturer == "fedgin" or any(f.name in listed for f in r.files)):
        reason = "an earlier fedgin predict output (DICOM SEG), not segmented again"
    if r.header is None:
        return {"input": r.label, "reason": reason}
    return {"input": r.label, "series_instance_uid": r.uid, "series_description": r.description,
            "files": len(r.files), "reason": reason}


def _nothing_left(src: Path, skipped: list[dict[str, Any]]) -> PredictionError:
    if skipped and all(s["reason"].startswith("an earlier fedgin predict output") and s["input"].endswith(SEG_SUFFIX)
                       for s in skipped):
        return PredictionError(f"{src}: every NIfTI file in this folder is an earlier fedgin predict output "
                               f"({len(skipped)} *{SEG_SUFFIX}); nothing to segment")
    if not src.is_dir() and skipped:
        return PredictionError(f"{src}: {skipped[0]['reason']}")
    shown = "; ".join(f"{s['input']}: {s['reason']}" for s in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return PredictionError(f"{src}: nothing to segment ({shown}{more})")


def plan_outputs(inputs: str | Path, output: str | Path, *, overlay: bool = False, allow_output_in_input: bool = False,
                 output_format: str = "nifti") -> tuple[list[Job], list[dict[str, Any]]]:
    """Check the inputs, the output folder and every output path before anything is written.

    Returns:
        The jobs (NIfTI inputs first, then DICOM series) and the skipped inputs ``[{"input", "reason", ...}]``:
        earlier outputs, refused DICOM groups, NIfTI inputs with ``output_format="seg"``.

    Raises:
        PredictionError: see the module docstring (the message names the files or the option).
    """
    if output_format not in FORMATS:
        raise PredictionError(f"--format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    src, out_dir = Path(inputs), Path(output)
    files, series, refused = find_inputs(src)
    check_output_dir(out_dir)
    in_dir = src if src.is_dir() else src.parent
    if out_dir.resolve() == in_dir.resolve() and not allow_output_in_input:
        raise PredictionError(f"--output {out_dir} is the input folder ({in_dir.resolve()}): predictions never land "
                              "next to the inputs unless --allow-output-in-input is given")
    skipped: list[dict[str, Any]] = []
    listed = _listed_outputs(src) if src.is_dir() else set()
    if src.is_dir():
        kept = []
        for f in files:
            why = _earlier_output(f, listed)
            if why:
                skipped.append({"input": str(f), "reason": why})
            else:
                kept.append(f)
        files = kept
    skipped += [_refused_entry(r, listed) for r in refused]
    if output_format == "seg":
        skipped += [{"input": str(f), "reason": NO_SEG_FOR_NIFTI} for f in files]
        files = []
    if not files and not series:
        raise _nothing_left(src, skipped)
    nifti_stems = [output_name(f)[: -len(SEG_SUFFIX)] for f in files]
    nifti_note = ("NIfTI input: label map only, no DICOM SEG (a SEG must reference the DICOM series it segments)"
                  if output_format == "both" else None)
    jobs = [Job(f, out_dir, stem, note=nifti_note) for f, stem in zip(files, nifti_stems)]
    jobs += [Job(s, out_dir, stem, nifti=output_format != "seg", seg=output_format != "nifti")
             for s, stem in zip(series, _series_stems(series, {n.casefold() for n in nifti_stems}))]
    dicom_files = [f for s in series for f in s.files] + [f for r in refused for f in r.files]
    sources = {**{f.resolve(): f for f in files + dicom_files}, **{_real(f): f for f in files + dicom_files}}
    seen: dict[str, Job] = {}
    for job in jobs:
        for target in job.targets(overlay=False):
            other = seen.setdefault(target.name.casefold(), job)
            if other is not job:
                raise PredictionError(f"{other.input} and {job.input} would both be written to {target}: rename one "
                                      "of them, or predict them into different folders")
            hit = sources.get(_real(target))
            if hit is not None:
                raise PredictionError(f"{target}: the output of {job.input} would overwrite the input {hit}; rename "
                                      "that input or choose another --output")
    for p in [t for job in jobs for t in job.targets(overlay)] + [out_dir / "predictions.json"]:
        _check_target(p)
    return jobs, skipped


def read_dicom_volume(info: SeriesInfo) -> RasVolume:
    """A series found by ``find_dicom_series`` decoded and put in RAS voxel order: ``source_shape`` /
    ``source_affine`` are the series' own ``(columns, rows, slices)`` grid and RAS affine, ``path`` its folder.

    Raises:
        PredictionError: a slice that cannot be read or decoded, or a series that changed since it was found; the
            message names the series and the file.
    """
    try:
        series = read_dicom_series(info.files)
    except LayoutError as e:
        raise PredictionError(f"{info.label}: {e}") from e
    if series.files != info.files or not np.allclose(series.affine, info.affine):
        raise PredictionError(f"{info.label}: the series changed since its headers were read; run again")
    data, affine = reorient_to_ras(series.data, series.affine)
    return RasVolume(data=data, affine=affine, source_shape=tuple(series.data.shape),  # type: ignore[arg-type]
                     source_affine=series.affine, path=info.folder)


def _label_image(out: np.ndarray, vol: RasVolume) -> nib.Nifti1Image:
    """The uint8 label map ``out`` (the input's own voxel order) as NIfTI: the input file's header for a NIfTI
    input, a new one (scanner sform, and qform unless the grid is sheared) for a DICOM series."""
    affine = vol.source_affine
    if _is_nifti_name(vol.path):
        img = nib.Nifti1Image(out, affine, nib.load(str(vol.path)).header.copy())
    else:
        img = nib.Nifti1Image(out, affine)
        img.set_sform(affine, code=1)
        gram = affine[:3, :3].T @ affine[:3, :3]
        img.set_qform(affine, code=1 if np.allclose(gram, np.diag(np.diag(gram)), atol=1e-6) else 0)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1, 0)
    img.header["descrip"] = DESCRIP
    return img


class Predictor:
    """A model file ready to segment volumes.

    Args:
        model_file: a fedgin model file (``fedgin train``, or the federation's ``FL_global_model.pt`` /
            ``best_FL_global_model.pt``).
        device: ``auto``, ``cpu`` or ``cuda:N``.
        batch_size: slices per forward pass.

    Raises:
        ModelFileError: not a fedgin segmentation model, or one that lacks the preprocessing it was trained with.
    """

    def __init__(self, model_file: str | Path, device: str = "auto", batch_size: int = 16) -> None:
        from fedgin.engine.trainer import resolve_device

        self.device = resolve_device(device)
        self.model, self.meta = load_model_file(model_file, self.device)
        missing = [k for k in ("size_px", "spacing_mm") if not self.meta.get(k)]
        if missing:
            raise ModelFileError(f"{model_file}: the model file lacks {missing}: it cannot say how to preprocess")
        self.classes = list(self.meta["classes"])
        self.size = int(self.meta["size_px"][0])
        self.spacing = float(self.meta["spacing_mm"][0])
        self.clip = self.meta.get("clip_percentiles", [0.5, 99.5])
        self.domains = list((self.meta.get("model_config") or {}).get("domains") or [])
        self.batch_size = int(batch_size)
        self.model_file = Path(model_file)

    def check_modality(self, modality: str | None, what: str = "the inputs") -> None:
        """A DSBN model needs the modality (one batch-norm branch each): error naming the choices."""
        if self.domains and modality not in self.domains:
            raise PredictionError(f"{self.model_file}: a DSBN model: give the modality of {what} "
                                  f"(--modality {'|'.join(self.domains)})")

    def read(self, source: str | Path | SeriesInfo, nonfinite: str = "error") -> tuple[RasVolume, str | None]:
        """A 3-D volume in RAS voxel order (float32): a NIfTI file (``fedgin.data.nifti``) or a DICOM series
        (:func:`read_dicom_volume`), its non-finite voxels refused or repaired (``fedgin.data.finite``); and what was
        repaired (``None`` when nothing was)."""
        if isinstance(source, SeriesInfo):
            vol = read_dicom_volume(source)
        else:
            try:
                vol = read_nifti_ras(Path(source), dtype=np.float32)
            except NiftiError as e:
                raise PredictionError(str(e)) from e
        if min(vol.data.shape) < 2:
            raise PredictionError(f"{vol.path}: a 2D image (shape {vol.source_shape}); fedgin predict segments 3D "
                                  "volumes (axial slices of a CT or MRI scan)")
        return finite_volume(vol, nonfinite)

    def segment(self, path: str | Path | SeriesInfo, modality: str | None = None,
                progress: Callable[[int], None] | None = None,
                nonfinite: str = "error") -> tuple[nib.Nifti1Image, dict[str, Any]]:
        """Label map of one NIfTI volume or DICOM series, as a NIfTI image on the input's grid, and a summary
        (voxels per class; ``repaired``: the non-finite voxels repaired, with ``nonfinite="repair"``)."""
        self.check_modality(modality, str(getattr(path, "label", path)))
        vol, repaired = self.read(path, nonfinite)
        img, summary = self.segment_volume(vol, modality, progress)
        if repaired:
            summary["repaired"] = repaired
        return img, summary

    @torch.no_grad()
    def segment_volume(self, vol: RasVolume, modality: str | None = None,
                       progress: Callable[[int], None] | None = None) -> tuple[nib.Nifti1Image, dict[str, Any]]:
        """Label map of a volume read by :meth:`read` (finite voxels), on the grid of its file or series
        ``vol.path`` (``vol.source_shape`` / ``vol.source_affine``)."""
        path = vol.path
        self.check_modality(modality, str(path))
        if self.domains:
            set_domain(self.model, modality)
        image, grid_affine = preprocess_image(vol.data, vol.affine, spacing=self.spacing, size=self.size,
                                              clip_percentiles=self.clip)
        slices = to_slices(image)  # (Z', size, size)
        labels = np.empty(slices.shape, dtype=np.uint8)
        for start in range(0, len(slices), self.batch_size):
            batch = torch.from_numpy(slices[start:start + self.batch_size, None]).to(self.device)
            labels[start:start + len(batch)] = logits_to_labels(self.model(batch).float()).cpu().numpy()
            if progress:
                progress(len(batch))
        grid_labels = np.moveaxis(labels, 0, 2)  # (size, size, Z') RAS, on grid_affine
        ras_labels = labels_onto(grid_labels, grid_affine, vol.data.shape, vol.affine)
        source_order = nio.ornt_transform(_RAS, nio.io_orientation(vol.source_affine))
        out = np.ascontiguousarray(nio.apply_orientation(ras_labels, source_order)).astype(np.uint8)
        if out.shape != tuple(vol.source_shape):
            raise AssertionError(f"{path}: output shape {out.shape} != input {vol.source_shape}")  # a bug, not input
        img = _label_image(out, vol)
        summary = {"input": str(path), "shape": list(out.shape),
                   "voxels": {c: int((out == i + 1).sum()) for i, c in enumerate(self.classes)}}
        return img, summary

    def num_slices(self, source: Path | SeriesInfo) -> int:
        """Slices the model will see for ``source`` (for progress bars), from the header(s) only; 0 when the header
        cannot be read (the file then fails, with its message, when it is segmented)."""
        from fedgin.data.nifti import open_nifti, ras_geometry, voxel_spacing
        from fedgin.data.preprocess import resampled_grid, target_spacing

        try:
            if isinstance(source, SeriesInfo):
                shape, affine = source.shape, source.affine
            else:
                img, shape = open_nifti(source)
                affine = img.affine
            ras_shape, ras_affine = ras_geometry(shape, affine)
            new_shape, *_ = resampled_grid(ras_shape, ras_affine,
                                           target_spacing(voxel_spacing(ras_affine), self.spacing))
        except Exception:  # noqa: BLE001 - only a progress estimate
            return 0
        return int(new_shape[2])


def _write_overlay(job: Job, vol: RasVolume, img: nib.Nifti1Image, labels: Path | None, png: Path,
                   repaired: bool, classes: list[str]) -> None:
    """``png`` for ``job``; the image (a DICOM series, or a repaired scan) and the labels (with ``--format seg``) go
    through temporary NIfTI files, the image under the input's own name."""
    from fedgin.reporting.overlays import overlay_png

    with tempfile.TemporaryDirectory() as d:
        shown = job.source
        if isinstance(shown, SeriesInfo) or repaired:
            name = shown.name if isinstance(shown, Path) else f"{job.stem}.nii.gz"
            shown = Path(d) / name
            nib.save(nib.Nifti1Image(vol.data, vol.affine), str(shown))
        if labels is None:
            labels = Path(d) / f"labels{SEG_SUFFIX}"
            nib.save(img, str(labels))
        overlay_png(shown, labels, png, classes)


def _series_fields(s: SeriesInfo) -> dict[str, Any]:
    return {"series_instance_uid": s.uid, "series_description": s.description, "files": len(s.files)}


def _predict_one(predictor: Predictor, job: Job, modality: str | None, nonfinite: str, overlay: bool,
                 progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Segment ``job.source`` and write its outputs via partial files; the summary for predictions.json."""
    png = job.overlay if overlay else None
    parts = {t: _partial(t) for t in job.targets(overlay)}
    notes = [job.note] if job.note else []
    try:
        vol, repaired = predictor.read(job.source, nonfinite)
        img, summary = predictor.segment_volume(vol, modality, progress)
        seg = None
        if job.seg_file is not None and isinstance(job.source, SeriesInfo):
            seg, seg_notes = build_seg(job.source.files, np.asarray(img.dataobj), predictor.classes,
                                       model_file=predictor.model_file, series_description=job.source.description)
            notes += seg_notes
        try:
            for tmp in parts.values():
                tmp.unlink(missing_ok=True)  # a stale (or planted) partial file is never written through
            if job.label_map is not None:
                nib.save(img, str(parts[job.label_map]))
            if seg is not None:
                seg.save_as(str(parts[job.seg_file]))
            if png:
                _write_overlay(job, vol, img, parts.get(job.label_map), parts[png], bool(repaired), predictor.classes)
            for final in parts:
                _check_target(final)  # a link made since plan_outputs
            for final, tmp in parts.items():
                os.replace(tmp, final)
        except OSError as e:
            raise PredictionError(f"{job.input}: {describe_os_error(e)}") from e
    finally:
        for tmp in parts.values():
            tmp.unlink(missing_ok=True)
    summary["input"] = job.input
    if isinstance(job.source, SeriesInfo):
        summary.update(_series_fields(job.source))
    if job.label_map is not None:
        summary["output"] = str(job.label_map)
    if job.seg_file is not None:
        summary["seg"] = str(job.seg_file)
    if png:
        summary["overlay"] = str(png)
    if repaired:
        summary["repaired"] = repaired
    if notes:
        summary["notes"] = notes
    return summary


def run_predictions(model_file: str | Path, inputs: str | Path, output: str | Path, *, modality: str | None = None,
                    device: str = "auto", progress: bool = True, overlay: bool = False, nonfinite: str = "error",
                    allow_output_in_input: bool = False, output_format: str = "nifti") -> dict[str, Any]:
    """Segment a NIfTI file, or every NIfTI file and DICOM series of a folder, into ``<output>/<name>_seg.nii.gz``
    and/or ``<name>_seg.dcm`` (``output_format``: nifti, seg, both), and ``<name>_overlay.png`` with ``overlay``;
    per-input failures are collected (module docstring).

    Returns:
        What ``<output>/predictions.json`` holds: ``model``, ``classes``, ``nonfinite``, ``format``, ``predictions``
        (per success: ``input``, ``output`` (the NIfTI label map), ``seg`` (the DICOM SEG), ``shape``, ``voxels``
        per class, ``overlay``, ``repaired``, ``notes``; a series adds ``series_instance_uid``,
        ``series_description``, ``files``), ``failed`` (``input``, ``error``), ``skipped`` (``input``, ``reason``).

    Raises:
        PredictionError, ModelFileError, ValueError: the whole run is refused; nothing was written.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    plan, skipped = plan_outputs(inputs, output, overlay=overlay, allow_output_in_input=allow_output_in_input,
                                 output_format=output_format)
    predictor = Predictor(model_file, device=device)
    predictor.check_modality(modality)
    out_dir = Path(output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictionError(f"--output {out_dir}: {describe_os_error(e)}") from e
    report: dict[str, Any] = {"model": str(model_file), "classes": predictor.classes, "nonfinite": nonfinite,
                              "format": output_format, "predictions": [], "failed": [], "skipped": skipped}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(predictor.num_slices(job.source) for job in plan), desc=f"predict {len(plan)} volume(s)",
                   unit="slice")
    try:
        for job in plan:
            try:
                report["predictions"].append(_predict_one(predictor, job, modality, nonfinite, overlay,
                                                          bar.update if bar else None))
            except (ValueError, OSError, RuntimeError, MemoryError) as e:  # bad input, disk, CUDA out of memory
                msg = str(e)
                failure = {"input": job.input, "error": msg if job.input in msg else f"{job.input}: {msg}"}
                if isinstance(job.source, SeriesInfo):
                    failure.update(_series_fields(job.source))
                report["failed"].append(failure)
    except KeyboardInterrupt:
        done = len(report["predictions"]) + len(report["failed"])
        report["interrupted"] = f"stopped by Ctrl-C after {done} of {len(plan)} input(s)"
        write_text_atomic(out_dir / "predictions.json", json.dumps(report, indent=2))
        raise
    finally:
        if bar:
            bar.close()
    write_text_atomic(out_dir / "predictions.json", json.dumps(report, indent=2))
    return report


def predict_files(model_file: str | Path, inputs: str | Path, output: str | Path, *, modality: str | None = None,
                  device: str = "auto", progress: bool = True, overlay: bool = False, nonfinite: str = "error",
                  allow_output_in_input: bool = False, output_format: str = "nifti") -> list[dict[str, Any]]:
    """:func:`run_predictions`, strict: the per-input summaries, or (once the other inputs are written and
    ``predictions.json`` lists the failures) a :class:`PredictionError` naming each failed input."""
    report = run_predictions(model_file, inputs, output, modality=modality, device=device, progress=progress,
                             overlay=overlay, nonfinite=nonfinite, allow_output_in_input=allow_output_in_input,
                             output_format=output_format)
    failed = [r["error"] for r in report["failed"]]
    if len(failed) == 1:
        raise PredictionError(failed[0])
    if failed:
        raise PredictionError(f"{len(failed)} of {len(failed) + len(report['predictions'])} inputs failed "
                              f"(see {Path(output) / 'predictions.json'}): " + "; ".join(failed))
    return report["predictions"]
