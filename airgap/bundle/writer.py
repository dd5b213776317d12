"""Writing the bundle stream into chunk files, resuming an interrupted run where it stopped."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from airgap.bundle.chunks import ChunkWriter, FrameRecord, Journal
from airgap.bundle.files import STATE_DIR, BundleError
from airgap.bundle.stream import Member, encoded_frames
from airgap.model.bundle import Chunk, Span, frame_count

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


class _Stale(Exception):
    """Frames that an earlier run put in complete chunks differ from what the member encodes to now."""


def write_stream(out_dir: Path, members: list[Member], *, chunk_size: int, segment: int, level: int, jobs: int,
                 on_bytes: Callable[[int], None] | None = None) -> tuple[list[Chunk], list[Span], int]:
    """Encode ``members`` into chunk files in ``out_dir``. Returns the chunks, each member's span, and how
    many stream bytes were already there from an earlier, interrupted run.

    A member's bytes are only trusted once its digest has been checked at the end of its content. An
    interrupted run may have put the first frames of a member in complete chunks before that check (a kill,
    or a source that sent damaged bytes): so when resuming inside a member, its frames already on disk are
    encoded again from the content read now and compared. If they differ, the chunks from that member's first
    byte on are forgotten and written again (once; a second difference means the encoding itself changed)."""
    for attempt in (1, 2):
        try:
            return _write_stream(out_dir, members, chunk_size=chunk_size, segment=segment, level=level, jobs=jobs,
                                 on_bytes=on_bytes)
        except _Stale:
            if attempt == 2:
                break
    raise BundleError(
        f"cannot resume the export in {out_dir}: the stream no longer matches the chunks already "
        "written (was the tool or its zstd library upgraded in between?)",
        hint="delete the directory and export again")


def _write_stream(out_dir: Path, members: list[Member], *, chunk_size: int, segment: int, level: int, jobs: int,
                  on_bytes: Callable[[int], None] | None) -> tuple[list[Chunk], list[Span], int]:
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
    # where the frames of start_member that are already on disk lie (and where the member begins)
    on_disk: dict[int, tuple[int, int]] = {}
    pos = 0
    for rec in journal.frames:
        if rec.member == start_member:
            on_disk[rec.frame] = (pos, rec.length)
        pos += rec.length
    member_start = on_disk[0][0] if 0 in on_disk else written

    def forget_member() -> _Stale:
        """Forget the chunks from the one holding start_member's first byte on (the retry writes them again)."""
        for chunk in journal.forget_from(member_start // chunk_size):
            (out_dir / chunk.name).unlink(missing_ok=True)
        return _Stale()

    writer = ChunkWriter(out_dir, chunk_size, journal)
    try:
        todo = [(m, members[m], 0) for m in range(start_member, len(members))]
        stream = encoded_frames(todo, segment=segment, level=level, jobs=jobs, on_bytes=on_bytes)
        try:
            for m, k, parts in stream:
                length = sum(len(p) for p in parts)
                if m == start_member and k < start_frame:  # on disk already: must be the same bytes
                    at, on_disk_length = on_disk[k]
                    if length != on_disk_length or b"".join(parts) != _read_stream_tail(
                            out_dir, journal.chunks, chunk_size, at, at + length):
                        raise forget_member()
                    continue
                if skip:
                    frame = b"".join(parts)
                    cut = min(skip, len(frame))
                    if frame[:cut] != expected_tail[:cut]:
                        raise forget_member()
                    expected_tail = expected_tail[cut:]
                    skip -= cut
                    parts = [memoryview(frame)[cut:]]
                for part in parts:
                    writer.write(part)
                writer.frame_done(FrameRecord(m, k, length))
        finally:
            stream.close()  # type: ignore[attr-defined]  # a generator: stop its threads now
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
