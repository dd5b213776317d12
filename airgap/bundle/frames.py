"""zstd frames of the bundle stream: compressed frames, and stored (raw-block) frames for content that is
already compressed. Both are standard zstd frames: ``zstd -d`` decodes a concatenation of them."""

from __future__ import annotations

import struct
import threading

import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"
MAX_BLOCK = 128 * 1024
# Frame_Header_Descriptor: Frame_Content_Size_flag = 3 (8-byte size), Single_Segment_flag = 1,
# no checksum, no dictionary. Single segment means no Window_Descriptor.
_FHD = (3 << 6) | (1 << 5)

COMPRESSED_MEDIA_MARKERS = ("gzip", "zstd", "+zst", "bzip2", "xz", "lz4", "compressed")

_local = threading.local()


def stored_frame(data: bytes | memoryview) -> bytes:
    """A zstd frame holding ``data`` in raw blocks (no compression work, 3 bytes per 128 KiB)."""
    view = memoryview(data)
    parts = [MAGIC, bytes([_FHD]), struct.pack("<Q", len(view))]
    if not len(view):
        parts.append((1 | (0 << 1) | (0 << 3)).to_bytes(3, "little"))
        return b"".join(parts)
    for start in range(0, len(view), MAX_BLOCK):
        block = view[start : start + MAX_BLOCK]
        last = 1 if start + MAX_BLOCK >= len(view) else 0
        parts.append((last | (len(block) << 3)).to_bytes(3, "little"))
        parts.append(block)  # type: ignore[arg-type]
    return b"".join(parts)


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return c


def compressed_frame(data: bytes, level: int) -> bytes:
    """One zstd frame of ``data`` at ``level`` (deterministic for a given zstd version and level)."""
    return _compressor(level).compress(data)


def is_precompressed(media_type: str) -> bool:
    """Layers whose media type says they are compressed are stored, not compressed again."""
    mt = media_type.lower()
    return any(marker in mt for marker in COMPRESSED_MEDIA_MARKERS)


PROBE = 64 * 1024  # a frame whose first PROBE bytes do not shrink by 2% at level 1 is stored, not compressed


def incompressible(data: bytes | memoryview) -> bool:
    """Random-looking content (encrypted, already compressed under an uncompressed media type): compressing it
    costs CPU and gives nothing. Decided from the frame's own bytes, so an export stays reproducible."""
    if len(data) < 4 * PROBE:
        return False
    return len(_compressor(1).compress(memoryview(data)[:PROBE])) > PROBE * 0.98


def encode(data: bytes, *, store: bool, level: int) -> bytes:
    return stored_frame(data) if store or incompressible(data) else compressed_frame(data, level)
