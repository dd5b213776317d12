"""DirectWriter: exact bytes whatever the sizes and alignment, through O_DIRECT or the buffered fallback."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from airgap.bundle import directio
from airgap.bundle.directio import ALIGN, STAGE, DirectWriter, stage_buffer

SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, STAGE - 1, STAGE, STAGE + 1, 2 * STAGE + ALIGN, 3 * STAGE + 12345]


def _write(path: Path, data: bytes, rng: random.Random, **kw: object) -> DirectWriter:
    w = DirectWriter(path, **kw)  # type: ignore[arg-type]
    at = 0
    while at < len(data):
        n = rng.choice([1, 7, ALIGN, 65536, 1 << 20, 5 << 20, len(data)])
        w.write(memoryview(data)[at : at + n])
        at += n
    w.close()
    return w


@pytest.mark.parametrize("size", SIZES)
def test_exact_bytes(tmp_path: Path, size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    path = tmp_path / "f"
    w = DirectWriter(path)
    assert w.direct, "the test directory's file system takes O_DIRECT: the direct path must be the one tested"
    w.abort()
    _write(path, data, rng)
    assert path.read_bytes() == data


def test_shared_buffers_are_reused_and_kept(tmp_path: Path) -> None:
    bufs = (stage_buffer(), stage_buffer())
    rng = random.Random(1)
    for n in range(3):
        data = rng.randbytes(2 * STAGE + 1000 * n)
        h = hashlib.sha256()
        _write(tmp_path / f"f{n}", data, rng, buffers=bufs, hasher=h)
        assert (tmp_path / f"f{n}").read_bytes() == data
        assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert not any(b.closed for b in bufs)


@pytest.mark.parametrize("size", [0, 5, STAGE, 3 * STAGE + 4097])
def test_hasher_sees_every_byte_in_order(tmp_path: Path, size: int) -> None:
    """The chunk hash is computed by the writer's helper thread, from the very buffers it writes."""
    data = random.Random(size).randbytes(size)
    h = hashlib.sha256()
    _write(tmp_path / "f", data, random.Random(7), hasher=h)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


