"""Non-finite voxels (NaN, +Inf, -Inf) in a scan: refused with the file, the count and where, or repaired.

One check guards every place a scan enters fedgin: ``prepare`` (the decoded source image), ``predict`` and
``preview`` (the NIfTI read), ``evaluate`` and training (the cached slices). A few NaN voxels would otherwise turn
the whole z-scored volume into NaN (the mean and std are NaN) and every prediction into background.

Policies:

* ``error`` (default): :class:`NonFiniteError`, naming the file, the counts of NaN / +Inf / -Inf, the first bad voxel
  and the axial slices holding them.
* ``repair``: NaN and -Inf become the smallest finite value of the volume, +Inf the largest (background-like for CT
  air and MRI noise; the z-score then sees finite numbers only), with a warning that names the file and the counts.
  A volume with no finite voxel at all is refused under either policy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dataclasses

import nibabel.orientations as nio
import numpy as np

from fedgin.data.errors import PrepareError
from fedgin.data.nifti import RasVolume

__all__ = ["NONFINITE_POLICIES", "NonFiniteError", "check_finite", "nonfinite_summary", "finite_volume"]

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("error", "repair")
_RAS_ORNT = nio.axcodes2ornt(("R", "A", "S"))


class NonFiniteError(PrepareError):
    """A scan holds NaN or infinite voxels (the message names the file, the counts and where)."""


def nonfinite_summary(volume: np.ndarray, slice_axis: int = -1) -> str | None:
    """``None`` when every voxel is finite, else e.g. ``"3 NaN, 1 +Inf voxel(s) of 262144; first at voxel (4, 5, 6);
    axial slice(s) 6-9"``: the voxel index in the array's axis order, the slices along ``slice_axis`` (the last
    axis of a RAS volume, the first of a cached ``(S, H, W)`` stack)."""
    bad = ~np.isfinite(volume)
    if not bad.any():
        return None
    nan = int(np.isnan(volume).sum())
    pos = int(np.isposinf(volume).sum())
    neg = int(np.isneginf(volume).sum())
    counts = ", ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (pos, "+Inf"), (neg, "-Inf")) if n)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    text = f"{counts} voxel(s) of {volume.size}; first at voxel {first}"
    if volume.ndim == 3:
        axis = slice_axis % 3
        zs = np.flatnonzero(bad.any(axis=tuple(a for a in range(3) if a != axis)))
        text += f"; axial slice(s) {zs[0]}-{zs[-1]}" if len(zs) > 1 else f"; axial slice {zs[0]}"
    return text


def check_finite(volume: np.ndarray, source: str | Path, policy: str = "error", what: str = "image") -> np.ndarray:
    """Return ``volume`` when it is finite; otherwise refuse or repair it (see the module docstring).

    Args:
        volume: a float array (any shape; 3-D volumes are described by axial slice, the last axis).
        source: the file (or DICOM series folder) it was read from, for the message.
        policy: ``error`` or ``repair``.
        what: what the array is, for the message (``image``, ``cached slices``).

    Returns:
        ``volume`` itself when finite, else (``repair``) a repaired float32 copy.

    Raises:
        NonFiniteError: non-finite voxels under ``error``, or no finite voxel at all.
        ValueError: an unknown policy.
    """
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"non-finite policy must be one of {', '.join(NONFINITE_POLICIES)}, got {policy!r}")
    if not np.issubdtype(np.asarray(volume).dtype, np.floating):
        return volume  # integer voxels are always finite
    summary = nonfinite_summary(volume)
    if summary is None:
        return volume
    finite = np.isfinite(volume)
    if not finite.any():
        raise NonFiniteError(f"{source}: the {what} has no finite voxel at all ({summary})")
    if policy == "error":
        raise NonFiniteError(f"{source}: the {what} holds non-finite values: {summary}. Fix the file, or repair "
                             "them with --nonfinite repair (NaN and -Inf -> the volume's minimum, +Inf -> its maximum)")
    lo, hi = float(volume[finite].min()), float(volume[finite].max())
    out = np.array(volume, dtype=np.float32, copy=True)
    out[np.isnan(out) | np.isneginf(out)] = lo
    out[np.isposinf(out)] = hi
    log.warning("%s: repaired non-finite values of the %s (%s): NaN/-Inf -> %g, +Inf -> %g", source, what, summary,
                lo, hi)
    return out


def finite_volume(vol: RasVolume, nonfinite: str = "error") -> tuple[RasVolume, str | None]:
    """``vol`` with its non-finite voxels refused or repaired (:func:`check_finite`), and what was
    repaired (``None``: nothing). The check runs on the file's own voxel order, so the voxel and the axial slices a
    message names are those a viewer shows for the file."""
    to_file = nio.ornt_transform(_RAS_ORNT, nio.io_orientation(vol.source_affine))
    stored = nio.apply_orientation(vol.data, to_file)  # a view: flips and transposes only
    data = check_finite(stored, vol.path, nonfinite)
    if data is stored:
        return vol, None
    ras = nio.apply_orientation(data, nio.ornt_transform(nio.io_orientation(vol.source_affine), _RAS_ORNT))
    return dataclasses.replace(vol, data=np.ascontiguousarray(ras)), nonfinite_summary(stored)
