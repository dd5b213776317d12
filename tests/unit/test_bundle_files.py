"""Where a bundle would land when the medium meant for it is not mounted (bundle/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airgap.bundle.files import unmounted_medium


def test_a_path_under_a_media_root_with_nothing_mounted_names_the_mount_point(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "usb").mkdir(parents=True)
    assert unmounted_medium(media / "usb" / "bundle", [media]) == media / "usb"
    assert unmounted_medium(media / "usb" / "a" / "b", [media]) == media / "usb"
    assert unmounted_medium(media / "stick-not-made-yet" / "bundle", [media]) == media / "stick-not-made-yet"
    assert unmounted_medium(media, [media]) == media
    (tmp_path / "link").symlink_to(media / "usb")  # the path as the file system resolves it
    assert unmounted_medium(tmp_path / "link" / "bundle", [media]) == media / "usb"
    assert unmounted_medium(tmp_path / "elsewhere" / "bundle", [media]) is None
    assert unmounted_medium(tmp_path / "mediax" / "bundle", [media]) is None


def _mount_below_a_plain_directory() -> Path | None:
    """A mount point of this machine whose parent directory is not one (e.g. /dev/shm under /dev)."""
    with open("/proc/self/mountinfo") as f:
        points = [Path(line.split()[4].replace("\\040", " ")) for line in f]
    return next((p for p in points if p != Path("/") and p.parent != p and not os.path.ismount(p.parent)
                 and p.is_dir()), None)


def test_something_mounted_on_the_way_is_taken_for_the_medium() -> None:
    assert unmounted_medium(Path("/anything/bundle"), [Path("/")]) is None  # / itself is a mount point
    point = _mount_below_a_plain_directory()
    if point is None:
        pytest.skip("no mount point below a plain directory on this machine")
    assert unmounted_medium(point / "bundle", [point.parent]) is None
    assert unmounted_medium(point.parent / "not-a-mount-point" / "bundle", [point.parent]) == \
        point.parent / "not-a-mount-point"


def test_aborting_a_chunk_on_a_medium_that_is_gone_keeps_the_first_error(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A stick pulled out mid-export (a FUSE mount whose daemon died: ENOTCONN, a kernel mount: EIO) fails the
    write, then the removal of the unfinished chunk too: that second error must not replace the first one."""
    import errno

    from airgap.bundle.chunks import ChunkWriter, Journal

    writer = ChunkWriter(tmp_path, 1 << 20, Journal(tmp_path / "journal.jsonl"))
    writer.write(b"x" * 5000)
    real_unlink = Path.unlink

    def gone(self: Path, missing_ok: bool = False) -> None:
        if self.name.endswith(".partial"):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", gone)
    writer.abort()  # does not raise
    assert writer._file is None
