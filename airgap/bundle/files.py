"""Small file-system helpers of the bundle edge: atomic writes, fsync, safe names."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from airgap.errors import AirgapError


class BundleError(AirgapError):
    exit_code = 6


class DiskFull(BundleError):
    default_hint = "free some space (or use other media) and run the same command again: it resumes"


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, f"writing {path}") from exc
    fsync_dir(path.parent)


def os_error(exc: OSError, doing: str) -> BundleError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"no space left {doing} ({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BundleError(f"permission denied {doing} ({exc.strerror})",
                           hint="choose a directory you can write to, or fix its permissions")
    return BundleError(f"I/O error {doing}: {exc.strerror or exc}", hint="check the disk or media, then run again")
