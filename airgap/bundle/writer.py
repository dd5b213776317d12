"""Writing the bundle stream into chunk files, resuming an interrupted run where it stopped."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from airgap.bundle.chunks import ChunkWriter, FrameRecord, Journal
from airgap.bundle.files import BundleError
from airgap.bundle.stream import Member, encoded_frames
from airgap.model.bundle import Chunk, Span, frame_count

STATE_DIR = ".airgap-export"
READ = 1024 * 1024


def chunk_intact(path: Path, chunk: Chunk) -> bool:
    try:
        if path.stat().st_size != chunk.size:
            return False
        h = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(READ):
                h.update(block)
        return h.hexdigest() == chunk.sha256
    except OSError:
        return False


def _read_stream_tail(out_dir: Path, chunks: list[Chunk], chunk_size: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the stream, from complete chunk files (a range of at most a few frames)."""
    out = bytearray()
    pos = start
    while pos < end:
        idx, off = divmod(pos, chunk_size)
        with (out_dir / chunks[idx].name).open("rb") as f:
            f.seek(off)
            data = f.read(min(end - pos, chunk_size - off))
        if not data:
            break
        out += data
        pos += len(data)
    return bytes(out)


def write_stream(out_dir: Path, members: list[Member], *, chunk_size: int, segment: int, level: int, jobs: int,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[list[Chunk], list[Span], int]:
    """Encode ``members`` into chunk files in ``out_dir``. Returns the chunks, each member's span, and how
    many stream bytes were already there from an earlier, interrupted run."""
    state = out_dir / STATE_DIR
    state.mkdir(exist_ok=True)
    for stale in out_dir.glob(".chunk-*.partial"):
        stale.unlink()
    journal = Journal.load(state / "journal.jsonl", out_dir, chunk_size, chunk_intact)
    resumed = len(journal.chunks) * chunk_size
    written = sum(f.length for f in journal.frames)
    if journal.frames:
        last = journal.frames[-1]
        if last.frame + 1 < frame_count(members[last.member].size, segment):
            start_member, start_frame = last.member, last.frame + 1
        else:
            start_member, start_frame = last.member + 1, 0
    else:
        start_member, start_frame = 0, 0
    skip = resumed - written
    expected_tail = _read_stream_tail(out_dir, journal.chunks, chunk_size, written, resumed) if skip else b""

    writer = ChunkWriter(out_dir, chunk_size, journal)
    try:
        todo = [(m, members[m], start_frame if m == start_member else 0) for m in range(start_member, len(members))]
        for m, k, frame in encoded_frames(todo, segment=segment, level=level, jobs=jobs, on_bytes=on_bytes):
            data: bytes | memoryview = frame
            if skip:
                cut = min(skip, len(frame))
                if frame[:cut] != expected_tail[:cut]:
                    raise BundleError(
                        f"cannot resume the export in {out_dir}: the stream no longer matches the chunks already "
                        "written (was the tool or its zstd library upgraded in between?)",
                        hint="delete the directory and export again")
                expected_tail = expected_tail[cut:]
                skip -= cut
                data = memoryview(frame)[cut:]
            writer.write(data)
            writer.frame_done(FrameRecord(m, k, len(frame)))
        chunks = writer.close()
    finally:
        writer.abort()
    spans: list[Span] = []
    pos = 0
    by_member: dict[int, list[int]] = {}
    for rec in journal.frames:
        by_member.setdefault(rec.member, []).append(rec.length)
    for m in range(len(members)):
        frames = tuple(by_member.get(m, ()))
        if len(frames) != frame_count(members[m].size, segment):
            raise BundleError(f"internal error: member {members[m].path} has {len(frames)} frames recorded")
        spans.append(Span(pos, frames))
        pos += sum(frames)
    return chunks, spans, resumed
