"""``repair``: rebuild missing or damaged chunks of a bundle from its parity chunks.

The signature is checked first; then every chunk, data and parity, on the bundle directory and the other
media. Per stripe, what is missing or damaged is rebuilt from the intact chunks, block by block; a rebuilt
chunk gets its final name only once its sha256 matches the manifest, and a chunk that is intact is never
written. ``import`` uses the same code, through a :class:`Repairer`, to rebuild a chunk it needs into its
state directory (the media may be read-only) as soon as it finds the chunk missing or damaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airgap.bundle.files import NotWritable
from airgap.bundle.parity import NotRepairable, Source, SourceCorrupt, Target, make_dir, rebuild_stripe
from airgap.bundle.reader import BundleReader, ChunkProblem, read_signed_manifest
from airgap.bundle.writer import chunk_intact
from airgap.model.bundle import BundleManifest, Chunk
from airgap.model.parity import Parity, StripeDamage
from airgap.signing import PublicKey

__all__ = ["NotRepairable", "Rebuilt", "RepairResult", "Repairer", "repair_bundle", "stripe_shares"]


@dataclass(frozen=True)
class Rebuilt:
    name: str
    path: Path
    size: int
    was: str  # missing | truncated | oversized | corrupt


@dataclass
class RepairResult:
    manifest: BundleManifest
    signer: PublicKey
    output: Path
    problems: list[ChunkProblem]  # what the check found before repairing
    rebuilt: list[Rebuilt] = field(default_factory=list)
    unrepairable: list[StripeDamage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_rebuilt(self) -> int:
        return sum(r.size for r in self.rebuilt)

    def error(self) -> NotRepairable | None:
        """The error to end with when some stripes lost more chunks than their parity can rebuild."""
        if not self.unrepairable:
            return None
        done = f"; the {len(self.rebuilt)} other(s) were rebuilt" if self.rebuilt else ""
        return NotRepairable(f"bundle {self.manifest.bundle_id} cannot be repaired: "
                             + "; ".join(d.describe() for d in self.unrepairable) + done)


def stripe_shares(manifest: BundleManifest, parity: Parity, stripe: int) -> dict[int, Chunk]:
    """The stripe's chunks by share number: data 0..count-1 (the shares up to K-1 past them are all-zero),
    parity K..K+M-1."""
    k = parity.layout.data
    shares = {n: manifest.chunks[i] for n, i in enumerate(parity.layout.members(stripe, len(manifest.chunks)))}
    shares.update({k + c.index: c.as_chunk() for c in parity.of_stripe(stripe)})
    return shares


def _rebuild(manifest: BundleManifest, parity: Parity, stripe: int, sources: dict[int, Source],
             targets: dict[int, Target], known_bad: Collection[str]) -> None:
    """Rebuild ``targets`` from ``sources``; a source found damaged on the way is left out and the stripe
    done again without it, while enough remain."""
    layout = parity.layout
    count = len(layout.members(stripe, len(manifest.chunks)))
    bad = list(known_bad)
    while True:
        if len(sources) + layout.data - count < layout.data:  # the all-zero shares are always known
            names = [c.name for n, c in sorted(stripe_shares(manifest, parity, stripe).items())
                     if c.name in bad or n in targets]
            raise NotRepairable(StripeDamage(stripe, tuple(names), layout.parity).describe())
        try:
            rebuild_stripe(layout.data, layout.parity, count, parity.stripe_size(stripe, manifest.chunks), sources,
                           targets)
            return
        except SourceCorrupt as exc:
            bad.extend(sources.pop(n).chunk.name for n in exc.shares)


def repair_bundle(directory: Path, trusted: Sequence[PublicKey], media: Sequence[Path] = (),
                  output: Path | None = None) -> RepairResult:
    """Check the bundle in ``directory`` (and ``media``) and rebuild what is missing or damaged into
    ``output`` (default: ``directory``). Stripes that lost too much are listed in ``unrepairable``."""
    t0 = time.monotonic()
    manifest, signer = read_signed_manifest(directory, trusted)
    out = output if output is not None else directory
    dirs = [directory, *media]
    if out.is_dir() and out.resolve() not in {d.resolve() for d in dirs}:
        dirs.append(out)  # what an earlier repair into it rebuilt counts
    reader = BundleReader(manifest, dirs)
    report = reader.check_all()
    result = RepairResult(manifest, signer, out, report.problems)
    if not report.problems:
        result.seconds = time.monotonic() - t0
        return result
    parity = manifest.parity
    if parity is None:
        raise NotRepairable(f"bundle {manifest.bundle_id} has no parity chunks: {len(report.problems)} missing or "
                            "damaged chunk(s) cannot be rebuilt",
                            hint="copy them again from the source bundle (see `airgap verify`); bundles exported "
                                 "with --parity N can be repaired")
    if output is None and not os.access(directory, os.W_OK):
        raise NotWritable(f"cannot write rebuilt chunks into {directory}: it is read-only (media such as a DVD, or "
                          "a read-only mount)",
                          hint="rebuild them into another directory with --output DIR, then pass --media DIR to "
                               "verify and import")
    make_dir(out)
    problems = {p.chunk.name: p for p in report.problems}
    for damage in parity.damage(manifest.chunks, problems):
        if not damage.repairable:
            result.unrepairable.append(damage)
            continue
        sources: dict[int, Source] = {}
        targets: dict[int, Target] = {}
        for n, chunk in stripe_shares(manifest, parity, damage.stripe).items():
            dest = out / chunk.name
            if chunk.name not in problems:
                path = reader.path(chunk)
                assert path is not None
                sources[n] = Source(path, chunk)
            else:  # (a good copy in --output counts already: the reader checks every copy, --output's too)
                targets[n] = Target(dest, chunk)
        if targets:
            _rebuild(manifest, parity, damage.stripe, sources, targets, damage.bad)
        result.rebuilt.extend(Rebuilt(t.chunk.name, t.path, t.chunk.size, problems[t.chunk.name].kind)
                              for t in targets.values() if t.chunk is not None)
    result.seconds = time.monotonic() - t0
    return result


class Repairer:
    """Rebuilds, for an import, the chunks it finds missing or damaged into a directory of its own.

    Thread-safe: the import reads chunks on several threads; one stripe is rebuilt at a time."""

    def __init__(self, manifest: BundleManifest, parity: Parity, dirs: Sequence[Path], out_dir: Path) -> None:
        self.manifest = manifest
        self.parity = parity
        self.dirs = list(dirs)
        self.out_dir = out_dir
        self.rebuilt: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    def for_import(cls, manifest: BundleManifest, dirs: Sequence[Path], state_dir: Path) -> Repairer | None:
        """None for a bundle without parity. Rebuilt chunks go to ``STATE_DIR/repaired/<bundle>/``."""
        if manifest.parity is None:
            return None
        key = hashlib.sha256(manifest.bundle_id.encode()).hexdigest()[:16]
        # the id comes from manifest.json (untrusted even when signed): only safe characters reach the file name
        name = re.sub(r"[^A-Za-z0-9_-]", "_", manifest.bundle_id[:40])
        return cls(manifest, manifest.parity, dirs, state_dir / "repaired" / f"{name}-{key}")

    def _find(self, chunk: Chunk) -> Path | None:
        """A file of the chunk's size: one rebuilt earlier, else the first on the media."""
        for d in (self.out_dir, *self.dirs):
            p = d / chunk.name
            try:
                if p.is_file() and p.stat().st_size == chunk.size:
                    return p
            except OSError:
                continue
        return None

    def rebuild(self, index: int) -> Path:
        """A copy of data chunk ``index`` rebuilt from parity and checked against the manifest (or
        :class:`NotRepairable`). Other data chunks of its stripe without a file are rebuilt in the same pass."""
        with self._lock:
            chunk = self.manifest.chunks[index]
            dest = self.out_dir / chunk.name
            if chunk_intact(dest, chunk):  # rebuilt by an earlier, interrupted run: used, so reported
                if chunk.name not in self.rebuilt:
                    self.rebuilt.append(chunk.name)
                return dest
            layout = self.parity.layout
            stripe, own = layout.stripe_of(index), layout.share_of(index)
            targets = {own: Target(dest, chunk)}
            sources: dict[int, Source] = {}
            missing: list[str] = []
            for n, c in stripe_shares(self.manifest, self.parity, stripe).items():
                if n == own:
                    continue
                path = self._find(c)
                if path is not None:
                    sources[n] = Source(path, c)
                elif n < layout.data:
                    targets[n] = Target(self.out_dir / c.name, c)
                else:
                    missing.append(c.name)
            make_dir(self.out_dir.parent, mode=0o700)  # STATE_DIR/repaired: private, as the state directory
            make_dir(self.out_dir, mode=0o700)
            _rebuild(self.manifest, self.parity, stripe, sources, targets, missing)
            self.rebuilt.extend(t.chunk.name for t in targets.values() if t.chunk is not None)
            return dest

    def unrepairable(self, missing: Collection[int]) -> list[StripeDamage]:
        """Of the stripes holding the data chunks ``missing`` (no file on any medium), those that lack more
        chunks, data or parity, than their parity rebuilds."""
        layout = self.parity.layout
        out = []
        for stripe in sorted({layout.stripe_of(i) for i in missing}):
            gone = tuple(c.name for n, c in sorted(stripe_shares(self.manifest, self.parity, stripe).items())
                         if self._find(c) is None)
            damage = StripeDamage(stripe, gone, layout.parity)
            if not damage.repairable:
                out.append(damage)
        return out

    def cleanup(self) -> None:
        """After a complete import: the rebuilt copies are no longer needed (nor ``repaired/``, once empty)."""
        shutil.rmtree(self.out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.out_dir.parent.rmdir()
