"""Read NIfTI volumes with nibabel and bring them into RAS voxel order.

"RAS voxel order" means: the array's voxel axes (i, j, k) are the ones whose directions are closest to world +x
(towards patient Right), +y (Anterior) and +z (Superior) of the NIfTI RAS+ world frame, each pointing the same way.
The data are only transposed and flipped, never resampled, and the returned affine is the exact voxel-centre ->
world-mm mapping of the reoriented array. For an oblique affine this is the *closest canonical* order (as
``nibabel.as_closest_canonical``): the axes are RAS-ordered but the affine keeps its rotation (it is not diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from fedgin.data.errors import NiftiError
from fedgin.data.source import broken_link

__all__ = ["RasVolume", "open_nifti", "ras_geometry", "read_nifti_ras", "load_nifti_ras", "reorient_to_ras", "voxel_spacing"]

_RAS = nio.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class RasVolume:
    """A volume in RAS voxel order plus where it came from.

    Attributes:
        data: 3-D array in RAS voxel order (possibly a flipped/transposed view of the decoded array; not copied).
        affine: 4x4 float64, voxel centre (i, j, k) of ``data`` -> world mm (RAS+).
        source_shape: the 3-D shape as stored in the file (before reorientation).
        source_affine: the file's 4x4 affine (before reorientation).
        path: the file read.
    """

    data: np.ndarray
    affine: np.ndarray
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    path: Path


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size (mm) along each voxel axis: the norms of the affine's first three columns."""
    a = np.asarray(affine, dtype=np.float64)
    return np.sqrt((a[:3, :3] ** 2).sum(axis=0))


def reorient_to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transpose/flip a 3-D array into RAS voxel order (closest canonical for oblique affines).

    Returns:
        (array, affine): the reoriented array (a view when possible: no copy of large volumes) and its exact
        voxel -> world affine.
    """
    affine = np.asarray(affine, dtype=np.float64)
    current = nio.io_orientation(affine)
    transform = nio.ornt_transform(current, _RAS)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return data, affine.copy()
    out = nio.apply_orientation(data, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, data.shape)
    return out, new_affine


def open_nifti(path: str | Path) -> tuple[nib.Nifti1Image, tuple[int, int, int]]:
    """Open a NIfTI lazily (header only) and validate it: exists, readable header, 3-D, finite invertible affine.

    Returns:
        (the nibabel image, its 3-D shape with a trailing singleton 4th axis dropped).

    Raises:
        NiftiError: naming the file (a dangling symbolic link: the link and its missing target). Corrupt voxel
            data is only detected when the data are read.
    """
    p = Path(path)
    if not p.is_file():
        if p.is_dir():
            raise NiftiError(f"{p}: is a folder, not a NIfTI file")
        raise NiftiError(broken_link(p) or f"{p}: NIfTI file not found")
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib/gzip errors, ...
        raise NiftiError(f"{p}: cannot read NIfTI ({type(e).__name__}: {e})") from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise NiftiError(f"{p}: expected a 3-D volume (a trailing singleton 4th axis is allowed), got shape {img.shape}")
    if min(shape) < 1:
        raise NiftiError(f"{p}: empty volume, shape {img.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(f"{p}: affine is not finite/invertible:\n{affine}")
    return img, shape  # type: ignore[return-value]


def ras_geometry(shape: tuple[int, ...], affine: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine a 3-D grid has after :func:`reorient_to_ras`, computed without any voxel data."""
    affine = np.asarray(affine, dtype=np.float64)
    transform = nio.ornt_transform(nio.io_orientation(affine), _RAS)
    ras_shape = [0, 0, 0]
    for src_axis, (dst_axis, _) in enumerate(transform):
        ras_shape[int(dst_axis)] = int(shape[src_axis])
    return tuple(ras_shape), affine @ nio.inv_ornt_aff(transform, shape)  # type: ignore[return-value]


def read_nifti_ras(path: str | Path, *, dtype: np.dtype | type | None = None) -> RasVolume:
    """Load a 3-D NIfTI file and reorient it to RAS voxel order.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        dtype: array dtype of the result; ``np.float32`` etc. apply the header's scaling and cast. ``None`` keeps
            nibabel's natural dtype (the stored dtype, or float when the header scales the values).

    Raises:
        NiftiError: the file is missing, unreadable or corrupt, not 3-D (a trailing singleton 4th axis is accepted
            and dropped), or its affine is not finite/invertible. The message names the file.
    """
    p = Path(path)
    img, shape = open_nifti(p)
    affine = np.asarray(img.affine, dtype=np.float64)
    try:
        if dtype is None:
            data = np.asanyarray(img.dataobj)
        else:
            data = np.asarray(img.dataobj, dtype=dtype)
    except Exception as e:  # truncated or corrupt compressed data shows up only here (lazy loading)
        raise NiftiError(f"{p}: cannot read the voxel data, file truncated or corrupt ({type(e).__name__}: {e})") from e
    data = data.reshape(shape)
    ras, ras_affine = reorient_to_ras(data, affine)
    return RasVolume(data=ras, affine=ras_affine, source_shape=shape, source_affine=affine, path=p)  # type: ignore[arg-type]


def load_nifti_ras(path: str | Path, *, dtype: np.dtype | type | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shorthand for :func:`read_nifti_ras` returning only ``(array, affine)`` in RAS voxel order."""
    vol = read_nifti_ras(path, dtype=dtype)
    return vol.data, vol.affine
