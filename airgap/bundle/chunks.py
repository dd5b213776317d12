"""Cutting the bundle stream into fixed-size chunk files, with a journal so that an interrupted export
keeps every complete chunk.

A chunk is written under a hidden temporary name and renamed to its final name only when it is full
(or is the last one) and fsynced: a file under a final name is always a complete chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.atomic import fsync_dir
from airgap.bundle.directio import DirectWriter, stage_buffer
from airgap.bundle.files import os_error
from airgap.model.bundle import Chunk

CHUNK_PATTERN = "chunk-{:06d}.bin"


def chunk_name(index: int) -> str:
    return CHUNK_PATTERN.format(index)


@dataclass
class FrameRecord:
    member: int
    frame: int
    length: int


@dataclass
class Journal:
    """Append-only record of complete chunks and of the frames that end inside them."""

    path: Path
    chunks: list[Chunk] = field(default_factory=list)
    frames: list[FrameRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, out_dir: Path, chunk_size: int,
             check: Callable[[Path, Chunk], bool]) -> Journal:
        """Read the journal, keeping only the chunks that are still intact on disk (in order)."""
        journal = cls(path)
        if not path.exists():
            return journal
        good_lines: list[str] = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                chunk = Chunk(rec["name"], int(rec["size"]), rec["sha256"])
                frames = [FrameRecord(int(m), int(f), int(n)) for m, f, n in rec["frames"]]
            except (ValueError, KeyError, TypeError, OverflowError):
                break  # a torn last line: everything before it stands
            if rec.get("chunk") != len(journal.chunks) or chunk.name != chunk_name(len(journal.chunks)) or \
                    chunk.size != chunk_size or not check(out_dir / chunk.name, chunk):
                break
            journal.chunks.append(chunk)
            journal.frames.extend(frames)
            good_lines.append(line)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text("".join(f"{line}\n" for line in good_lines))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise os_error(exc, f"rewriting the export journal {path}") from exc
        return journal

    def forget_from(self, keep: int) -> list[Chunk]:
        """Drop the records of chunks ``keep`` and later from the file (load it again to use it); return those
        chunks."""
        lines = self.path.read_text().splitlines()[:keep] if self.path.exists() else []
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text("".join(f"{line}\n" for line in lines))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise os_error(exc, f"rewriting the export journal {self.path}") from exc
        return self.chunks[keep:]

    def append(self, index: int, chunk: Chunk, frames: list[FrameRecord]) -> None:
        rec: dict[str, Any] = {"chunk": index, "name": chunk.name, "size": chunk.size, "sha256": chunk.sha256,
                               "frames": [[f.member, f.frame, f.length] for f in frames]}
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a torn line is dropped by the next load; the chunk is written again then
            raise os_error(exc, f"recording {chunk.name} in the export journal {self.path}") from exc
        self.chunks.append(chunk)
        self.frames.extend(frames)


class ChunkWriter:
    """Receives the stream from ``start`` (a chunk boundary) and writes it as chunk files."""

    def __init__(self, out_dir: Path, chunk_size: int, journal: Journal) -> None:
        self.out_dir = out_dir
        self.chunk_size = chunk_size
        self.journal = journal
        self.index = len(journal.chunks)
        self.position = self.index * chunk_size  # stream offset of the next byte
        self._file: DirectWriter | None = None
        self._stages = (stage_buffer(), stage_buffer())
        self._hash = hashlib.sha256()
        self._filled = 0
        self._pending: list[tuple[int, FrameRecord]] = []  # (end offset, frame) not yet journaled

    def _tmp(self) -> Path:
        return self.out_dir / f".{chunk_name(self.index)}.partial"

    def _open(self) -> DirectWriter:
        if self._file is None:
            self._hash = hashlib.sha256()  # the writer hashes what it writes, on its helper thread
            self._filled = 0
            try:
                self._file = DirectWriter(self._tmp(), buffers=self._stages, hasher=self._hash)
            except OSError as exc:
                raise os_error(exc, f"creating {chunk_name(self.index)} in {self.out_dir}") from exc
        return self._file

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            f = self._open()
            room = self.chunk_size - self._filled
            piece = view[:room]
            try:
                f.write(piece)
            except OSError as exc:
                raise os_error(exc, f"writing {chunk_name(self.index)} in {self.out_dir}") from exc
            self._filled += len(piece)
            self.position += len(piece)
            view = view[len(piece):]
            if self._filled == self.chunk_size:
                self._seal()

    def frame_done(self, record: FrameRecord) -> None:
        """A frame's last byte was written; it is journaled with the chunk that holds that byte."""
        self._pending.append((self.position, record))

    def _seal(self) -> None:
        f = self._file
        assert f is not None
        name = chunk_name(self.index)
        try:
            f.close()  # writes what is staged, fsyncs
            os.replace(self._tmp(), self.out_dir / name)
        except OSError as exc:
            raise os_error(exc, f"finishing {name} in {self.out_dir}") from exc
        fsync_dir(self.out_dir)
        self._file = None
        end = (self.index * self.chunk_size) + self._filled
        done = [r for e, r in self._pending if e <= end]
        self._pending = [(e, r) for e, r in self._pending if e > end]
        self.journal.append(self.index, Chunk(name, self._filled, self._hash.hexdigest()), done)
        self.index += 1

    def close(self) -> list[Chunk]:
        """Seal the last, shorter chunk (if any bytes are in it) and return every chunk."""
        if self._file is not None and self._filled:
            self._seal()
        elif self._file is not None:
            self._file.abort()
            self._tmp().unlink(missing_ok=True)
            self._file = None
        return list(self.journal.chunks)

    def abort(self) -> None:
        """After a failure: close and remove the unfinished chunk (on a full disk, that frees its space at once)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.abort()
            self._file = None
            with contextlib.suppress(OSError):  # a medium pulled out answers this too: the first error is the one
                self._tmp().unlink(missing_ok=True)
