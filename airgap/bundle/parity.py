"""Parity chunk files: computing them at export, rebuilding missing or damaged chunks from them.

The code is the systematic Reed-Solomon code over GF(2^8) of docs/bundle-format.md section 9
(:mod:`airgap.bundle.rscode`); the matrix that gives the wanted shares from the K shares read is computed once
per stripe. A stripe is processed in blocks of :data:`BLOCK` bytes of each of its chunks, so memory stays at
a few blocks per share whatever the chunk size. Outputs are written under a hidden temporary name, checked
against their sha256 (when the manifest gives one), fsynced and only then renamed to their final name; every
input is hashed as it is read and compared with the manifest at the end, so that nothing is built from bytes
that changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from airgap.atomic import fsync_dir
from airgap.bundle.files import BundleError, os_error
from airgap.model.bundle import Chunk
from airgap.model.parity import Parity, ParityChunk, StripeLayout, parity_name

if TYPE_CHECKING:
    from airgap.bundle import rscode  # NumPy: loaded only when parity is computed or used

BLOCK = 1024 * 1024
_ZEROS = bytes(BLOCK)


class NotRepairable(BundleError):
    exit_code = 7
    default_hint = ("find the missing chunks (pass each medium's directory with --media DIR) or copy the damaged "
                    "ones again from the source bundle, then run the command again")


class SourceCorrupt(Exception):
    """A chunk used as input changed or was damaged (its sha256 differs): build again without it."""

    def __init__(self, shares: list[int]) -> None:
        super().__init__(f"shares {shares} differ from the manifest")
        self.shares = shares


@dataclass(frozen=True)
class Source:
    path: Path
    chunk: Chunk


@dataclass(frozen=True)
class Target:
    path: Path  # the final name; written as a hidden temporary file beside it first
    chunk: Chunk | None  # the manifest's entry (its sha256 is checked before the rename), None when computing it


class _Output:
    """A file written under a temporary name and renamed to ``path`` once complete and checked."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        self.hash = hashlib.sha256()
        try:
            self.file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        except OSError as exc:
            raise os_error(exc, f"creating {self.tmp}") from exc

    def write(self, data: bytes | memoryview) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise os_error(exc, f"writing {self.tmp}") from exc
        self.hash.update(data)

    def finish(self, expected: str | None) -> str:
        """fsync and close; the sha256 of what was written (refused, and removed, when not ``expected``)."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        except OSError as exc:
            raise os_error(exc, f"writing {self.tmp}") from exc
        digest = self.hash.hexdigest()
        if expected is not None and digest != expected:
            self.tmp.unlink(missing_ok=True)
            raise BundleError(f"rebuilt {self.path.name} does not match its sha256 in the manifest; it was not "
                              "written", hint="the bundle's parity is inconsistent with its chunks; copy the chunk "
                                              "again from the source bundle")
        return digest

    def commit(self) -> None:
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise os_error(exc, f"renaming {self.tmp}") from exc

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _read(f: BinaryIO, chunk: Chunk, offset: int, n: int, hasher: hashlib._Hash,
          zeros: memoryview) -> bytes | memoryview:
    """``n`` bytes of a share at ``offset``: the chunk's bytes there, zero-padded past its end."""
    want = max(0, min(n, chunk.size - offset))
    data = f.read(want) if want else b""
    hasher.update(data)
    return data if len(data) == n else data + zeros[: n - len(data)]


def _expected(target: Target) -> str | None:
    return target.chunk.sha256 if target.chunk is not None else None


def remove_partials(directory: Path) -> None:
    """The temporary files that an interrupted run of this module left behind."""
    for stale in directory.glob(".*.partial-[0-9]*"):
        stale.unlink(missing_ok=True)


