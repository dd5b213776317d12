"""zstd frames of the bundle stream: compressed frames, and stored (raw-block) frames for content that is
already compressed. Both are standard zstd frames: ``zstd -d`` decodes a concatenation of them."""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"
MAX_BLOCK = 128 * 1024
# Frame_Header_Descriptor: Frame_Content_Size_flag = 3 (8-byte size), Single_Segment_flag = 1,
# no checksum, no dictionary. Single segment means no Window_Descriptor.
_FHD = (3 << 6) | (1 << 5)

COMPRESSED_MEDIA_MARKERS = ("gzip", "zstd", "+zst", "bzip2", "xz", "lz4", "compressed")

_local = threading.local()


Buffer = bytes | memoryview
Frame = list[Buffer]
"""A frame as the buffers that, concatenated, make it (a stored frame refers to its content, not a copy)."""


def stored_frame_parts(parts: Sequence[Buffer]) -> Frame:
    """A zstd frame holding the concatenation of ``parts`` in raw blocks (no compression work, 3 bytes per
    128 KiB), as a list of buffers: block headers, and views of ``parts`` (nothing is copied)."""
    total = sum(len(p) for p in parts)
    out: Frame = [MAGIC + bytes([_FHD]) + struct.pack("<Q", total)]
    if not total:
        out.append((1 | (0 << 1) | (0 << 3)).to_bytes(3, "little"))
        return out
    pos = left_in_block = 0
    for part in parts:
        view = memoryview(part)
        while len(view):
            if not left_in_block:
                left_in_block = min(MAX_BLOCK, total - pos)
                last = 1 if pos + left_in_block == total else 0
                out.append((last | (left_in_block << 3)).to_bytes(3, "little"))
            take = min(left_in_block, len(view))
            out.append(view if take == len(view) else view[:take])
            view = view[take:]
            left_in_block -= take
            pos += take
    return out


def stored_frame(data: Buffer) -> bytes:
    """A zstd frame holding ``data`` in raw blocks."""
    return b"".join(stored_frame_parts([data]))


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return c


def compressed_frame(data: Buffer, level: int) -> bytes:
    """One zstd frame of ``data`` at ``level`` (deterministic for a given zstd version and level)."""
    return _compressor(level).compress(data)


def is_precompressed(media_type: str) -> bool:
    """Layers whose media type says they are compressed are stored, not compressed again."""
    mt = media_type.lower()
    return any(marker in mt for marker in COMPRESSED_MEDIA_MARKERS)


PROBE = 64 * 1024  # a frame whose first PROBE bytes do not shrink by 2% at level 1 is stored, not compressed


def _head(parts: Sequence[Buffer], n: int) -> Buffer:
    """The first ``n`` bytes of the concatenation of ``parts`` (copied only when they span parts)."""
    if parts and len(parts[0]) >= n:
        return memoryview(parts[0])[:n]
    out = bytearray()
    for part in parts:
        out += memoryview(part)[: n - len(out)]
        if len(out) >= n:
            break
    return bytes(out)


def incompressible(parts: Sequence[Buffer]) -> bool:
    """Random-looking content (encrypted, already compressed under an uncompressed media type): compressing it
    costs CPU and gives nothing. Decided from the frame's own bytes, so an export stays reproducible."""
    if sum(len(p) for p in parts) < 4 * PROBE:
        return False
    return len(_compressor(1).compress(_head(parts, PROBE))) > PROBE * 0.98


def encode(parts: Sequence[Buffer], *, store: bool, level: int) -> Frame:
    """The frame for the content ``parts`` (concatenated): stored, or compressed at ``level``."""
    if store or incompressible(parts):
        return stored_frame_parts(parts)
    return [compressed_frame(parts[0] if len(parts) == 1 else b"".join(parts), level)]
