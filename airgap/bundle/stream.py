"""The bundle stream as a sequence of tar members, each encoded as zstd frames of bounded size.

Member ``m`` with ``size`` bytes is encoded in ``max(1, ceil(size / segment))`` frames: frame ``k``
holds content bytes ``[k*segment, (k+1)*segment)``; frame 0 is preceded by the tar header and the last
frame is followed by the tar padding (and, for the stream's last member, the end-of-archive blocks).
So a reader can start decoding at any frame, and a writer can resume at any frame.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from airgap.bundle import tarfmt
from airgap.bundle.frames import encode, is_precompressed
from airgap.errors import DigestMismatch
from airgap.model.bundle import frame_count
from airgap.model.digest import Digest
from airgap.streams import BlobOpener, verified


@dataclass(frozen=True)
class Member:
    path: str
    size: int
    media_type: str = ""
    digest: Digest | None = None
    data: bytes | None = None  # small members (manifests, oci-layout, index.json) are held in memory
    opener: BlobOpener | None = None  # large ones are streamed from their source
    trailer: bytes = b""

    @property
    def store(self) -> bool:
        return is_precompressed(self.media_type)


def _content(member: Member) -> Iterator[bytes]:
    if member.data is not None:
        if member.digest is not None:
            yield from verified([member.data], member.digest, member.size, member.path)
        else:
            yield member.data
        return
    assert member.opener is not None
    with member.opener(0) as chunks:
        yield from chunks


def member_frames(member: Member, *, segment: int, level: int, start: int = 0,
                  on_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The encoded frames ``start..`` of ``member``. Content before ``start`` is read (its digest must
    still be checked) but not encoded."""
    n = frame_count(member.size, segment)
    head = tarfmt.header(member.path, member.size)
    tail = tarfmt.padding(member.size) + member.trailer
    buf = bytearray()
    k = 0
    for chunk in _content(member):
        if on_bytes:
            on_bytes(len(chunk))
        buf += chunk
        while len(buf) >= segment and k < n - 1:
            piece = bytes(buf[:segment])
            del buf[:segment]
            if k >= start:
                yield encode((head if k == 0 else b"") + piece, store=member.store, level=level)
            k += 1
    if k != n - 1 or len(buf) != member.size - k * segment:
        raise DigestMismatch(f"{member.path} did not have the {member.size} bytes its descriptor says")
    yield encode((head if k == 0 else b"") + bytes(buf) + tail, store=member.store, level=level)


_END = object()
T = TypeVar("T")


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ordered(producers: list[Callable[[], Iterator[T]]], *, jobs: int, depth: int = 2) -> Iterator[T]:
    """Run producers on ``jobs`` threads, at most ``jobs`` ahead, and yield their items in order.

    Memory stays bounded: each running producer holds at most ``depth`` items.
    """
    cancel = threading.Event()
    queues: dict[int, queue.Queue[object]] = {}

    def run(i: int, q: queue.Queue[object]) -> None:
        try:
            for item in producers[i]():
                while not cancel.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if cancel.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(_Failed(exc))

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="airgap-export")
    submitted = 0
    try:
        for i in range(len(producers)):
            while submitted < len(producers) and submitted < i + max(1, jobs):
                q: queue.Queue[object] = queue.Queue(maxsize=depth)
                queues[submitted] = q
                pool.submit(run, submitted, q)
                submitted += 1
            q = queues.pop(i)
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                yield item  # type: ignore[misc]
    finally:
        cancel.set()
        for q in queues.values():  # unblock producers waiting on a full queue
            while not q.empty():
                q.get_nowait()
        pool.shutdown(wait=True, cancel_futures=True)
