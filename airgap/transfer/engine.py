"""The transfer engine: one plan/dedup/order/concurrency path for copy, export and import.

Order: blobs first (deduplicated; later repositories of the same target mount what an earlier one
received), then manifests children first, then tags last, so a reader never sees a tag whose
content is incomplete.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial

from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.streams import BlobOpener
from airgap.transfer.endpoints import Sink, Source
from airgap.transfer.events import BlobDone, BytesMoved, ImageDone, Notice, Planned, Progress, ignore
from airgap.transfer.plan import NO_REFERRERS, ImageRequest, PlannedImage, plan_image

LARGE_BLOB = 16 * 1024 * 1024
LARGE_LANES = 2
"""At most LARGE_LANES blobs of LARGE_BLOB bytes or more move at once (small ones fill the other threads).
A large blob's speed is bound by the registry's CPU and disk, not by latency: more streams only make it
share them worse (the bench's import into a local registry: 5.2 s with 2 streams against 5.7 s with 3),
and they let the biggest blob, which decides when the import ends, fall behind."""
WIND_DOWN_SECONDS = 30.0
"""After Ctrl-C, how long the transfers of a sink that can wind down (an import's journaled uploads) may take to
end their current step. A second Ctrl-C ends the wait at once."""


@dataclass(frozen=True)
class MovedImage:
    source: str
    target: str
    digest: str
    media_type: str
    platforms: tuple[str, ...]


@dataclass
class TransferResult:
    images: list[MovedImage] = field(default_factory=list)
    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    notices: list[str] = field(default_factory=list)
    failed: list[FailedImage] = field(default_factory=list)
    unchanged: set[str] = field(default_factory=set)  # targets whose tag already named the image: not pushed again


@dataclass(frozen=True)
class FailedImage:
    source: str
    target: str
    error: Exception


def _counting(opener: BlobOpener, progress: Progress, read: list[int]) -> BlobOpener:
    """``opener``, adding up in ``read[0]`` the bytes read (what an upload sent: a blob continued from an earlier
    run's session is read from its offset) and reporting the blob's progress: the bytes before the offset it is
    opened at count as moved, and bytes read again after a retry do not count twice."""
    reached = 0  # the furthest byte reported as moved

    @contextmanager
    def open_(offset: int) -> Iterator[Iterator[bytes]]:
        with opener(offset) as chunks:
            def gen() -> Iterator[bytes]:
                nonlocal reached
                pos = offset
                if pos > reached:
                    progress(BytesMoved(pos - reached))
                    reached = pos
                for chunk in chunks:
                    read[0] += len(chunk)
                    pos += len(chunk)
                    if pos > reached:
                        progress(BytesMoved(pos - reached))
                        reached = pos
                    yield chunk
            yield gen()

    return open_


def _target_ref(image: PlannedImage) -> Reference:
    return image.request.target.with_tag(None).with_digest(None)


def transfer(source: Source, sink: Sink, requests: list[ImageRequest], *, jobs: int = 6,
             progress: Progress = ignore, keep_going: bool = False,
             planned: list[PlannedImage] | None = None) -> TransferResult:
    """Move the requested images from ``source`` to ``sink``.

    By default the first error is raised. With ``keep_going``, an image whose blobs or manifests fail is
    left out (nothing that refers to a failed blob is pushed, and its tag is not set) and reported in
    ``result.failed``, while the other images are completed.
    """
    result = TransferResult()
    # referrers are planned and pushed by the callers (copy, export, import), after their subjects
    images = planned if planned is not None else [plan_image(source, r, NO_REFERRERS) for r in requests]
    for image in images:
        for text in image.notices:
            result.notices.append(text)
            progress(Notice(text))

    # blobs, grouped by (target host, digest): the first repository uploads, the rest mount from it
    groups: dict[tuple[str, str], list[tuple[PlannedImage, Descriptor]]] = {}
    for image in images:
        for blob in image.blobs:
            groups.setdefault((image.request.target.host, str(blob.digest)), []).append((image, blob))
    total = sum(entries[0][1].size for entries in groups.values())
    progress(Planned(images=len(images), blobs=len(groups), total_bytes=total))
    lock = threading.Lock()
    # (host, repository, digest) of the blobs a target repository lacked: an image that needed one there is new
    # to it, and its tag cannot name it yet (no HEAD before its PUT)
    lacked: set[tuple[str, str, str]] = set()

    def move_group(entries: list[tuple[PlannedImage, Descriptor]]) -> None:
        done_repos: list[str] = []
        for image, blob in entries:
            target = _target_ref(image)
            if target.repository in done_repos:
                continue
            sent = [0]
            opener = _counting(source.blob_opener(image.request.source, blob), progress, sent)
            mount_from = list(done_repos)
            src = image.request.source
            if src.host == target.host and src.repository != target.repository:
                mount_from.append(src.repository)  # a copy within one registry: mount from the source
            outcome = sink.push_blob(target, blob, opener, tuple(mount_from))
            done_repos.append(target.repository)
            with lock:
                if outcome != "skipped":
                    lacked.add((target.host, target.repository, str(blob.digest)))
                if outcome == "uploaded":
                    result.uploaded += 1
                    result.bytes_uploaded += sent[0]
                elif outcome == "mounted":
                    result.mounted += 1
                else:
                    result.skipped += 1
            if outcome != "uploaded" and len(done_repos) == 1:
                progress(BytesMoved(blob.size))
            progress(BlobDone(str(blob.digest), blob.size, outcome))

    # biggest first keeps every worker busy to the end; large blobs take at most LARGE_LANES threads
    ordered = sorted(groups.values(), key=lambda e: -e[0][1].size)
    large = frozenset(n for n, e in enumerate(ordered) if e[0][1].size >= LARGE_BLOB)
    failures: dict[int, Exception] = {}  # id(image) -> first error
    sink_wind_down: Callable[[], bool] | None = getattr(sink, "wind_down", None)

    def wind_down() -> bool:
        if sink_wind_down is None or not sink_wind_down():
            return False
        progress(Notice("stopping: each upload in flight ends the part it is sending, so that the next run "
                        "continues it from there (Ctrl-C again to stop at once)"))
        return True

    for n, exc in _run_all(jobs, [lambda e=e: move_group(e) for e in ordered], keep_going, heavy=large,
                           heavy_jobs=LARGE_LANES, wind_down=wind_down):
        for image, _ in ordered[n]:
            failures.setdefault(id(image), exc)

    # Manifests, then tags, in waves by height (an image manifest is 0, an index one more than its highest
    # child), each (repository, digest) once a wave, on ``jobs`` threads. distribution writes a manifest's
    # link files in place: a PUT that references a manifest (an index) must not overlap a PUT that writes
    # that manifest again (by digest, or under a tag), or it can read an empty link and refuse the index.
    # Within a wave no manifest refers to another of the same wave.
    heights: dict[Digest, int] = {}
    for image in images:
        for m in image.manifests:
            heights.setdefault(m.digest, 1 + max((heights.get(c.digest, 0) for c in m.manifests), default=-1))

    def in_waves(work: _Work) -> None:
        """Run each piece of ``work`` (keyed by target repository and manifest digest) in the wave of its height; a
        failure fails every image the piece was for, and nothing more is done for those images."""
        for height in sorted({heights[d] for _, d in work}):
            keys = [k for k in work if heights[k[1]] == height and any(id(i) not in failures for i in work[k][1])]
            for n, exc in _run_all(jobs, [work[k][0] for k in keys], keep_going):
                for image in work[keys[n]][1]:
                    failures.setdefault(id(image), exc)

    by_digest: _Work = {}
    for image in images:
        if id(image) in failures:
            continue
        target = _target_ref(image)
        # a tagged image's root goes by its tag alone, in the tag waves (as skopeo pushes it): the PUT under
        # the tag stores it by digest too, and a HEAD and a PUT fewer per image count when a registry is
        # restored with thousands of tags
        children = image.manifests[:-1] if image.request.target.tag else image.manifests
        for m in children:
            key = (str(target), m.digest)
            if key not in by_digest:
                by_digest[key] = (partial(_push_by_digest, sink, target, m), [])
            by_digest[key][1].append(image)
    in_waves(by_digest)
    tags: _Work = {}
    for image in images:  # every image's blobs and child manifests are in before any tag moves
        if id(image) in failures or not image.request.target.tag:
            continue
        key = (str(_target_ref(image)), image.root.digest)
        if key not in tags:  # the tags of one manifest go one after another: each PUT writes its links again
            same: list[PlannedImage] = []
            tags[key] = (partial(_push_tags, sink, same, lacked, result.unchanged), same)
        tags[key][1].append(image)
    in_waves(tags)
    for image in images:
        if id(image) in failures:
            result.failed.append(FailedImage(str(image.request.source), str(image.request.target),
                                             failures[id(image)]))
            continue
        target = image.request.target
        shown = target.with_digest(image.root.digest)
        result.images.append(MovedImage(str(image.request.source), str(shown), str(image.root.digest),
                                        image.root.media_type, tuple(str(p) for p in image.platforms)))
        progress(ImageDone(str(image.request.source), str(shown), str(image.root.digest)))
    return result


# pieces of work keyed by (target repository, manifest digest): what to run, and the images it is for
_Work = dict[tuple[str, Digest], tuple[Callable[[], None], list[PlannedImage]]]


def _push_by_digest(sink: Sink, target: Reference, manifest: Manifest) -> None:
    if not sink.has_manifest(target, manifest.digest):
        sink.push_manifest(target, manifest, None)


def _push_tags(sink: Sink, images: list[PlannedImage], lacked: set[tuple[str, str, str]],
               unchanged: set[str]) -> None:
    """Put each image's root under its tag, unless the tag names it already: a registry restored every night
    from a bundle of thousands of tags gets a PUT only for the tags that moved. That takes a HEAD, asked only
    for an image whose every blob its repository held already (a fresh restore, or tonight's new build, asks
    none; last night's images beside it in the same repository are asked)."""
    tagged: Callable[[Reference, str], Digest | None] | None = getattr(sink, "tagged", None)
    for image in images:
        target, tag = _target_ref(image), image.request.target.tag
        assert tag is not None
        new = any((target.host, target.repository, str(b.digest)) in lacked for b in image.blobs)
        if tagged is not None and not new and tagged(target, tag) == image.root.digest:
            unchanged.add(str(image.request.target))
            continue
        sink.push_manifest(target, image.root, tag)


def _run_all(jobs: int, tasks: list[object], keep_going: bool = False, *, heavy: frozenset[int] = frozenset(),
             heavy_jobs: int = 0, wind_down: Callable[[], bool] | None = None) -> list[tuple[int, Exception]]:
    """Run callables on ``jobs`` threads, in order. By default, on the first failure start no more and raise it;
    with ``keep_going`` run them all and return the failures as (task index, error).

    At most ``heavy_jobs`` of the tasks whose index is in ``heavy`` run at once (0: no limit); while that many
    run, the other threads take the next light task instead of waiting.

    On Ctrl-C no task starts any more and KeyboardInterrupt is raised; first, when ``wind_down()`` says the
    tasks running can end their current step in a way the next run builds on, for up to
    :data:`WIND_DOWN_SECONDS` they may (a second Ctrl-C cuts that short)."""
    if not tasks:
        return []
    stop = threading.Event()
    cond = threading.Condition()
    waiting_heavy = deque(n for n in range(len(tasks)) if n in heavy)
    waiting_light = deque(n for n in range(len(tasks)) if n not in heavy)
    running_heavy = 0
    limit = heavy_jobs if heavy_jobs > 0 else len(tasks)
    failures: list[tuple[int, Exception]] = []

    def take() -> int | None:
        """The first waiting task that may start now (O(1), however many blobs there are)."""
        nonlocal running_heavy
        with cond:
            while (waiting_heavy or waiting_light) and not stop.is_set():
                free = waiting_heavy and running_heavy < limit
                if free and (not waiting_light or waiting_heavy[0] < waiting_light[0]):
                    running_heavy += 1
                    return waiting_heavy.popleft()
                if waiting_light:
                    return waiting_light.popleft()
                cond.wait()  # only heavy tasks are left, and their lanes are full
            return None

    def worker() -> None:
        nonlocal running_heavy
        while (n := take()) is not None:
            try:
                tasks[n]()  # type: ignore[operator]
            except Exception as exc:
                if not keep_going:
                    stop.set()
                    raise
                with cond:
                    failures.append((n, exc))
            except BaseException:
                stop.set()
                raise
            finally:
                with cond:
                    running_heavy -= n in heavy
                    cond.notify_all()

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="airgap")
    futures: list[Future[None]] = []
    try:
        futures.extend(pool.submit(worker) for _ in range(min(max(1, jobs), len(tasks))))
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            exc = f.exception()
            if exc is not None:
                with cond:
                    stop.set()
                    cond.notify_all()
                pool.shutdown(wait=True)
                raise exc
    except KeyboardInterrupt:
        # Ctrl-C: start nothing more. Every step is resumable, but an upload cut mid-PATCH loses its whole session
        # on distribution: with a journal, the uploads in flight end their PATCH first
        with cond:
            stop.set()
            cond.notify_all()
        if wind_down is not None and wind_down():
            with suppress(KeyboardInterrupt):  # Ctrl-C again: at once
                wait(futures, timeout=WIND_DOWN_SECONDS)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return sorted(failures, key=lambda f: f[0])
