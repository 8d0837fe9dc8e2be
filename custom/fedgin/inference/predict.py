"""``fedgin predict``: a model file + NIfTI images → NIfTI label maps in each input's own geometry.

Per image: read and reorient to RAS (``fedgin.data.nifti``), the training preprocessing (``preprocess_image``:
the model's in-plane spacing with the z rule, centre pad/crop to the model's size, per-volume z-score with the
model's clip), the model on every axial slice, then the labels back onto the input grid (nearest neighbour;
voxels outside the model's field of view are background) and into the file's own voxel order. The output has the
input's exact shape and affine (sform and qform codes kept), uint8 label ids 0 = background, 1..K = the model's
classes in order. Everything comes from the model file (``classes``, ``model_config``, ``size_px``,
``spacing_mm``, ``clip_percentiles``); the modality is needed only by DSBN models (one batch-norm branch each).

What is checked when (``run_predictions``, ``fedgin predict``):

* Before anything is written (the whole run is refused with a ``ValueError``: :class:`PredictionError`,
  ``OutputPathError``, ``ModelFileError``; ``fedgin predict`` exits 2): the inputs (a NIfTI file, or a folder holding
  some), the output folder (``fedgin.common.outputs.check_output_dir``: not a symbolic link, the message saying where it
  points; not a file nor under one; and not the input folder unless ``allow_output_in_input``, compared resolved so a
  symlinked folder is the same folder), every output path (two inputs that map to one output name, ``x.nii`` and
  ``x.nii.gz``, compared case-insensitively; an output that would replace an input; an existing output that is a
  symbolic link, never replaced nor written through, or a folder), then the model file (and ``--modality`` for a
  DSBN model).
* Per input (the failure is collected, the other inputs are still segmented; ``fedgin predict`` exits 1): unreadable,
  truncated or non-NIfTI files, 2-D images, non-finite voxels (``nonfinite="error"``; ``"repair"`` repairs them and
  records what under ``repaired``), write errors (full disk, ...), out of memory. ``predictions.json`` lists the
  successes under ``predictions``, the failures under ``failed`` (``{"input", "error"}``), the skipped files under
  ``skipped`` (``{"input", "reason"}``).
* Earlier fedgin outputs found in an input folder (``*_seg.nii.gz`` with header descrip ``fedgin predict``, or
  named as an output by the folder's ``predictions.json``) are not segmented again: skipped with a note. They may
  be replaced by this run's outputs; an input never is.
* Every file is written to a hidden partial file beside its target (``.<name>.partial.nii.gz``/``.png``; a stale one
  is removed first, never written through) and renamed over the target, so a target holds the old file or the
  complete new one; ``predictions.json`` likewise (``fedgin.common.outputs.write_text_atomic``). Partial files are removed on
  any error, Ctrl-C included: the ``KeyboardInterrupt`` propagates once ``predictions.json`` records the inputs done
  so far and ``interrupted``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import torch

from fedgin.data.finite import NONFINITE_POLICIES, finite_volume
from fedgin.data.nifti import NiftiError, RasVolume, read_nifti_ras
from fedgin.data.preprocess import labels_onto, preprocess_image, to_slices
from fedgin.engine import ModelFileError, load_model_file
from fedgin.engine.norm import set_domain
from fedgin.engine.trainer import logits_to_labels
from fedgin.common.outputs import check_output_dir, describe_os_error, write_text_atomic

__all__ = ["Predictor", "predict_files", "run_predictions", "plan_outputs", "nifti_inputs",
           "PredictionError"]

_RAS = nio.axcodes2ornt(("R", "A", "S"))
SEG_SUFFIX = "_seg.nii.gz"
DESCRIP = b"fedgin predict"  # header descrip of every label map written here: how a later run recognises it


class PredictionError(ValueError):
    """An input cannot be predicted (not a 3-D volume, unreadable, ...) or an output cannot be written; the message
    names the file."""


def nifti_inputs(path: str | Path) -> list[Path]:
    """A NIfTI file, or the ``.nii``/``.nii.gz`` files of a folder (sorted; hidden ones, such as partial files, and
    folders left out); error when there are none."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.name.endswith((".nii", ".nii.gz")) and not f.name.startswith(".") and not f.is_dir())
        if not files:
            raise PredictionError(f"{p}: no .nii or .nii.gz files in this folder")
        return files
    if not p.is_file():
        raise PredictionError(f"{p}: no such file or folder")
    if not p.name.endswith((".nii", ".nii.gz")):
        raise PredictionError(f"{p}: not a NIfTI file (.nii or .nii.gz)")
    return [p]


def output_name(path: Path) -> str:
    name = path.name
    stem = name[:-7] if name.endswith(".nii.gz") else name[:-4]
    return f"{stem}{SEG_SUFFIX}"