class _SlowHasher:
    """A hasher that takes its time and copies what it is shown: if the writer refilled a staging buffer
    while it was still being hashed, the copy (taken after the sleep) would hold the new bytes."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.calls = 0

    def update(self, data: memoryview, /) -> None:
        self.calls += 1
        time.sleep(0.02)
        self.h.update(bytes(data))


def test_slow_hasher_sees_each_buffer_before_it_is_refilled(tmp_path: Path) -> None:
    """The hash of a staged buffer runs beside its write: the writer must wait for both before reusing it."""
    data = random.Random(3).randbytes(5 * STAGE + 99)
    slow = _SlowHasher()
    _write(tmp_path / "f", data, random.Random(5), hasher=slow)
    assert slow.calls >= 5
    assert slow.h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "f").read_bytes() == data


@pytest.fixture
def no_direct_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses O_DIRECT at open (tmpfs on older kernels, FUSE, NFS)."""
    real_open = os.open

    def fake_open(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & directio._DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(directio.os, "open", fake_open)


@pytest.mark.usefixtures("no_direct_open")
def test_fallback_when_open_refuses_direct(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(STAGE + 5)
    w = _write(tmp_path / "f", data, random.Random(3))
    assert not w.direct
    assert (tmp_path / "f").read_bytes() == data


def test_fallback_when_writes_refuse_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some file systems take the open but answer EINVAL to the first aligned write."""
    real_write = os.write
    calls = {"refused": 0}

    def fake_write(fd: int, data: object) -> int:
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & directio._DIRECT:
            calls["refused"] += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(directio.os, "write", fake_write)
    data = random.Random(4).randbytes(2 * STAGE + 77)
    w = _write(tmp_path / "f", data, random.Random(5))
    assert calls["refused"] == 1 and not w.direct
    assert (tmp_path / "f").read_bytes() == data


def test_other_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails on the helper thread (a full disk) comes out of the next write or of close(), and
    abort() closes the file after the write in flight has ended."""
    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    for last in ("write", "close"):
        w = DirectWriter(tmp_path / "f")
        monkeypatch.setattr(directio.os, "write", full)
        w.write(b"x" * (STAGE + 1))  # the first buffer is handed over (its write fails in the background)
        with pytest.raises(OSError) as info:
            if last == "write":
                w.write(b"y" * STAGE)
            else:
                w.close()
        assert info.value.errno == errno.ENOSPC
        w.abort()
        assert w.fd == -1
        monkeypatch.undo()


@pytest.mark.parametrize("size", [0, 1, ALIGN - 1, ALIGN + 3, 3 * (1 << 20) + 5])
def test_read_range_any_offset_and_length(tmp_path: Path, size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    cases = [(0, size), (0, size + 10), (size, 5)] + [
        (rng.randrange(size + 1), rng.randrange(size + 2)) for _ in range(40)]
    for offset, length in cases:
        for cached in (False, True):
            got = b"".join(bytes(b) for b in directio.read_range(path, offset, length, block=1 << 16,
                                                                  cached=cached))  # views
            assert got == data[offset : offset + length], (offset, length, cached)
    assert directio.sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.usefixtures("no_direct_open")
def test_read_range_buffered_fallback(tmp_path: Path) -> None:
    data = random.Random(9).randbytes(100_000)
    (tmp_path / "f").write_bytes(data)
    assert b"".join(bytes(b) for b in directio.read_range(tmp_path / "f", 777, 50_000, block=4096)) == data[777:50_777]


def test_read_range_stopped_early_closes_cleanly(tmp_path: Path) -> None:
    """A consumer that stops after the first block (a blob's digest failed, Ctrl-C) leaves no read in flight
    on a closed descriptor, and the next reader works."""
    data = random.Random(11).randbytes(5 * 65536 + 17)
    (tmp_path / "f").write_bytes(data)
    for _ in range(20):
        it = directio.read_range(tmp_path / "f", 3, len(data), block=65536)
        assert next(it) == data[3:65536]
        it.close()  # type: ignore[attr-defined]
    assert b"".join(bytes(b) for b in directio.read_range(tmp_path / "f", 0, len(data), block=65536)) == data


def test_read_range_blocks_are_views_valid_until_the_next_one(tmp_path: Path) -> None:
    """No copy is made of a block: it is a view of the reading buffer, which a later block reuses."""
    data = random.Random(12).randbytes(4 * 65536)
    (tmp_path / "f").write_bytes(data)
    kept = list(directio.read_range(tmp_path / "f", 0, len(data), block=65536))
    if not all(isinstance(b, memoryview) for b in kept):
        pytest.skip("this file system refuses O_DIRECT: blocks are read buffered, as bytes")
    assert bytes(kept[-1]) == data[-65536:]
    assert bytes(kept[0]) != data[:65536]  # its buffer was read into again (two buffers, four blocks)


def test_sha256_for_reread_judges_the_medium_by_its_first_bytes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An import's chunk check: O_DIRECT on a fast medium; on a slow one (here: any, with the threshold set
    above what a disk gives) it goes on through the page cache after the probe, so that the blob reads find
    the chunk there. The digest is the file's either way."""
    monkeypatch.setattr(directio, "SPEED_PROBE", 256 * 1024)
    data = random.Random(13).randbytes(3 * directio.HASH_BLOCK + 12345)
    path = tmp_path / "chunk"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    modes: list[str] = []
    real = directio._read_buffered

    def spy(*args: object, **kw: object) -> object:
        modes.append(f"buffered from {args[1]}")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(directio, "_read_buffered", spy)
    assert directio.sha256_for_reread(path, keep=None, slow_below=0) == (want, False)
    assert directio.sha256_for_reread(path, keep=False, slow_below=1e18) == (want, False)
    if directio._DIRECT:
        assert modes == []  # a fast medium, or one known fast: O_DIRECT only
    modes.clear()
    assert directio.sha256_for_reread(path, keep=None, slow_below=1e18) == (want, True)
    if directio._DIRECT:  # the first block (not timed) and the probe with O_DIRECT, the rest through the cache
        assert modes == [f"buffered from {2 * directio.HASH_BLOCK}"]
    modes.clear()
    assert directio.sha256_for_reread(path, keep=True, slow_below=0) == (want, True)
    assert modes == ["buffered from 0"]
    short = tmp_path / "short"
    short.write_bytes(data[:1000])
    assert directio.sha256_for_reread(short, keep=None, slow_below=1e18) == (hashlib.sha256(data[:1000]).hexdigest(),
                                                                            None)  # too short to judge


def test_cached_reads_drop_what_they_have_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached read lets go of each block once the next is asked for: the chunk is not read again, and an
    import must not fill the page cache with a medium's worth of chunks."""
    data = random.Random(14).randbytes(5 * 65536 + 3)
    (tmp_path / "f").write_bytes(data)
    dropped: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        if advice == os.POSIX_FADV_DONTNEED:
            dropped.append((offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(directio.os, "posix_fadvise", spy)
    got = b"".join(directio.read_range(tmp_path / "f", 10, len(data), block=65536, cached=True))
    assert got == data[10:]
    left = len(data) - 10
    assert dropped == [(10 + k * 65536, min(65536, left - k * 65536)) for k in range(5)]
