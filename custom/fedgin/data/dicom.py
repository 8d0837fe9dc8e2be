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

Finding series (:func:`find_dicom_series`, headers only, no pixel data decoded): every DICOM Part 10 file (the
``DICM`` marker at byte 128, any file name) under a folder and its sub-folders, grouped by SeriesInstanceUID (files
without one: by folder, SeriesDescription and SeriesNumber). A group is refused, with the reason, when it is not an
image (no Rows/Columns, a Segmentation or RT Structure Set object), multi-frame, colour, a localizer (ImageType
``LOCALIZER``), has fewer than :data:`MIN_SLICES` slices, lacks the geometry tags, or fails the stacking rules above
(mixed orientation, duplicate positions, non-uniform step); the others are stacked exactly as
:func:`read_dicom_series` stacks them.

``pydicom`` is imported only when a series is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgin.data.errors import LayoutError
from fedgin.data.source import broken_link

__all__ = ["LPS_TO_RAS", "MIN_SLICES", "DicomSeries", "SeriesInfo", "RefusedSeries", "dicom_files",
           "find_dicom_series", "is_dicom_file", "read_dicom_series"]

log = logging.getLogger(__name__)

#: world LPS -> RAS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_IOP_TOL = 1e-4
_SPACING_TOL = 1e-3
#: the fewest slices a series needs to be a volume (one or two: a localizer, a key image)
MIN_SLICES = 3
#: SOP classes that hold Rows/Columns but are not images of the patient
_NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM Segmentation (SEG) object",
    "1.2.840.10008.5.1.4.1.1.66.7": "a DICOM Label Map Segmentation object",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT Structure Set",
}


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


@dataclass(frozen=True)
class _Slice:
    """The geometry of one slice: its file, IOP (6), IPP (3, mm), PixelSpacing (2, mm), (rows, columns)."""

    path: Path
    iop: np.ndarray
    ipp: np.ndarray
    spacing: np.ndarray
    shape: tuple[int, ...]


def _stack(slices: Sequence[_Slice], thickness: float) -> tuple[list[int], np.ndarray]:
    """Check that the slices form one uniform stack (module docstring) and order them.

    Args:
        thickness: the step (mm) of a single slice (SpacingBetweenSlices, else SliceThickness, else 1).

    Returns:
        (the slice indices by ascending position along the normal, the 4x4 LPS affine of that stack).

    Raises:
        LayoutError: not orthonormal, differing IOP/PixelSpacing/size, duplicate positions, non-uniform step.
    """
    folder = slices[0].path.parent
    s0 = slices[0]
    row_dir, col_dir = s0.iop[:3], s0.iop[3:]
    if (abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3
            or abs(float(row_dir @ col_dir)) > 1e-3):
        raise LayoutError(f"{s0.path}: ImageOrientationPatient {s0.iop.tolist()} is not two orthonormal directions")
    for s in slices[1:]:
        if np.abs(s.iop - s0.iop).max() > _IOP_TOL:
            raise LayoutError(f"{s.path}: ImageOrientationPatient {s.iop.tolist()} differs from {s0.path.name} "
                              f"{s0.iop.tolist()}: not one series")
        if np.abs(s.spacing - s0.spacing).max() > _SPACING_TOL:
            raise LayoutError(f"{s.path}: PixelSpacing {s.spacing.tolist()} differs from {s0.path.name} "
                              f"{s0.spacing.tolist()}")
        if tuple(s.shape) != tuple(s0.shape):
            raise LayoutError(f"{s.path}: slice size {tuple(s.shape)} differs from {s0.path.name} {tuple(s0.shape)}")
    normal = np.cross(row_dir, col_dir)
    order = sorted(range(len(slices)), key=lambda i: float(slices[i].ipp @ normal))
    positions = np.array([slices[i].ipp for i in order])
    if len(order) > 1:
        steps = np.diff(positions, axis=0)
        along = steps @ normal
        if np.any(along < 1e-3):
            k = int(np.argmin(along))
            raise LayoutError(
                f"{folder}: slices {slices[order[k]].path.name} and {slices[order[k + 1]].path.name} lie at the same "
                f"position (two series in one folder?)"
            )
        step = steps.mean(axis=0)
        dev = np.linalg.norm(steps - step, axis=1)
        if np.any(dev > 0.01 * np.linalg.norm(step) + 1e-3):
            k = int(np.argmax(dev))
            raise LayoutError(
                f"{folder}: slice spacing is not uniform (step {np.round(steps[k], 4).tolist()} mm between "
                f"{slices[order[k]].path.name} and {slices[order[k + 1]].path.name}, mean "
                f"{np.round(step, 4).tolist()}): missing slices or mixed series"
            )
    else:  # one slice: SpacingBetweenSlices, else SliceThickness, else 1 mm
        step = normal * thickness
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * s0.spacing[1]
    affine_lps[:3, 1] = col_dir * s0.spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    return order, affine_lps


def _thickness(ds) -> float:
    return float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1.0)


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
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # InvalidDicomError, OSError, EOFError ...
            raise LayoutError(f"{path}: cannot read DICOM ({type(e).__name__}: {e})") from e
        if len(ds) == 0:  # pydicom's answer to encapsulated pixel data cut short
            raise LayoutError(f"{path}: cannot read DICOM (no data elements: the file is truncated or corrupt)")
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
            thickness = _thickness(ds)

    order, affine_lps = _stack([_Slice(p, iop, ipp, sp, px.shape) for p, iop, ipp, sp, px, _, _ in slices],
                               thickness)
    pixels0 = slices[0][4]
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


