"""Reading a bundle: the signed manifest, chunk files spread over one or more media directories, and
random access to any blob through the zstd frames that start at blob (and segment) boundaries."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import zstandard

from airgap.bundle import directio, tarfmt
from airgap.bundle.files import MANGLED_HINT, BundleError, mangled_names, no_manifest
from airgap.errors import AirgapError, DigestMismatch
from airgap.model.bundle import MAX_MANIFEST_BYTES, BundleManifest, Chunk, Span
from airgap.model.digest import Digest
from airgap.signing import PublicKey, SignatureError, verify
from airgap.streams import ReadAgain, verified

READ = 1024 * 1024
READ_LARGE = 4 * 1024 * 1024
"""Blocks a read of a range of LARGE_RANGE bytes or more asks for (``O_DIRECT`` has no read-ahead: one block is
read ahead, and larger ones keep the medium busy). Only large blobs span that much, and an import moves at most
two of them at once (the engine's large-blob lanes), so memory stays bounded (two buffers each). The bench set's
import, medians of alternated rounds against 1 MiB blocks: 4.46 s against 4.66 s (6 rounds), 4.80 s against 4.91 s
(8 rounds, a busier VM), ~0.1 CPU-s less; peak RSS 74-78 MiB against 62 MiB."""
LARGE_RANGE = 16 * 1024 * 1024
SLOW_MEDIA = 200 * 1024 * 1024
"""Bytes/s: a medium read slower than this (USB sticks, DVDs, network shares) is read once per chunk, through
the page cache, instead of twice with O_DIRECT: there the import waits for the medium, and a second read
doubles that. Faster media are read twice: the import is bound by the CPU (on the 2-core test VM the
registry takes ~215 MiB/s; its disk gives ~1.2 GB/s, ~530 MiB/s to each of two chunks checked at once),
and O_DIRECT costs less of it than the page cache."""
FRAME_EXTRA = tarfmt.MAX_HEADER + 2 * tarfmt.BLOCK + len(tarfmt.END_OF_ARCHIVE)  # header, padding, end
MAX_SIGNATURE = 4096


class ChunkMissing(BundleError):
    default_hint = "find the medium that holds it (pass its directory with --media), or export the bundle again"


class ChunkCorrupt(BundleError):
    default_hint = "the medium damaged or altered it; copy that chunk again from the source bundle"


@dataclass
class ChunkProblem:
    chunk: Chunk
    kind: str  # missing | truncated | oversized | corrupt
    detail: str = ""


@dataclass
class ChunkReport:
    problems: list[ChunkProblem] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # files in the bundle directories that no manifest names
    renamed: dict[str, str] = field(default_factory=dict)  # missing chunk name -> the file that holds it
    # a good chunk whose copy in an earlier directory is damaged -> which copies are damaged, which one is used
    shadowed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_signed_manifest(directory: Path, trusted: Sequence[PublicKey]) -> tuple[BundleManifest, PublicKey]:
    """Check ``manifest.json`` against its signature first; parse it only when a trusted key signed it."""
    mpath, spath = directory / "manifest.json", directory / "manifest.json.sig"
    if not mpath.is_file():
        raise no_manifest(directory)
    if not spath.is_file():
        raise BundleError(f"{directory} has manifest.json but no manifest.json.sig: the bundle is unsigned",
                          hint="copy the signature along with the bundle, or ask for a signed bundle"
                          + (f"; {MANGLED_HINT}" if mangled_names(directory) else ""))
    if spath.stat().st_size > MAX_SIGNATURE:
        raise BundleError(f"{spath} is larger than a signature can be", hint="the bundle is damaged or forged")
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:  # untrusted media: not read whole before it is bounded
        raise BundleError(f"{mpath} is larger than the {MAX_MANIFEST_BYTES >> 20} MiB a bundle manifest may have",
                          hint="the bundle is damaged or forged")
    data = mpath.read_bytes()
    signer = verify(data, spath.read_bytes(), trusted, subject=str(mpath))
    manifest = BundleManifest.parse(data)
    if manifest.key_id != signer.key_id:  # re-signed by another trusted key: the bundle is not as it was made
        raise SignatureError(f"{mpath} names key {manifest.key_id} as its signer, but key {signer.key_id} signed it",
                             hint="it was signed again after it was made: do not use it unless you know who did, "
                                  "and why")
    return manifest, signer


class BundleReader:
    """Chunk files looked up by name in ``dirs`` (the bundle directory first, then other media).

    ``repair`` (with ``verify_chunks``): called with the index of a chunk found missing or damaged, returns
    the path of a copy rebuilt from parity and checked against the manifest (or raises an AirgapError)."""

    def __init__(self, manifest: BundleManifest, dirs: Sequence[Path], *, verify_chunks: bool = False,
                 repair: Callable[[int], Path] | None = None) -> None:
        self.manifest = manifest
        self.dirs = list(dirs)
        self.verify_chunks = verify_chunks
        self.repair = repair
        # verify_chunks: each chunk is checked whole, then read again for its blobs. On a slow medium the
        # check goes through the page cache and the blob reads find it there (see directio).
        self._slow: dict[Path, bool] = {}  # medium (directory) -> slow, decided by the first check on it
        self._cached: set[str] = set()  # names of the chunks that passed their check through the page cache
        self._paths: dict[str, Path | None] = {}
        self.shadowed: dict[str, str] = {}  # see ChunkReport.shadowed
        self._checked: dict[int, ChunkProblem | None] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()
        self._checks: dict[int, Future[ChunkProblem | None]] = {}
        self._checker: ThreadPoolExecutor | None = None
        # A chunk is read while its check runs, behind it (see read_range): what the check has hashed of the
        # chunk's first copy, and whether it reads the rest through the page cache (None: not judged yet)
        self._cond = threading.Condition()
        self._hashed: dict[int, tuple[int, bool | None]] = {}
        self._ended: set[int] = set()  # chunks whose check has ended
        self._clean: set[int] = set()  # chunks whose first copy passed its check
        self._closing = False

    def ensure_chunk(self, index: int) -> None:
        """With ``verify_chunks``: check a chunk's size and sha256 the first time it is read (once)."""
        if not self.verify_chunks:
            return
        with self._lock:
            lock = self._locks.setdefault(index, threading.Lock())
        check = self._start_check(index)
        with lock:
            if index not in self._checked:
                problem = check.result()
                if problem is not None and self.repair is not None:
                    problem = self._rebuild(index, problem)
                self._checked[index] = problem
        problem = self._checked[index]
        if problem is not None:
            raise self.problem_error(problem)

    def _start_check(self, index: int) -> Future[ChunkProblem | None]:
        """The check of a chunk, started on a background thread the first time it is asked for (two at once:
        reading a chunk from the media and hashing it overlaps with the uploads and with the other check)."""
        with self._lock:
            check = self._checks.get(index)
            if check is None:
                if self._checker is None:
                    self._checker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="airgap-check")
                check = self._checks[index] = self._checker.submit(self._run_check, index)
            return check

    def _run_check(self, index: int) -> ChunkProblem | None:
        """The check of chunk ``index``, publishing how far it has hashed the copy read from meanwhile."""
        def hashed(done: int, cached: bool | None) -> None:
            with self._cond:
                self._hashed[index] = (done, cached)
                self._cond.notify_all()

        chunk = self.manifest.chunks[index]
        passed = False  # an error reading the chunk (EIO) ends the check without a problem: not passed either
        try:
            problem = self.check_chunk(chunk, progress=hashed)
            passed = problem is None
            return problem
        finally:
            with self._cond:
                if passed and chunk.name not in self.shadowed:
                    self._clean.add(index)
                self._ended.add(index)
                self._cond.notify_all()

    def _behind_check(self, index: int, upto: int) -> bool | None:
        """Wait until the check of chunk ``index`` has hashed its first ``upto`` bytes and knows how it reads the
        medium: whether to read through the page cache then; None once the check has ended."""
        with self._cond:
            while index not in self._ended and not self._closing:
                done, cached = self._hashed.get(index, (0, None))
                if done >= upto and cached is not None:
                    return cached
                self._cond.wait()
            return None

    def _settle(self, early: Sequence[int]) -> None:
        """Before the last bytes of a stream: the checks of the chunks it read early must have passed, and on the
        copy it read (else :class:`ReadAgain`: a good copy, another medium's or rebuilt, is read from now on)."""
        for index in early:
            self.ensure_chunk(index)
            if index not in self._clean:
                raise ReadAgain(f"chunk {self.manifest.chunks[index].name} was read while it was checked, and the "
                                "copy read is damaged")

    def close(self) -> None:
        """Stop the background checks (those not started yet are dropped). A read waiting behind a check waits
        for that check's end instead (one dropped ends it at once, with an error)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        with self._lock:
            checker, self._checker = self._checker, None
        if checker is not None:
            checker.shutdown(wait=True, cancel_futures=True)

    def _rebuild(self, index: int, problem: ChunkProblem) -> ChunkProblem | None:
        """Read a rebuilt copy of the chunk from now on, or say why there is none."""
        assert self.repair is not None
        try:
            self._paths[problem.chunk.name] = self.repair(index)
        except AirgapError as exc:
            problem.detail = "; ".join(x for x in (problem.detail, f"parity cannot rebuild it: {exc.message}") if x)
            return problem
        return None

    def problem_error(self, problem: ChunkProblem) -> BundleError:
        idx = self.manifest.chunks.index(problem.chunk)
        images = ", ".join(i.reference for i in self.manifest.images_affected({idx})) or "no image"
        where = ", ".join(map(str, self.dirs))
        detail = f" ({problem.detail})" if problem.detail else ""
        if problem.kind == "missing":
            return ChunkMissing(f"chunk {problem.chunk.name} is missing from {where}{detail}; "
                                f"it holds data of {images}")
        return ChunkCorrupt(f"chunk {problem.chunk.name} is {problem.kind}{detail}; it holds data of {images}; "
                            "nothing from it was committed")

    def path(self, chunk: Chunk) -> Path | None:
        """The copy of ``chunk`` to read: the first found, or the first good one once checked."""
        if chunk.name not in self._paths:
            copies = self._copies(chunk)
            self._paths[chunk.name] = copies[0] if copies else None
        return self._paths[chunk.name]

    def _copies(self, chunk: Chunk) -> list[Path]:
        return [p for d in self.dirs if (p := d / chunk.name).is_file()]

    # -- checking -----------------------------------------------------------------------------
    def size_problem(self, chunk: Chunk) -> ChunkProblem | None:
        """The check without reading: no copy of the chunk, or none of the size the manifest says."""
        copies = self._copies(chunk)
        if not copies:
            return ChunkProblem(chunk, "missing")
        sizes = [p.stat().st_size for p in copies]
        if chunk.size in sizes:
            return None
        kind = "truncated" if sizes[0] < chunk.size else "oversized"
        return ChunkProblem(chunk, kind, f"{sizes[0]} of {chunk.size} bytes")

    def check_chunk(self, chunk: Chunk, *,
                    progress: Callable[[int, bool | None], object] | None = None) -> ChunkProblem | None:
        """Check the chunk's copies in order (the bundle directory, then each medium): the first good one is
        the one read from then on, so that a damaged copy does not hide a good one on a later medium.
        ``progress``: see :func:`directio.sha256_for_reread` (the first copy's)."""
        copies = self._copies(chunk)
        if not copies:
            return ChunkProblem(chunk, "missing")
        bad: list[tuple[Path, ChunkProblem]] = []
        for p in copies:
            problem = self._check_copy(chunk, p, progress if not bad else None)
            if problem is None:
                self._paths[chunk.name] = p
                if bad:
                    self.shadowed[chunk.name] = "; ".join(
                        f"{q} is {b.kind} ({b.detail})" for q, b in bad) + f"; the good copy {p} is used"
                return None
            bad.append((p, problem))
        if len(self.dirs) == 1:
            return bad[0][1]
        first = bad[0][1]  # name each copy: the operator must know which medium to copy again
        first.detail = "; ".join(f"{b.detail} in {q}" if b.kind == first.kind else f"{b.kind}, {b.detail} in {q}"
                                 for q, b in bad)
        return first

    def _check_copy(self, chunk: Chunk, p: Path,
                    progress: Callable[[int, bool | None], object] | None = None) -> ChunkProblem | None:
        size = p.stat().st_size
        if size != chunk.size:
            kind = "truncated" if size < chunk.size else "oversized"
            return ChunkProblem(chunk, kind, f"{size} of {chunk.size} bytes")
        if not self.verify_chunks:
            digest = _sha256_file(p)
        else:
            with self._lock:
                keep = self._slow.get(p.parent)
            digest, verdict = directio.sha256_for_reread(p, keep=keep, slow_below=SLOW_MEDIA, progress=progress)
            with self._lock:
                if verdict is not None:
                    self._slow.setdefault(p.parent, verdict)
                if verdict and digest == chunk.sha256:
                    self._cached.add(chunk.name)
        if digest != chunk.sha256:
            return ChunkProblem(chunk, "corrupt", "sha256 differs")
        return None

    def check_all(self) -> ChunkReport:
        report = ChunkReport()
        parity = self.manifest.parity
        chunks = self.manifest.chunks + (tuple(c.as_chunk() for c in parity.chunks) if parity else ())
        for chunk in chunks:
            problem = self.check_chunk(chunk)
            if problem:
                report.problems.append(problem)
        report.shadowed = dict(self.shadowed)
        known = {c.name for c in chunks} | {"manifest.json", "manifest.json.sig"}
        missing = {p.chunk.sha256: p.chunk.name for p in report.problems if p.kind == "missing"}
        for d in self.dirs:
            for entry in sorted(os.listdir(d)):
                if entry in known or entry.startswith("."):
                    continue
                report.extra.append(str(d / entry))
                f = d / entry
                if missing and f.is_file() and any(c.size == f.stat().st_size for c in chunks):
                    digest = _sha256_file(f)
                    if digest in missing:
                        report.renamed[missing[digest]] = str(f)
        return report

    # -- reading ------------------------------------------------------------------------------
    def read_range(self, offset: int, length: int, *, check: bool = True,
                   early: list[int] | None = None) -> Iterator[memoryview | bytes]:
        """Raw stream bytes ``[offset, offset+length)`` across chunk files, as views valid only until the next
        one is asked for (see :func:`directio.read_range`). ``early`` gets the chunks read while their check ran."""
        size = self.manifest.chunk_size
        pos, end = offset, offset + length
        block = READ_LARGE if length >= LARGE_RANGE else READ
        early = [] if early is None else early  # chunks this stream read while their check ran
        while pos < end:
            idx, off = divmod(pos, size)
            chunk = self.manifest.chunks[idx]
            ahead = False
            if check or (self.repair is not None and self.path(chunk) is None):
                if self.verify_chunks:
                    # the chunk is checked whole, on a background thread, and read meanwhile behind that check
                    # (its bytes are sent before the check ends: the stream's last ones wait for it, see _settle,
                    # and an upload is continued only over chunks that passed, see open_blob). A read that goes on
                    # into the next chunk starts that one's check too, after the one it needs now
                    self._start_check(idx)
                    if end > (idx + 1) * size:
                        self._start_check(idx + 1)
                    with self._cond:
                        ahead = idx not in self._ended and self.path(chunk) is not None
                if not ahead:
                    self.ensure_chunk(idx)
            p = self.path(chunk)
            if p is None and self.verify_chunks:
                raise self.problem_error(ChunkProblem(chunk, "missing"))
            if p is None:
                raise ChunkMissing(f"chunk {chunk.name} is missing from {', '.join(map(str, self.dirs))}")
            want = min(end - pos, chunk.size - off)
            cached = chunk.name in self._cached
            ready: Callable[[int], object] | None = None
            if ahead:
                behind = self._behind_check(idx, min(off + block, chunk.size))
                if behind is None:  # the check has ended meanwhile
                    self.ensure_chunk(idx)
                    p = self.path(chunk) or p
                    cached = chunk.name in self._cached
                else:
                    early.append(idx)
                    cached, ready = behind, partial(self._behind_check, idx)
            for data in directio.read_range(p, off, want, block=block, cached=cached, ready=ready):
                want -= len(data)
                pos += len(data)
                if early and pos == end:  # the stream's last bytes: not before its chunks have passed
                    self._settle(early)
                yield data
            if want:
                raise ChunkCorrupt(f"chunk {chunk.name} is shorter than the manifest says")

    def _frames(self, span: Span, first: int, check: bool,
                early: list[int] | None = None) -> Generator[memoryview, None, None]:
        """The compressed frames ``first..`` of ``span``, each whole (at most 2·S + 64 KiB, section 2.2).

        Each is gathered, from the read blocks, into one buffer that the next frame reuses: a frame is valid
        only until the next one is asked for (the decoder makes its own output)."""
        if first >= len(span.frames):
            return
        start = span.offset + sum(span.frames[:first])
        rest = span.frames[first:]
        sizes = iter(rest)
        frame = bytearray(max(rest))
        want, have = next(sizes, 0), 0
        with memoryview(frame) as whole:
            for data in self.read_range(start, span.end - start, check=check, early=early):
                view = memoryview(data)
                while view and want:
                    take = min(want - have, len(view))
                    whole[have : have + take] = view[:take]
                    have += take
                    view = view[take:]
                    if have == want:
                        yield whole[:want]
                        want, have = next(sizes, 0), 0

    def _decoded(self, span: Span, first: int, check: bool, what: str,
                 early: list[int] | None = None) -> Generator[bytes, None, None]:
        """The decompressed frames ``first..`` of ``span``, one frame at a time (memory: one segment)."""
        limit = self.manifest.segment_size + FRAME_EXTRA
        dctx = zstandard.ZstdDecompressor()
        try:
            for frame in self._frames(span, first, check, early):
                size = zstandard.frame_content_size(frame)
                if size > limit:  # a forged header must not make us allocate its claim
                    raise ChunkCorrupt(f"the bundle stream is damaged where it holds {what} (a frame claims "
                                       f"{size} bytes, more than a segment holds)",
                                       hint="run `airgap verify` to find the damaged chunk")
                yield dctx.decompress(frame, max_output_size=limit)
        except zstandard.ZstdError as exc:
            raise ChunkCorrupt(f"the bundle stream is damaged where it holds {what} ({exc})",
                               hint="run `airgap verify` to find the damaged chunk") from None

    def open_member(self, span: Span, path: str, size: int, offset: int = 0, *, check: bool = True) -> Iterator[bytes]:
        """The content of a tar member from ``offset``: decodes from the frame holding that offset.
        ``check=False`` skips the whole-chunk check (for small members whose digest is checked anyway)."""
        seg = self.manifest.segment_size
        k = min(offset // seg, len(span.frames) - 1)
        skip = offset - k * seg  # content bytes of frame k to pass over
        left = size - offset
        early: list[int] = []
        frames = self._decoded(span, k, check, path, early)
        try:
            yield from self._member(frames, k, skip, left, path, size)
        except AirgapError:
            if check and self.verify_chunks:
                self._explain(early)
            raise
        finally:
            frames.close()

    def _explain(self, early: Sequence[int]) -> None:
        """A stream that read chunks while they were checked found damage (zstd, tar): what their checks say is
        the error to give (which chunk, which images), or :class:`ReadAgain` once a good copy is read instead.
        Only the chunks this stream read early: another stream's early read of a chunk (damaged, and read from a
        good copy since) says nothing of this one's bytes, and a ReadAgain for it would start this one again
        forever."""
        self._settle(early)

    @staticmethod
    def _member(frames: Iterator[bytes], k: int, skip: int, left: int, path: str, size: int) -> Iterator[bytes]:
        for n, out in enumerate(frames):
            start = skip
            if n == 0 and k == 0:
                start += tarfmt.parse_header(out[: tarfmt.MAX_HEADER], expect_path=path, expect_size=size)
            skip = max(0, start - len(out))
            take = max(0, min(left, len(out) - start))
            if take:
                # a middle frame is all content: handed on as it is, without a copy
                yield out if start == 0 and take == len(out) else out[start : start + take]
                left -= take
            if not left:
                return
        raise ChunkCorrupt(f"{path} ends early in the bundle stream")

    @contextmanager
    def open_blob(self, digest: Digest, offset: int = 0, *, check: bool = True) -> Iterator[Iterator[bytes]]:
        blob = self.manifest.blob(digest)
        if blob is None:
            raise BundleError(f"the bundle does not hold blob {digest}")
        chunks = self.open_member(blob.span, tarfmt.blob_path(digest.hex), blob.size, offset, check=check)
        if offset and check and self.verify_chunks:
            # the prefix is hashed, not sent: its chunks are checked before it is read, not behind
            seg = self.manifest.segment_size
            k = min((offset - 1) // seg, len(blob.span.frames) - 1)
            under = self.manifest.chunks_for(Span(blob.span.offset, blob.span.frames[: k + 1]))
            for index in under:
                self.ensure_chunk(index)
            with self._cond:
                damaged = [self.manifest.chunks[i].name for i in under if i not in self._clean]
            if damaged:
                # the session being continued (by this run, or journaled by an earlier one) received bytes read
                # from these chunks, maybe while they were checked, maybe from the copy found damaged (a good one is
                # read now): its prefix may not be the blob's, the session is given up
                raise ReadAgain(f"the upload of blob {digest.short} may hold bytes of {', '.join(damaged)}, found "
                                "damaged")
        if offset:
            # hash the prefix too, so that the digest is still checked end to end
            hasher = hashlib.sha256()
            prefix = self.open_member(blob.span, tarfmt.blob_path(digest.hex), blob.size, 0, check=check)
            left = offset
            for part in prefix:
                hasher.update(part[:left])
                left -= min(left, len(part))
                if not left:
                    break
            prefix.close()  # type: ignore[attr-defined]
            yield verified(chunks, digest, blob.size, f"blob {digest} in the bundle", offset=offset,
                           prefix_hasher=hasher)
        else:
            yield verified(chunks, digest, blob.size, f"blob {digest} in the bundle")

    def read_file(self, path: str) -> bytes:
        """A file of the layout (``oci-layout``, ``index.json``). The manifest gives files no digest, so the chunks
        that hold one are checked whole even without ``verify_chunks`` (a flipped byte is found, not returned)."""
        f = next((x for x in self.manifest.files if x.path == path), None)
        if f is None:
            raise BundleError(f"the bundle has no {path}")
        if not self.verify_chunks:
            size = self.manifest.chunk_size
            last = max(f.span.offset, f.span.offset + sum(f.span.frames) - 1)
            for index in range(f.span.offset // size, min(last // size + 1, len(self.manifest.chunks))):
                problem = self.check_chunk(self.manifest.chunks[index])
                if problem is not None:
                    raise self.problem_error(problem)
        return b"".join(self.open_member(f.span, path, f.size))


def _sha256_file(path: Path) -> str:
    return directio.sha256_file(path)


__all__ = ["BundleReader", "ChunkCorrupt", "ChunkMissing", "ChunkReport", "DigestMismatch", "read_signed_manifest"]
