"""Where outputs go: checked paths, atomic writes, and one-line descriptions of what the environment refused.

Rules shared by every command that writes:

* an output path that is a symbolic link is refused (the message says where it points): outputs go to the path
  given, never through or instead of a link without saying so; give the link's target instead;
* an output folder must not be a file and must not lie under a file; an output file must not be a folder;
* a file is written to a temporary name beside it and renamed into place, so a full disk, a read-only file system
  or Ctrl-C leaves the previous file (or nothing), never half a file, and no temporary file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["OutputPathError", "check_output_dir", "check_output_file", "write_text_atomic", "describe_os_error"]


class OutputPathError(ValueError):
    """An output path cannot be used as given (a link, a file where a folder is needed, ...)."""


def _under_file(path: Path) -> Path | None:
    """The first existing parent of ``path`` that is not a folder, if any."""
    for parent in list(path.parents)[::-1]:
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _check_link(path: Path, option: str) -> None:
    if path.is_symlink():
        target = os.path.realpath(path)
        gone = "" if os.path.exists(target) else ", which does not exist"
        raise OutputPathError(f"{option} {path}: is a symbolic link to {target}{gone}; fedgin does not write "
                              "through or replace links: give the real path")


def check_output_dir(path: str | Path, option: str = "--output") -> Path:
    """Refuse a folder path that is a link, a file, or lies under a file; returns it as a ``Path``."""
    p = Path(path)
    _check_link(p, option)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{option} {p}: exists and is a file, not a folder")
    blocker = _under_file(p)
    if blocker is not None:
        raise OutputPathError(f"{option} {p}: cannot be created, {blocker} is a file")
    return p


def check_output_file(path: str | Path, option: str = "--output") -> Path:
    """Refuse a file path that is a link, a folder, or lies under a file; returns it as a ``Path``."""
    p = Path(path)
    _check_link(p, option)
    if p.is_dir():
        raise OutputPathError(f"{option} {p}: is a folder; give a file name (e.g. {p / 'results.json'})")
    blocker = _under_file(p)
    if blocker is not None:
        raise OutputPathError(f"{option} {p}: cannot be created, {blocker} is a file")
    return p


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder (removed on any failure)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        try:
            tmp.write_text(text)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(e.filename or p)) from e
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def describe_os_error(e: OSError) -> str:
    """One line for an ``OSError``: the path, what the system said, and what it means."""
    where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else "a file (unnamed)"
    hint = _HINTS.get(e.errno or -1)
    what = e.strerror or str(e)
    verb = "cannot write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "cannot use"
    return f"{verb} {where}: {what}" + (f" ({hint})" if hint and hint.lower() != what.lower() else "")