@dataclass(frozen=True)
class SeriesInfo:
    """A series found by :func:`find_dicom_series`: checked from its headers, pixel data not decoded.

    Attributes:
        uid: SeriesInstanceUID (``""`` when the files have none, e.g. blanked by anonymisation).
        description: SeriesDescription (``""`` when absent).
        folder: the deepest folder holding all its files.
        files: its files in stack order (ascending position along the slice normal), as :func:`read_dicom_series`
            orders them.
        shape: ``(columns, rows, slices)`` of the volume :func:`read_dicom_series` returns.
        affine: 4x4 voxel centre -> world mm, RAS+, of that volume.
    """

    uid: str
    description: str
    folder: Path
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def label(self) -> str:
        """``<folder> [series <uid> '<description>']``: how messages and reports name the series."""
        return _label(self.folder, self.uid, self.description)


@dataclass(frozen=True)
class RefusedSeries:
    """A group of DICOM files :func:`find_dicom_series` does not offer as a volume, and why.

    Attributes:
        uid, description, folder, files: as in :class:`SeriesInfo` (``files`` unordered).
        reason: why the group is not a volume (the message names a file where one is at fault).
        header: the first file's header (pydicom ``Dataset``, no pixel data), ``None`` when it cannot be read.
    """

    uid: str
    description: str
    folder: Path
    files: tuple[Path, ...]
    reason: str
    header: object | None = None

    @property
    def label(self) -> str:
        return _label(self.folder, self.uid, self.description) if self.header is not None else str(self.files[0])


def _label(folder: Path, uid: str, description: str) -> str:
    what = f"series {uid}" if uid else "series without SeriesInstanceUID"
    return f"{folder} [{what}" + (f" {description!r}]" if description else "]")


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` at byte 128 (whatever its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _candidates(folder: Path, skip: Callable[[Path], bool]) -> list[Path]:
    """Every DICOM Part 10 file under ``folder`` (sub-folders included; hidden files and folders, and links to
    folders, skipped), sorted."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            p = Path(root) / name
            if not name.startswith(".") and not skip(p) and p.is_file() and is_dicom_file(p):
                out.append(p)
    return out


def _text(ds, keyword: str) -> str:
    return str(getattr(ds, keyword, "") or "").strip()


def _refusal(headers: Sequence[tuple[Path, object]], min_slices: int) -> str | tuple[list[Path], tuple, np.ndarray]:
    """Why the group of ``(file, header)`` is not a volume, or its (files in stack order, shape, RAS affine)."""
    for path, ds in headers:
        sop = _text(ds, "SOPClassUID") or _text(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")
        if sop in _NOT_IMAGES or getattr(ds, "Rows", None) is None or getattr(ds, "Columns", None) is None:
            kind = _NOT_IMAGES.get(sop) or f"a DICOM object without Rows/Columns (SOP class {sop or 'unknown'})"
            return f"not an image: {path.name} is {kind}"
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames != 1:
            return (f"{path}: multi-frame DICOM ({frames} frames in one file) is not supported; export the series "
                    "as one slice per file")
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            return f"{path}: colour DICOM is not supported (SamplesPerPixel {ds.SamplesPerPixel})"
        image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
        if "LOCALIZER" in image_type:
            shown = "\\".join(image_type)
            return f"a localizer (scout) image: {path.name} has ImageType {shown}"
    if len(headers) < min_slices:
        return f"{len(headers)} slice(s): a volume needs at least {min_slices}"
    try:
        slices = [_Slice(p, _floats(ds, "ImageOrientationPatient", 6, p), _floats(ds, "ImagePositionPatient", 3, p),
                         _floats(ds, "PixelSpacing", 2, p), (int(ds.Rows), int(ds.Columns))) for p, ds in headers]
        order, affine_lps = _stack(slices, _thickness(headers[0][1]))
    except LayoutError as e:
        return str(e)
    rows, columns = slices[0].shape
    return [slices[i].path for i in order], (columns, rows, len(order)), LPS_TO_RAS @ affine_lps


def find_dicom_series(folder: str | Path, *, min_slices: int = MIN_SLICES,
                      skip: Callable[[Path], bool] = lambda p: False) -> tuple[list[SeriesInfo], list[RefusedSeries]]:
    """The DICOM series under ``folder`` (module docstring), from their headers only.

    Args:
        min_slices: fewer slices than this and the series is refused.
        skip: files never looked at (e.g. NIfTI files, read elsewhere).

    Returns:
        (the series that are volumes, the refused groups with their reasons), each sorted by folder then
        description then UID. Unreadable DICOM files are refused one by one.
    """
    import pydicom

    groups: dict[tuple, list[tuple[Path, object]]] = {}
    refused = []
    for path in _candidates(Path(folder), skip):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - InvalidDicomError, OSError, EOFError, a bad element ...
            refused.append(RefusedSeries("", "", path.parent, (path,), f"{path}: cannot read the DICOM header "
                                         f"({type(e).__name__}: {e})"))
            continue
        uid = _text(ds, "SeriesInstanceUID")
        key = (uid,) if uid else ("", str(path.parent), _text(ds, "SeriesDescription"), _text(ds, "SeriesNumber"))
        groups.setdefault(key, []).append((path, ds))
    found = []
    for headers in groups.values():
        first = headers[0][1]
        uid, desc = _text(first, "SeriesInstanceUID"), _text(first, "SeriesDescription")
        files = tuple(p for p, _ in headers)
        where = Path(os.path.commonpath([str(p.parent) for p in files]))
        result = _refusal(headers, min_slices)
        if isinstance(result, str):
            refused.append(RefusedSeries(uid, desc, where, files, result, first))
        else:
            ordered, shape, affine = result
            found.append(SeriesInfo(uid, desc, where, tuple(ordered), shape, affine))
    key = lambda s: (str(s.folder), s.description, s.uid, str(s.files[0]))  # noqa: E731
    return sorted(found, key=key), sorted(refused, key=key)