def make_dir(directory: Path, *, mode: int = 0o777) -> None:
    """Create ``directory`` (and its parents) for rebuilt chunks, and clear what an interrupted run left there."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=mode)
        remove_partials(directory)
    except OSError as exc:
        raise os_error(exc, f"creating {directory}") from exc


def write_parity(out_dir: Path, chunks: Sequence[Chunk], layout: StripeLayout, *, block: int = BLOCK) -> Parity:
    """Compute the parity chunks of the data ``chunks`` (complete files in ``out_dir``) and write them there."""
    remove_partials(out_dir)
    k, m = layout.data, layout.parity
    from airgap.bundle import rscode

    encoder = rscode.Combiner(rscode.recovery_matrix(k, m, list(range(k)), list(range(k, k + m))))
    out: list[ParityChunk] = []
    for s in range(layout.stripes):
        members = [chunks[i] for i in layout.members(s, len(chunks))]
        size = max(c.size for c in members)
        sources = {n: Source(out_dir / c.name, c) for n, c in enumerate(members)}
        targets = {k + j: Target(out_dir / parity_name(s, j), None) for j in range(m)}
        try:
            digests = _run_stripe(encoder, list(range(k)), size, sources, targets, block)
        except SourceCorrupt as exc:
            names = ", ".join(members[n].name for n in exc.shares)
            raise BundleError(f"{names} in {out_dir} changed while its parity was computed",
                              hint="check the disk, delete the chunk and run the export again: it resumes") from None
        out.extend(ParityChunk(parity_name(s, j), size, digests[k + j], s, j) for j in range(m))
    fsync_dir(out_dir)
    return Parity(layout, tuple(out))


def rebuild_stripe(k: int, m: int, count: int, size: int, sources: Mapping[int, Source],
                   targets: Mapping[int, Target], *, block: int = BLOCK) -> None:
    """Rebuild the shares in ``targets`` of a stripe of ``k`` data shares (the first ``count`` of them data
    chunks, the others all-zero) and ``m`` parity shares (numbers k to k+m-1), all ``size`` bytes long, from
    ``sources``. Reads k sources, data shares first. Raises :class:`SourceCorrupt` when a source's sha256
    differs from the manifest's (nothing is written then), :class:`NotRepairable` when fewer than k shares are
    known."""
    data_known = [n for n in range(k) if n in sources or n >= count]
    chosen = (data_known + sorted(n for n in sources if n >= k))[:k]
    if len(chosen) < k:
        raise NotRepairable(f"a stripe with {len(targets)} chunk{'' if len(targets) == 1 else 's'} to rebuild has "
                            f"only {len(chosen)} of the {k} "
                            "chunks needed")
    from airgap.bundle import rscode

    coder = rscode.Combiner(rscode.recovery_matrix(k, m, chosen, list(targets)))
    _run_stripe(coder, chosen, size, {n: sources[n] for n in chosen if n in sources}, targets, block)
    for directory in {t.path.parent for t in targets.values()}:
        fsync_dir(directory)


def _run_stripe(coder: rscode.Combiner, shares: list[int], size: int, sources: Mapping[int, Source],
                targets: Mapping[int, Target], block: int) -> dict[int, str]:
    """One pass over a stripe: read the k ``shares`` block by block (``sources``, or all-zero), compute the
    ``targets`` from them (``coder``: one output per target, in their order) and write them. Returns their
    sha256."""
    hashers = {n: hashlib.sha256() for n in sources}
    zeros = memoryview(_ZEROS if block <= BLOCK else bytes(block))
    with ExitStack() as stack:
        files: dict[int, BinaryIO] = {}
        for n, src in sources.items():
            try:
                files[n] = stack.enter_context(src.path.open("rb"))
            except OSError as exc:
                raise os_error(exc, f"reading {src.path}") from exc

        def read(offset: int) -> list[bytes | memoryview]:
            width = min(block, size - offset)
            return [_read(files[n], sources[n].chunk, offset, width, hashers[n], zeros) if n in sources
                    else zeros[:width] for n in shares]

        outputs: dict[int, _Output] = {}
        # NumPy's lookups, sha256 and reads release the GIL: the next blocks are read and hashed on a thread while
        # these are coded and written
        pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="airgap-parity"))
        try:
            for n, t in targets.items():
                outputs[n] = _Output(t.path, t.chunk.size if t.chunk else size)
            ahead = pool.submit(read, 0)
            for offset in range(0, size, block):
                width = min(block, size - offset)
                try:
                    blocks = ahead.result()
                except OSError as exc:
                    raise os_error(exc, "reading a chunk of the stripe") from exc
                if offset + block < size:
                    ahead = pool.submit(read, offset + block)
                for n, piece in zip(targets, coder(blocks), strict=True):
                    out = outputs[n]
                    if offset < out.size:  # a rebuilt data chunk: the first ``size`` bytes of its share
                        out.write(piece.data[: min(width, out.size - offset)])
            bad = [n for n, h in hashers.items() if h.hexdigest() != sources[n].chunk.sha256]
            if bad:
                raise SourceCorrupt(bad)
            digests = {n: out.finish(_expected(targets[n])) for n, out in outputs.items()}
            for out in outputs.values():
                out.commit()
            return digests
        finally:
            for out in outputs.values():
                out.abort()  # a no-op for committed outputs (their temporary name is gone)