def overlay_name(target: Path) -> Path:
    """``<name>_overlay.png`` next to the label map ``<name>_seg.nii.gz``."""
    return target.with_name(target.name[: -len(SEG_SUFFIX)] + "_overlay.png")


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
    """Names of the label maps a ``predictions.json`` in ``folder`` lists (empty when there is none or it is bad)."""
    try:
        report = json.loads((folder / "predictions.json").read_text())
        return {Path(r["output"]).name for r in report.get("predictions", []) if r.get("output")}
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


def plan_outputs(inputs: str | Path, output: str | Path, *, overlay: bool = False,
                 allow_output_in_input: bool = False) -> tuple[list[tuple[Path, Path]], list[dict[str, str]]]:
    """Check the inputs, the output folder and every output path before anything is written.

    Returns:
        ``[(input, <output>/<name>_seg.nii.gz), ...]`` and the skipped earlier outputs ``[{"input", "reason"}]``.

    Raises:
        PredictionError: see the module docstring (the message names the files or the option).
    """
    src, out_dir = Path(inputs), Path(output)
    files = nifti_inputs(src)
    check_output_dir(out_dir)
    in_dir = src if src.is_dir() else src.parent
    if out_dir.resolve() == in_dir.resolve() and not allow_output_in_input:
        raise PredictionError(f"--output {out_dir} is the input folder ({in_dir.resolve()}): predictions never land "
                              "next to the inputs unless --allow-output-in-input is given")
    skipped = []
    if src.is_dir():
        listed, kept = _listed_outputs(src), []
        for f in files:
            why = _earlier_output(f, listed)
            if why:
                skipped.append({"input": str(f), "reason": why})
            else:
                kept.append(f)
        if not kept:
            raise PredictionError(f"{src}: every NIfTI file in this folder is an earlier fedgin predict output "
                                  f"({len(skipped)} *{SEG_SUFFIX}); nothing to segment")
        files = kept
    sources = {**{f.resolve(): f for f in files}, **{_real(f): f for f in files}}
    seen: dict[str, Path] = {}
    plan = []
    for f in files:
        target = out_dir / output_name(f)
        other = seen.setdefault(target.name.casefold(), f)
        if other is not f:
            raise PredictionError(f"{other} and {f} would both be written to {target}: rename one of them, or "
                                  "predict them into different folders")
        hit = sources.get(_real(target))
        if hit is not None:
            raise PredictionError(f"{target}: the output of {f} would overwrite the input {hit}; rename that input "
                                  "or choose another --output")
        plan.append((f, target))
    for p in [t for _, t in plan] + [overlay_name(t) for _, t in plan if overlay] + [out_dir / "predictions.json"]:
        _check_target(p)
    return plan, skipped


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

    def read(self, path: str | Path, nonfinite: str = "error") -> tuple[RasVolume, str | None]:
        """A 3-D NIfTI volume in RAS voxel order (float32, ``fedgin.data.nifti``), its non-finite voxels refused or
        repaired (``fedgin.data.finite``); and what was repaired (``None`` when nothing was)."""
        path = Path(path)
        try:
            vol = read_nifti_ras(path, dtype=np.float32)
        except NiftiError as e:
            raise PredictionError(str(e)) from e
        if min(vol.data.shape) < 2:
            raise PredictionError(f"{path}: a 2D image (shape {vol.source_shape}); fedgin predict segments 3D "
                                  "volumes (axial slices of a CT or MRI scan)")
        return finite_volume(vol, nonfinite)

    def segment(self, path: str | Path, modality: str | None = None, progress: Callable[[int], None] | None = None,
                nonfinite: str = "error") -> tuple[nib.Nifti1Image, dict[str, Any]]:
        """Label map of one NIfTI volume, as a NIfTI image on the input's grid, and a summary (voxels per class;
        ``repaired``: the non-finite voxels repaired, with ``nonfinite="repair"``)."""
        self.check_modality(modality, str(path))
        vol, repaired = self.read(path, nonfinite)
        img, summary = self.segment_volume(vol, modality, progress)
        if repaired:
            summary["repaired"] = repaired
        return img, summary

    @torch.no_grad()
    def segment_volume(self, vol: RasVolume, modality: str | None = None,
                       progress: Callable[[int], None] | None = None) -> tuple[nib.Nifti1Image, dict[str, Any]]:
        """Label map of a volume read by :meth:`read` (finite voxels), on the grid of its file ``vol.path``."""
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
        header = nib.load(str(path)).header.copy()
        img = nib.Nifti1Image(out, vol.source_affine, header)
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1, 0)
        img.header["descrip"] = DESCRIP
        summary = {"input": str(path), "shape": list(out.shape),
                   "voxels": {c: int((out == i + 1).sum()) for i, c in enumerate(self.classes)}}
        return img, summary

    def num_slices(self, path: Path) -> int:
        """Slices the model will see for ``path`` (for progress bars), from the header only; 0 when the header cannot
        be read (the file then fails, with its message, when it is segmented)."""
        from fedgin.data.nifti import open_nifti, ras_geometry, voxel_spacing
        from fedgin.data.preprocess import resampled_grid, target_spacing

        try:
            img, shape = open_nifti(path)
            ras_shape, ras_affine = ras_geometry(shape, img.affine)
            new_shape, *_ = resampled_grid(ras_shape, ras_affine,
                                           target_spacing(voxel_spacing(ras_affine), self.spacing))
        except Exception:  # noqa: BLE001 - only a progress estimate
            return 0
        return int(new_shape[2])


