"""Read a single-frame DICOM series (one folder of slices) into a volume with an exact RAS affine.

Rules (DICOM PS3.3 C.7.6.2, Image Plane module):

* Slice order comes from the geometry only, never from file names or InstanceNumber: each slice's
  ImagePositionPatient (IPP) is projected on the slice normal ``n = row_dir x col_dir`` (from
  ImageOrientationPatient, IOP) and the slices are stacked by ascending projection.
* Every slice must share IOP (within 1e-4), PixelSpacing, Rows and Columns; two slices at the same position, or a
  non-uniform step between neighbours (a gap, two series mixed), are errors naming the folder/files.
* Voxel ``(i, j, k)`` of the returned array is column ``i`` and row ``j`` of the ``k``-th slice in that order.
  The LPS affine has columns ``row_dir * column_spacing``, ``col_dir * row_spacing`` (PixelSpacing is
  ``[row spacing, column spacing]``), the mean IPP step between consecutive slices (exact also for a sheared
  stack; a single slice uses SpacingBetweenSlices or SliceThickness), and the first slice's IPP as origin.
  DICOM's patient frame is LPS, NIfTI's world is RAS: the returned affine is ``diag(-1, -1, 1, 1) @ affine_lps``.
* Intensities: ``stored value * RescaleSlope + RescaleIntercept`` per slice (slope 1 and intercept 0 when absent),
  as float32.

``pydicom`` is imported only when a series is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgin.data.errors import LayoutError
from fedgin.data.source import broken_link

__all__ = ["LPS_TO_RAS", "DicomSeries", "dicom_files", "read_dicom_series"]

log = logging.getLogger(__name__)

#: world LPS -> RAS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_IOP_TOL = 1e-4
_SPACING_TOL = 1e-3


@dataclass(frozen=True)
class DicomSeries:
    """A decoded series.

    Attributes:
        data: float32 ``(columns, rows, slices)``, slices by ascending position along the normal.
        affine: 4x4 voxel centre -> world mm, RAS+.
        files: the file of each slice ``k`` (stack order).
        rows, columns: the in-plane size of every slice.
    """

    data: np.ndarray
    affine: np.ndarray
    files: tuple[Path, ...]
    rows: int
    columns: int


def dicom_files(folder: Path) -> list[Path]:
    """The ``*.dcm`` files of a folder (any case of the suffix; names starting with "." and sub-folders skipped).

    Other files are ignored with a warning that counts them.

    Raises:
        LayoutError: a ``.dcm`` name that is a dangling symbolic link (the series would miss that slice).
    """
    if not folder.is_dir():
        return []
    out, other = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if p.suffix.lower() != ".dcm":
            other.append(p.name)
        elif broken_link(p):
            raise LayoutError(f"{broken_link(p)} (a slice of the series in {folder})")
        else:
            out.append(p)
    if other:
        log.warning("%s: %d file(s) without the .dcm suffix ignored (e.g. %s)", folder, len(other), other[0])
    return out


def _floats(ds, keyword: str, n: int, path: Path) -> np.ndarray:
    value = getattr(ds, keyword, None)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise LayoutError(f"{path}: DICOM {keyword} missing or malformed ({value!r}); cannot place the slice")
    return arr


def read_dicom_series(files: Sequence[Path]) -> DicomSeries:
    """Decode the given slices of one series (see the module docstring).

    Raises:
        LayoutError: no file, an unreadable file, missing geometry tags, multi-frame or colour data, inconsistent
            slices, duplicate positions or a non-uniform step. The message names the file or folder.
    """
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - pydicom is a dependency
        raise LayoutError("reading DICOM needs pydicom (pip install pydicom)") from e
    files = [Path(f) for f in files]
    if not files:
        raise LayoutError("no DICOM file given")
    folder = files[0].parent
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # InvalidDicomError, OSError, EOFError ...
            raise LayoutError(f"{path}: cannot read DICOM ({type(e).__name__}: {e})") from e
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise LayoutError(f"{path}: multi-frame DICOM is not supported (one slice per file expected)")
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise LayoutError(f"{path}: colour DICOM is not supported (SamplesPerPixel {ds.SamplesPerPixel})")
        iop = _floats(ds, "ImageOrientationPatient", 6, path)
        ipp = _floats(ds, "ImagePositionPatient", 3, path)
        spacing = _floats(ds, "PixelSpacing", 2, path)
        try:
            pixels = ds.pixel_array
        except Exception as e:  # missing pixel data, or a compressed transfer syntax without its decoder
            raise LayoutError(f"{path}: cannot decode the pixel data ({type(e).__name__}: {e})") from e
        if pixels.ndim != 2:
            raise LayoutError(f"{path}: expected a 2-D slice, got pixel data of shape {pixels.shape}")
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append((path, iop, ipp, spacing, pixels, slope, intercept))
        if len(slices) == 1:
            thickness = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)

    path0, iop0, _, spacing0, pixels0, _, _ = slices[0]
    row_dir, col_dir = iop0[:3], iop0[3:]
    if (abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3
            or abs(float(row_dir @ col_dir)) > 1e-3):
        raise LayoutError(f"{path0}: ImageOrientationPatient {iop0.tolist()} is not two orthonormal directions")
    for path, iop, _, spacing, pixels, _, _ in slices[1:]:
        if np.abs(iop - iop0).max() > _IOP_TOL:
            raise LayoutError(f"{path}: ImageOrientationPatient {iop.tolist()} differs from {path0.name} "
                              f"{iop0.tolist()}: not one series")
        if np.abs(spacing - spacing0).max() > _SPACING_TOL:
            raise LayoutError(f"{path}: PixelSpacing {spacing.tolist()} differs from {path0.name} {spacing0.tolist()}")
        if pixels.shape != pixels0.shape:
            raise LayoutError(f"{path}: slice size {pixels.shape} differs from {path0.name} {pixels0.shape}")
    normal = np.cross(row_dir, col_dir)
    order = sorted(range(len(slices)), key=lambda s: float(slices[s][2] @ normal))
    positions = np.array([slices[s][2] for s in order])
    if len(order) > 1:
        steps = np.diff(positions, axis=0)
        along = steps @ normal
        if np.any(along < 1e-3):
            k = int(np.argmin(along))
            raise LayoutError(
                f"{folder}: slices {slices[order[k]][0].name} and {slices[order[k + 1]][0].name} lie at the same "
                f"position (two series in one folder?)"
            )
        step = steps.mean(axis=0)
        dev = np.linalg.norm(steps - step, axis=1)
        if np.any(dev > 0.01 * np.linalg.norm(step) + 1e-3):
            k = int(np.argmax(dev))
            raise LayoutError(
                f"{folder}: slice spacing is not uniform (step {np.round(steps[k], 4).tolist()} mm between "
                f"{slices[order[k]][0].name} and {slices[order[k + 1]][0].name}, mean {np.round(step, 4).tolist()}): "
                f"missing slices or mixed series"
            )
    else:  # one slice: SpacingBetweenSlices, else SliceThickness, else 1 mm
        step = normal * thickness
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * spacing0[1]
    affine_lps[:3, 1] = col_dir * spacing0[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    data = np.empty((pixels0.shape[1], pixels0.shape[0], len(order)), dtype=np.float32)
    for k, s in enumerate(order):
        _, _, _, _, pixels, slope, intercept = slices[s]
        data[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    return DicomSeries(
        data=data,
        affine=LPS_TO_RAS @ affine_lps,
        files=tuple(slices[s][0] for s in order),
        rows=int(pixels0.shape[0]),
        columns=int(pixels0.shape[1]),
    )
