"""Where a bundle lands (bundle/media.py: mounts, FAT) and how its files are written and named (bundle/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airgap.bundle.media import unmounted_medium


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


def test_a_users_media_directory_names_the_medium_in_it(tmp_path: Path) -> None:
    """Debian's and Ubuntu's desktops mount a stick at /media/USER/LABEL: the note names the stick's place, not
    the user's directory (nor a directory of the bundle for a name that is no user's)."""
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    media = tmp_path / "media"
    assert unmounted_medium(media / user / "STICK" / "bundle", [media]) == media / user / "STICK"
    assert unmounted_medium(media / user / "STICK", [media]) == media / user / "STICK"
    assert unmounted_medium(media / user, [media]) == media / user
    assert unmounted_medium(media / "no-such-user-xq" / "bundle" / "x", [media]) == media / "no-such-user-xq"


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


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 8:17 / /media/usb rw,nosuid shared:20 - vfat /dev/sdb1 rw,fmask=0022
41 22 8:33 / /media/my\\040stick rw,nosuid shared:21 - exfat /dev/sdc1 rw
42 22 0:50 / /mnt/ntfs rw,nosuid shared:22 - fuseblk /dev/sdd1 rw,user_id=0
43 42 8:49 / /mnt/ntfs rw,nosuid shared:23 - vfat /dev/sde1 rw
"""


def test_the_file_system_of_a_path_is_its_deepest_mount() -> None:
    from airgap.bundle.media import file_system_type

    assert file_system_type(Path("/media/usb/bundle/x"), MOUNTINFO) == "vfat"
    assert file_system_type(Path("/media/usb"), MOUNTINFO) == "vfat"
    assert file_system_type(Path("/media/usbx/bundle"), MOUNTINFO) == "ext4"
    assert file_system_type(Path("/media/my stick/bundle"), MOUNTINFO) == "exfat"  # \\040 is a space
    assert file_system_type(Path("/mnt/ntfs/b"), MOUNTINFO) == "vfat"  # stacked on one point: the last one
    assert file_system_type(Path("/srv/b"), MOUNTINFO) == "ext4"
    assert file_system_type(Path("/srv/b"), "garbage\n") is None


def test_a_chunk_larger_than_fat32_holds_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first chunk used to fail only once 4 GiB of it were on the stick (minutes of writing)."""
    import airgap.bundle.media as media
    from airgap.bundle.files import FileTooLarge
    from airgap.bundle.media import refuse_file_size

    monkeypatch.setattr(media, "file_system_type", lambda path, mountinfo=None: "vfat")
    fat = r"is on a FAT file system \(vfat\).*--chunk-size the file system takes: fat32"
    with pytest.raises(FileTooLarge, match=fat) as err:
        refuse_file_size(tmp_path / "bundle", 5 * 1024**3)
    assert err.value.exit_code == 2
    refuse_file_size(tmp_path / "bundle", 4 * 1024**3 - 1)  # the fat32 preset fits
    monkeypatch.setattr(media, "file_system_type", lambda path, mountinfo=None: "exfat")
    refuse_file_size(tmp_path / "bundle", 5 * 1024**3)  # exFAT has no such limit
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("names", [
    ["manifest.json", "manifest_json.sig", "chunk_000000.bin"],  # ISO 9660 level 3, no Rock Ridge or Joliet
    ["MANIFEST.JSO", "MANIFEST.SIG", "CHUNK000.BIN"],  # 8.3
    ["MANIFEST.JSON;1", "MANIFEST_JSON.SIG;1", "CHUNK_000000.BIN;1"],  # with version numbers
])
def test_a_disc_mastered_without_rock_ridge_is_named_as_such(tmp_path: Path, names: list[str]) -> None:
    from airgap.bundle.files import BundleError
    from airgap.bundle.reader import read_signed_manifest

    for name in names:
        (tmp_path / name).write_bytes(b"{}")
    with pytest.raises(BundleError, match="without Rock Ridge or Joliet.*xorriso -as mkisofs -R -J"):
        read_signed_manifest(tmp_path, [])


def test_a_plain_bundle_directory_is_not_taken_for_a_mangled_disc(tmp_path: Path) -> None:
    from airgap.bundle.files import BundleError
    from airgap.bundle.reader import read_signed_manifest

    for name in ("manifest.json", "chunk-000000.bin", "parity-000000-000.bin", "manifest.json.sig.part",
                 "manifest.json.sha256"):  # a download cut short, a checksum file: not a disc's names
        (tmp_path / name).write_bytes(b"{}")
    with pytest.raises(BundleError, match="copy the signature along with the bundle") as err:
        read_signed_manifest(tmp_path, [])
    assert "Rock Ridge" not in str(err.value)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json.sig").write_bytes(b"{}")
    with pytest.raises(BundleError, match="point at the bundle directory"):
        read_signed_manifest(tmp_path, [])


def test_a_file_system_that_does_not_say_its_size_is_not_taken_for_a_full_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fusefat answers statvfs with 0 blocks: "0 B free" refused every export onto it, also with --chunk-size
    fat32. A size of 0 is no size; a real one still counts."""
    import shutil
    from collections import namedtuple

    from airgap.bundle.files import BundleError
    from airgap.export import ExportOptions, _check_space

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, 0))
    _check_space(tmp_path, 10 << 20, ExportOptions(chunk_size=1 << 20))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - 4096, 4096))
    with pytest.raises(BundleError, match="has 4 KiB free but the bundle needs up to"):
        _check_space(tmp_path, 10 << 20, ExportOptions(chunk_size=1 << 20))


def test_a_bind_mount_counts_as_the_medium(tmp_path: Path) -> None:
    """A bind mount within one file system is a mount point that os.path.ismount cannot see: mountinfo can."""
    media = tmp_path / "media"
    (media / "usb").mkdir(parents=True)
    info = f"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n50 22 8:1 /srv/stick {media}/usb rw - ext4 /dev/sda1 rw\n"
    assert unmounted_medium(media / "usb" / "bundle", [media], mountinfo=info) is None
    assert unmounted_medium(media / "usb" / "bundle", [media], mountinfo=info.splitlines()[0]) == media / "usb"