def _predict_one(predictor: Predictor, f: Path, target: Path, modality: str | None, nonfinite: str, overlay: bool,
                 progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Segment ``f`` and write ``target`` (and its overlay PNG) via partial files; the summary for predictions.json."""
    png = overlay_name(target) if overlay else None
    parts = {target: _partial(target), **({png: _partial(png)} if png else {})}
    try:
        vol, repaired = predictor.read(f, nonfinite)
        img, summary = predictor.segment_volume(vol, modality, progress)
        try:
            for tmp in parts.values():
                tmp.unlink(missing_ok=True)  # a stale (or planted) partial file is never written through
            nib.save(img, str(parts[target]))
            if png:
                from fedgin.reporting.overlays import overlay_png

                with tempfile.TemporaryDirectory() as d:  # the overlay shows the repaired image, under its own name
                    shown = f
                    if repaired:
                        shown = Path(d) / f.name
                        nib.save(nib.Nifti1Image(vol.data, vol.affine), str(shown))
                    overlay_png(shown, parts[target], parts[png], predictor.classes)
            for final in parts:
                _check_target(final)  # a link made since plan_outputs
            for final, tmp in parts.items():
                os.replace(tmp, final)
        except OSError as e:
            raise PredictionError(f"{f}: {describe_os_error(e)}") from e
    finally:
        for tmp in parts.values():
            tmp.unlink(missing_ok=True)
    summary["output"] = str(target)
    if png:
        summary["overlay"] = str(png)
    if repaired:
        summary["repaired"] = repaired
    return summary


def run_predictions(model_file: str | Path, inputs: str | Path, output: str | Path, *, modality: str | None = None,
                    device: str = "auto", progress: bool = True, overlay: bool = False, nonfinite: str = "error",
                    allow_output_in_input: bool = False) -> dict[str, Any]:
    """Segment a NIfTI file or every NIfTI file of a folder into ``<output>/<name>_seg.nii.gz`` (and
    ``<name>_overlay.png`` with ``overlay``); per-file failures are collected (module docstring).

    Returns:
        What ``<output>/predictions.json`` holds: ``model``, ``classes``, ``nonfinite``, ``predictions`` (per
        success: ``input``, ``output``, ``shape``, ``voxels`` per class, ``overlay``, ``repaired``), ``failed``
        (``input``, ``error``), ``skipped`` (``input``, ``reason``).

    Raises:
        PredictionError, ModelFileError, ValueError: the whole run is refused; nothing was written.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    plan, skipped = plan_outputs(inputs, output, overlay=overlay, allow_output_in_input=allow_output_in_input)
    predictor = Predictor(model_file, device=device)
    predictor.check_modality(modality)
    out_dir = Path(output)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictionError(f"--output {out_dir}: {describe_os_error(e)}") from e
    report: dict[str, Any] = {"model": str(model_file), "classes": predictor.classes, "nonfinite": nonfinite,
                              "predictions": [], "failed": [], "skipped": skipped}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(predictor.num_slices(f) for f, _ in plan), desc=f"predict {len(plan)} volume(s)",
                   unit="slice")
    try:
        for f, target in plan:
            try:
                report["predictions"].append(_predict_one(predictor, f, target, modality, nonfinite, overlay,
                                                          bar.update if bar else None))
            except (ValueError, OSError, RuntimeError, MemoryError) as e:  # bad input, disk, CUDA out of memory
                msg = str(e)
                report["failed"].append({"input": str(f), "error": msg if str(f) in msg else f"{f}: {msg}"})
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
                  allow_output_in_input: bool = False) -> list[dict[str, Any]]:
    """:func:`run_predictions`, strict: the per-file summaries, or (once the other inputs are written and
    ``predictions.json`` lists the failures) a :class:`PredictionError` naming each failed input."""
    report = run_predictions(model_file, inputs, output, modality=modality, device=device, progress=progress,
                             overlay=overlay, nonfinite=nonfinite, allow_output_in_input=allow_output_in_input)
    failed = [r["error"] for r in report["failed"]]
    if len(failed) == 1:
        raise PredictionError(failed[0])
    if failed:
        raise PredictionError(f"{len(failed)} of {len(failed) + len(report['predictions'])} inputs failed "
                              f"(see {Path(output) / 'predictions.json'}): " + "; ".join(failed))
    return report["predictions"]
