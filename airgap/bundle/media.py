"""Where a bundle lands: the mounts under it, the medium its file system is (FAT's file size limit), and a
removable medium that is not mounted where the output names it."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from pathlib import Path

from airgap.bundle.files import FileTooLarge


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
        # udisks mounts a desktop user's media at /run/media/USER/LABEL (Fedora) or /media/USER/LABEL (Debian,
        # Ubuntu); usbmount and operators by hand at /media/usb0, /mnt/stick
        deep = root == Path("/run/media") or (len(parts) >= 2 and _is_user(parts[0]))
        return root.joinpath(*parts[: 2 if deep else 1])
    return None


def _is_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except (KeyError, OSError):
        return False
    return True


def unmounted_note(path: Path) -> str | None:
    """What to tell an operator about to write a bundle to ``path`` where no medium is mounted."""
    spot = unmounted_medium(path)
    if spot is None:
        return None
    return (f"nothing is mounted at {spot}: the bundle goes onto the disk under it, not onto a medium; if one was "
            f"meant, stop (Ctrl-C), delete {path}, mount the medium and run the same command again")


FAT_TYPES = frozenset({"vfat", "msdos", "umsdos", "fat", "fuse.fusefat"})
FAT_MAX_FILE = 4 * 1024**3 - 1  # FAT32 keeps a file's size in 32 bits


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
