"""Small file-system helpers of the bundle edge: atomic writes, fsync, safe names."""

from __future__ import annotations

import errno
import re
from pathlib import Path

from airgap import atomic
from airgap.errors import AirgapError

STATE_DIR = ".airgap-export"  # inside an export's output directory while the export is unfinished


class BundleError(AirgapError):
    exit_code = 6


class NotWritable(BundleError):
    exit_code = 2  # the user's choice of directory (read-only media, permissions), not the bundle

    default_hint = "choose a directory you can write to, or fix its permissions"


class DiskFull(BundleError):
    default_hint = "free some space (or use other media) and run the same command again: it resumes"


# the names ISO 9660 gives a bundle's files without Rock Ridge or Joliet (d-characters: no "-", one "."; 8.3 at
# level 1; a ";1" version), in either case as the mounting system shows them
_MANGLED = re.compile(r"(?i)(?:manifest\.jso|manifest\.json|manifest_json\.sig|manifest\.sig|chunk_\d+\.bin|"
                      r"chunk\d{1,5}\.bin|chunk[-_]\d+\.bin)(?:;1)?")
_PLAIN_CHUNK = re.compile(r"chunk-\d{6}\.bin")
MANGLED_HINT = ("its file names look changed by a disc mastered without Rock Ridge or Joliet (ISO 9660 names: "
                "manifest_json.sig, CHUNK_000000.BIN;1, 8.3 names): master the disc again with "
                "`xorriso -as mkisofs -R -J -o disc.iso DIR`, or copy the files back under their names")


def mangled_names(directory: Path) -> bool:
    """Whether ``directory`` holds a bundle's files under the names a plain ISO 9660 disc gives them (and none
    under its own: a chunk named as airgap names it rules a disc without Rock Ridge out)."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return False
    if any(_PLAIN_CHUNK.fullmatch(n) for n in names):
        return False
    return any(_MANGLED.fullmatch(n) and n not in ("manifest.json", "manifest.json.sig") for n in names)


def no_manifest(directory: Path) -> BundleError:
    """The error for a directory without ``manifest.json``: an unfinished export, or not a bundle."""
    if (directory / STATE_DIR).is_dir():
        return BundleError(f"{directory} holds an unfinished export: its manifest.json is written last",
                           hint="run the same `airgap export` again to finish it (it resumes)")
    if mangled_names(directory):
        return BundleError(f"{directory} holds no manifest.json", hint=MANGLED_HINT)
    return BundleError(f"{directory} holds no manifest.json",
                       hint="point at the bundle directory (the one with manifest.json and its .sig)")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary name, fsync, rename: a reader sees the old file or the whole new one."""
    try:
        atomic.write_atomic(path, data, mode=mode)
    except OSError as exc:
        raise os_error(exc, f"writing {path}") from exc


class FileTooLarge(BundleError):
    exit_code = 2  # the chunk size chosen for these media, not the bundle

    default_hint = "choose a --chunk-size the file system takes: fat32 (4 GiB less a byte), or a smaller size"


def os_error(exc: OSError, doing: str) -> BundleError:
    if exc.errno == errno.EFBIG:  # FAT32's 4 GiB per file (or a file size limit): freeing space would not help
        return FileTooLarge(f"the file system cannot hold a file this large {doing} ({exc.strerror})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"no space left {doing} ({exc.strerror})")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return NotWritable(f"permission denied {doing} ({exc.strerror})")
    return BundleError(f"I/O error {doing}: {exc.strerror or exc}", hint="check the disk or media, then run again")
