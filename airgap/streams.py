"""Byte streams as iterators of chunks: verification by digest and size, and slicing. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

from airgap.errors import DigestMismatch
from airgap.model.digest import Digest

BlobOpener = Callable[[int], AbstractContextManager[Iterator[bytes]]]
"""Opens a blob's content at a byte offset, as a verified iterator of chunks."""


class ReadAgain(Exception):
    """Bytes a stream handed out were not the good ones, though no check had failed when they were read (a chunk
    read while its check ran was found damaged, and a good copy is read now): whatever was sent from the stream
    must be dropped, and the stream read again from the start."""


def verified(chunks: Iterable[bytes], digest: Digest, size: int, what: str, *, offset: int = 0,
             prefix_hasher: object | None = None) -> Iterator[bytes]:
    """Yield ``chunks`` unchanged, failing at end of stream if digest or size is wrong.

    A stream opened at ``offset`` cannot be hashed from the start; then only the size is checked
    unless ``prefix_hasher`` (a hashlib object over the first ``offset`` bytes) is given.
    """
    hasher = prefix_hasher if prefix_hasher is not None else (digest.hasher() if offset == 0 else None)
    seen = offset
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise DigestMismatch(f"{what} is longer than the {size} bytes its descriptor says")
        if hasher is not None:
            hasher.update(chunk)  # type: ignore[attr-defined]
        yield chunk
    if seen != size:
        raise DigestMismatch(f"{what} ended after {seen} of {size} bytes")
    if hasher is not None:
        got = hasher.hexdigest()  # type: ignore[attr-defined]
        if got != digest.hex:
            raise DigestMismatch(f"{what} has digest {digest.algorithm}:{got}, expected {digest}")


def take(it: Iterator[bytes], n: int, buffer: list[bytes]) -> Iterator[bytes]:
    """Yield exactly the next ``n`` bytes of ``it``; what is read beyond them is left in ``buffer``."""
    remaining = n
    while remaining > 0:
        if buffer:
            chunk = buffer.pop()
        else:
            try:
                chunk = next(it)
            except StopIteration:
                return
        if len(chunk) > remaining:
            buffer.append(chunk[remaining:])
            chunk = chunk[:remaining]
        remaining -= len(chunk)
        if chunk:
            yield chunk
