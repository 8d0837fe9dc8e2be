"""Exceptions raised while turning a source dataset into the slice cache.

Every message names the offending file, case or folder first, so that a user can fix the input without a traceback.
All of them are ``ValueError`` subclasses (bad input, not a bug).
"""

from __future__ import annotations

__all__ = ["PrepareError", "NiftiError", "LayoutError"]


class PrepareError(ValueError):
    """Preparing a site failed because of its input or arguments; the message names the file/case/folder."""


class NiftiError(PrepareError):
    """A NIfTI file is missing, unreadable/corrupt, or not a 3-D volume."""


class LayoutError(PrepareError):
    """A dataset folder does not follow its layout: missing organ mask, grid mismatch, bad meta.csv, ..."""
