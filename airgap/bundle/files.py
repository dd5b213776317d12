"""Small file-system helpers of the bundle edge: atomic writes, fsync, safe names."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
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


REMOVABLE_ROOTS = (Path("/media"), Path("/run/media"), Path("/mnt"))
"""Where removable media are mounted, by convention (udisks, desktops, operators by hand)."""


def unmounted_medium(path: Path, roots: Sequence[Path] | None = None, mountinfo: str | None = None) -> Path | None:
    """The place a medium was meant to be mounted when ``path`` lies under one of ``roots`` but nothing is
    mounted there, nor anywhere between it and ``path`` (``/media/usb`` for ``/media/usb/bundle`` when the stick
    is not mounted): what is written there goes onto the disk below, and hides under the medium once it is
    mounted. None when something is mounted on the way, or ``path`` is elsewhere."""
    real = Path(os.path.realpath(path))
    mounts = _mounts(mountinfo)
    points = {p for p, _ in mounts} if mounts is not None else None
    for root in REMOVABLE_ROOTS if roots is None else roots:
        if real != root and root not in real.parents:
            continue
        parts = real.relative_to(root).parts
        levels = [root.joinpath(*parts[:n]) for n in range(len(parts) + 1)]
        # a bind mount within one file system is a mount point too, which os.path.ismount cannot see
        if any((lv in points) if points is not None else os.path.ismount(lv) for lv in levels):
            return None
        return root.joinpath(*parts[: 2 if root == Path("/run/media") else 1])  # /run/media/USER/LABEL
    return None


def unmounted_note(path: Path) -> str | None:
    """What to tell an operator about to write a bundle to ``path`` where no medium is mounted."""
    spot = unmounted_medium(path)
    if spot is None:
        return None
    return (f"nothing is mounted at {spot}: the bundle goes onto the disk under it, not onto a medium; if one was "
            f"meant, stop (Ctrl-C), delete {path}, mount the medium and run the same command again")


FAT_TYPES = frozenset({"vfat", "msdos", "umsdos", "fat", "fuse.fusefat"})
FAT_MAX_FILE = 4 * 1024**3 - 1  # FAT32 keeps a file's size in 32 bits


def _mounts(mountinfo: str | None = None) -> list[tuple[Path, str]] | None:
    """(mount point, file system type) of every mount, in ``/proc/self/mountinfo`` order; None where that file
    cannot be read (not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    out = []
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) >= 5 and after:
            out.append((Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[4])), after.split()[0]))
    return out


def file_system_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the file system ``path`` is (or would be created) on, as the kernel names it (``vfat``, ``ext4``,
    ``fuseblk``, ...), from ``/proc/self/mountinfo``; None where that cannot be read (not Linux)."""
    mounts = _mounts(mountinfo)
    if mounts is None:
        return None
    real = Path(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for point, fs in mounts:
        if point == real or point in real.parents:
            depth = len(point.parts)
            if best is None or depth >= best[0]:  # the deepest; of mounts stacked on one point, the last
                best = (depth, fs)
    return best[1] if best else None


def refuse_file_size(out_dir: Path, chunk_size: int) -> None:
    """Refuse chunks larger than the file system of ``out_dir`` holds (FAT32: 4 GiB less a byte), before anything is
    written: otherwise the first chunk fails only once 4 GiB of it are on the medium."""
    fs = file_system_type(out_dir)
    if fs in FAT_TYPES and chunk_size > FAT_MAX_FILE:
        raise FileTooLarge(f"{out_dir} is on a FAT file system ({fs}), whose files hold at most 4 GiB less a byte, "
                           f"and the chunk size is {chunk_size} bytes")


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
