"""``fedgin predict``: a model file + NIfTI images → NIfTI label maps in each input's own geometry.

Per image: read and reorient to RAS (``fedgin.data.nifti``), the training preprocessing (``preprocess_image``:
the model's in-plane spacing with the z rule, centre pad/crop to the model's size, per-volume z-score with the
model's clip), the model on every axial slice, then the labels back onto the input grid (nearest neighbour;
voxels outside the model's field of view are background) and into the file's own voxel order. The output has the
input's exact shape and affine (sform and qform codes kept), uint8 label ids 0 = background, 1..K = the model's
classes in order. Everything comes from the model file (``classes``, ``model_config``, ``size_px``,
``spacing_mm``, ``clip_percentiles``); the modality is needed only by DSBN models (one batch-norm branch each).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import torch
from scipy import ndimage

from fedgin.data.nifti import NiftiError, read_nifti_ras
from fedgin.data.preprocess import preprocess_image, to_slices
from fedgin.engine import ModelFileError, load_model_file
from fedgin.engine.norm import set_domain
from fedgin.engine.trainer import logits_to_labels

__all__ = ["Predictor", "predict_files", "nifti_inputs", "PredictionError"]

_RAS = nio.axcodes2ornt(("R", "A", "S"))


class PredictionError(ValueError):
    """An input cannot be predicted (not a 3-D volume, unreadable, ...); the message names the file."""


def nifti_inputs(path: str | Path) -> list[Path]:
    """A NIfTI file, or the ``.nii``/``.nii.gz`` files of a folder (sorted); error when there are none."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.name.endswith((".nii", ".nii.gz")) and not f.name.startswith("."))
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
    return f"{stem}_seg.nii.gz"


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

    @torch.no_grad()
    def segment(self, path: str | Path, modality: str | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[nib.Nifti1Image, dict[str, Any]]:
        """Label map of one NIfTI volume, as a NIfTI image on the input's grid, and a summary (voxels per class)."""
        path = Path(path)
        if self.domains:
            if modality not in self.domains:
                raise PredictionError(f"{self.model_file}: a DSBN model: give the modality of {path} "
                                      f"(--modality {'|'.join(self.domains)})")
            set_domain(self.model, modality)
        try:
            vol = read_nifti_ras(path, dtype=np.float32)
        except NiftiError as e:
            raise PredictionError(str(e)) from e
        if min(vol.data.shape) < 2:
            raise PredictionError(f"{path}: a 2D image (shape {vol.source_shape}); fedgin predict segments 3D "
                                  "volumes (axial slices of a CT or MRI scan)")
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
        ras_labels = self._onto(grid_labels, grid_affine, vol.data.shape, vol.affine)
        source_order = nio.ornt_transform(_RAS, nio.io_orientation(vol.source_affine))
        out = np.ascontiguousarray(nio.apply_orientation(ras_labels, source_order)).astype(np.uint8)
        if out.shape != tuple(vol.source_shape):
            raise AssertionError(f"{path}: output shape {out.shape} != input {vol.source_shape}")  # a bug, not input
        header = nib.load(str(path)).header.copy()
        img = nib.Nifti1Image(out, vol.source_affine, header)
        img.set_data_dtype(np.uint8)
        img.header.set_slope_inter(1, 0)
        img.header["descrip"] = b"fedgin predict"
        summary = {"input": str(path), "shape": list(out.shape),
                   "voxels": {c: int((out == i + 1).sum()) for i, c in enumerate(self.classes)}}
        return img, summary

    @staticmethod
    def _onto(labels: np.ndarray, grid_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
        """Nearest-neighbour resampling of ``labels`` (on ``grid_affine``) onto the grid (``shape``, ``affine``)."""
        m = np.linalg.inv(grid_affine) @ np.asarray(affine, dtype=np.float64)  # target voxel -> label voxel
        return ndimage.affine_transform(labels, m[:3, :3], offset=m[:3, 3], output_shape=tuple(shape), order=0,
                                        mode="constant", cval=0, prefilter=False)

    def num_slices(self, path: Path) -> int:
        """Slices the model will see for ``path`` (for progress bars), from the header only."""
        from fedgin.data.nifti import open_nifti, ras_geometry, voxel_spacing
        from fedgin.data.preprocess import resampled_grid, target_spacing

        img, shape = open_nifti(path)
        ras_shape, ras_affine = ras_geometry(shape, img.affine)
        new_shape, *_ = resampled_grid(ras_shape, ras_affine, target_spacing(voxel_spacing(ras_affine), self.spacing))
        return int(new_shape[2])


def predict_files(model_file: str | Path, inputs: str | Path, output: str | Path, *, modality: str | None = None,
                  device: str = "auto", progress: bool = True, overlay: bool = False) -> list[dict[str, Any]]:
    """Segment a NIfTI file or every NIfTI file of a folder; write ``<output>/<name>_seg.nii.gz`` per input (and
    ``<name>_overlay.png`` with ``overlay``) and ``<output>/predictions.json``. Returns the per-file summaries."""
    predictor = Predictor(model_file, device=device)
    files = nifti_inputs(inputs)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(predictor.num_slices(f) for f in files)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"predict {len(files)} volume(s)", unit="slice")
    results = []
    try:
        for f in files:
            img, summary = predictor.segment(f, modality, progress=bar.update if bar else None)
            target = out_dir / output_name(f)
            tmp = target.with_name(target.name + ".partial.nii.gz")
            nib.save(img, str(tmp))
            tmp.replace(target)
            summary["output"] = str(target)
            if overlay:
                from fedgin.pictures import overlay_png

                summary["overlay"] = str(overlay_png(f, target, out_dir / target.name.replace("_seg.nii.gz",
                                                                                               "_overlay.png"),
                                                     predictor.classes))
            results.append(summary)
    finally:
        if bar:
            bar.close()
    (out_dir / "predictions.json").write_text(json.dumps({"model": str(model_file), "classes": predictor.classes,
                                                          "predictions": results}, indent=2))
    return results
