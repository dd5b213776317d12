"""The bundle stream as a sequence of tar members, each encoded as zstd frames of bounded size.

Member ``m`` with ``size`` bytes is encoded in ``max(1, ceil(size / segment))`` frames: frame ``k``
holds content bytes ``[k*segment, (k+1)*segment)``; frame 0 is preceded by the tar header and the last
frame is followed by the tar padding (and, for the stream's last member, the end-of-archive blocks).
So a reader can start decoding at any frame, and a writer can resume at any frame.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from airgap.bundle import tarfmt
from airgap.bundle.frames import Buffer, Frame, encode, is_precompressed
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


def member_segments(member: Member, *, segment: int, start: int = 0,
                    on_bytes: Callable[[int], None] | None = None,
                    reserve: Callable[[int], None] | None = None) -> Iterator[tuple[int, list[Buffer]]]:
    """The raw pieces ``(k, buffers)`` that frames ``start..`` of ``member`` encode (header and padding
    included), each piece as the buffers that make it: views of what the source gave, not copies.

    Content before ``start`` is read (its digest must still be checked) but not returned. ``reserve(n)`` is
    called before the bytes of each returned piece are gathered, so that a caller can bound memory.
    """
    n = frame_count(member.size, segment)
    head = tarfmt.header(member.path, member.size)
    tail = tarfmt.padding(member.size) + member.trailer

    def size_of(k: int) -> int:
        return min(segment, member.size - k * segment) + (len(head) if k == 0 else 0) + (len(tail) if k == n - 1 else 0)

    parts: list[Buffer] = [head]  # the current piece
    have = 0  # its content bytes
    k = 0
    if reserve and start == 0:
        reserve(size_of(0))
    for chunk in _content(member):
        if on_bytes:
            on_bytes(len(chunk))
        view = memoryview(chunk)
        while len(view):
            if k == n - 1:  # the last piece takes the rest
                parts.append(view)
                have += len(view)
                break
            take = min(segment - have, len(view))
            parts.append(view if take == len(view) else view[:take])
            have += take
            view = view[take:]
            if have == segment:
                if k >= start:
                    yield k, parts
                parts, have = [], 0
                k += 1
                if reserve and k >= start:
                    reserve(size_of(k))
    if k != n - 1 or have != member.size - k * segment:
        raise DigestMismatch(f"{member.path} did not have the {member.size} bytes its descriptor says")
    parts.append(tail)
    yield k, parts


class _Stopped(Exception):
    """The consumer went away; a producer stops reading."""


class Budget:
    """Bounds the bytes that members read ahead hold. The member being written (the head) is exempt, so
    the pipeline always moves; it is bounded by its queue instead."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.head = 0
        self.cancelled = False
        self._cond = threading.Condition()

    def acquire(self, n: int, member: int) -> None:
        with self._cond:
            while member != self.head and self.used + n > self.limit and self.used > 0 and not self.cancelled:
                self._cond.wait(0.5)
            if self.cancelled:
                raise _Stopped()
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()

    def advance(self, head: int) -> None:
        with self._cond:
            self.head = head
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self.cancelled = True
            self._cond.notify_all()


def encoded_frames(members: list[tuple[int, Member, int]], *, segment: int, level: int, jobs: int,
                   budget_bytes: int = 8 * 1024 * 1024, depth: int = 2,
                   on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[int, int, Frame]]:
    """Encode ``(index, member, first frame)`` in order, as ``(index, frame number, frame)``; a frame comes as
    the buffers that make it (see :data:`Frame`).

    Up to ``jobs`` members are read ahead on threads (network latency overlaps), and frames are encoded on
    a pool of one thread per core (zstd releases the GIL), also the frames of one large member. Memory is
    bounded: the head member holds at most ``depth`` frames, the others share ``budget_bytes``.
    """
    budget = Budget(budget_bytes)
    encoders = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="airgap-zstd")

    def producer(i: int) -> Callable[[], Iterator[tuple[int, int, Future[Frame], int]]]:
        m, member, start = members[i]

        def run() -> Iterator[tuple[int, int, Future[Frame], int]]:
            reserved: list[int] = []

            def reserve(n: int) -> None:
                budget.acquire(n, i)
                reserved.append(n)

            for k, piece in member_segments(member, segment=segment, start=start, on_bytes=on_bytes,
                                            reserve=reserve):
                cost = reserved.pop(0) if reserved else 0
                yield m, k, encoders.submit(encode, piece, store=member.store, level=level), cost
            for extra in reserved:  # reserved for a piece that never came (an error is on its way)
                budget.release(extra)

        return run

    frames = ordered([producer(i) for i in range(len(members))], jobs=jobs, depth=depth, on_head=budget.advance,
                     on_stop=budget.cancel)
    try:
        for m, k, future, cost in frames:
            frame = future.result()
            budget.release(cost)
            yield m, k, frame
    finally:
        budget.cancel()  # first: producers waiting for budget stop, so that closing the pipeline never waits
        frames.close()  # type: ignore[attr-defined]
        encoders.shutdown(wait=True, cancel_futures=True)


_END = object()
T = TypeVar("T")


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ordered(producers: list[Callable[[], Iterator[T]]], *, jobs: int, depth: int = 2,
            on_head: Callable[[int], None] | None = None,
            on_stop: Callable[[], None] | None = None) -> Iterator[T]:
    """Run producers on ``jobs`` threads, at most ``jobs`` ahead, and yield their items in order.

    Memory stays bounded: each running producer holds at most ``depth`` items. ``on_stop`` is called when the
    pipeline stops, before its threads are joined: it must wake producers that wait for anything but their
    queue (a Ctrl-C raised while this generator waits for an item ends it before its consumer can).
    """
    cancel = threading.Event()
    queues: dict[int, queue.Queue[object]] = {}

    def run(i: int, q: queue.Queue[object]) -> None:
        def put(item: object) -> bool:
            while not cancel.is_set():
                try:
                    q.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for item in producers[i]():
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failed(exc))

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="airgap-export")
    submitted = 0
    finished = False
    try:
        for i in range(len(producers)):
            while submitted < len(producers) and submitted < i + max(1, jobs):
                q: queue.Queue[object] = queue.Queue(maxsize=depth)
                queues[submitted] = q
                pool.submit(run, submitted, q)
                submitted += 1
            q = queues[i]
            if on_head is not None:
                on_head(i)
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                yield item  # type: ignore[misc]
            del queues[i]
        finished = True
    finally:
        # stop: producers see the flag within 0.2 s, also the head's (its queue is still in `queues`)
        cancel.set()
        if on_stop is not None:
            on_stop()
        for q in queues.values():
            while not q.empty():
                q.get_nowait()
        # stopped early (an error, Ctrl-C, the consumer closed us): a producer may be in a read that a stalled
        # source holds for minutes; it ends by itself once the read returns, and nobody waits for it
        pool.shutdown(wait=finished, cancel_futures=True)
