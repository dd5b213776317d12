"""Progress events. The library never prints; it calls a callback with these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Planned:
    images: int
    blobs: int
    total_bytes: int


@dataclass(frozen=True)
class BytesMoved:
    n: int


@dataclass(frozen=True)
class BlobDone:
    digest: str
    size: int
    outcome: str  # uploaded | mounted | skipped


@dataclass(frozen=True)
class ImageDone:
    source: str
    target: str
    digest: str


@dataclass(frozen=True)
class Notice:
    """Something the user should be told (for example: a platform subset changes an index digest)."""

    text: str


Event = Planned | BytesMoved | BlobDone | ImageDone | Notice
Progress = Callable[[Event], None]


def ignore(_: Event) -> None:
    pass
