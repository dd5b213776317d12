"""Small file-system helpers of the bundle edge: atomic writes, fsync, safe names."""

from __future__ import annotations

import errno
from pathlib import Path

from airgap import atomic
from airgap.errors import AirgapError


class BundleError(AirgapError):
    exit_code = 6


class NotWritable(BundleError):
    exit_code = 2  # the user's choice of directory (read-only media, permissions), not the bundle

    default_hint = "choose a directory you can write to, or fix its permissions"


class DiskFull(BundleError):
    default_hint = "free some space (or use other media) and run the same command again: it resumes"


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the old file or the whole new one."""
    try:
        atomic.write_atomic(path, data, mode=mode)
    except OSError as exc:
        raise os_error(exc, f"writing {path}") from exc


def os_error(exc: OSError, doing: str) -> BundleError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"no space left {doing} ({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return NotWritable(f"permission denied {doing} ({exc.strerror})")
    return BundleError(f"I/O error {doing}: {exc.strerror or exc}", hint="check the disk or media, then run again")
