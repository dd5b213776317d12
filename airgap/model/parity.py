"""Parity chunks: erasure-coded chunks from which missing or damaged chunks of a bundle are rebuilt.

Pure data and validation: no files, no arithmetic over chunk bytes (that is :mod:`airgap.bundle.parity`).
The data chunks are dealt into ``S`` stripes, interleaved: data chunk ``i`` is share ``i // S`` of stripe
``i % S``, so that chunks written one after the other onto the same medium land in different stripes.
Each stripe of ``K`` data shares gets ``M`` parity chunks; any ``M`` of its ``K + M`` chunks can be rebuilt
from the others. See docs/bundle-format.md section 9 for the code itself.

The ``parity`` member of ``manifest.json`` is untrusted input like the rest of it: every count, name, size,
stripe and index is checked against the data chunks before anything uses it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from airgap.errors import InvalidInput
from airgap.model.bundle import MAX_CHUNKS, Chunk, ManifestError, check_chunk_name

CODE = "reed-solomon-zfec"  # names the code (the one zfec computes, section 9.2), not a library; bundles carry it
FIELD = "GF(2^8)"
MAX_SHARES = 256  # K + M: the code works over GF(2^8), so at most 256 distinct evaluation points
MAX_STRIPE_DATA = 16  # data chunks per stripe that writers use at most
MAX_PARITY = 240  # --parity N: at most this many parity chunks per stripe (K <= 16, K + M <= 256)
MAX_PERCENT = 1000
PARITY_NAME = "parity-{:06d}-{:03d}.bin"
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def parity_name(stripe: int, index: int) -> str:
    return PARITY_NAME.format(stripe, index)


@dataclass(frozen=True)
class ParitySpec:
    """What ``--parity`` asked for: ``count`` parity chunks per stripe, or ``percent`` of its data chunks
    (rounded up)."""

    count: int = 0
    percent: int = 0

    @classmethod
    def parse(cls, text: str) -> ParitySpec:
        """``"2"`` (two parity chunks per stripe) or ``"10%"`` (ceil(K * 10 / 100) per stripe of K)."""
        match = re.fullmatch(r"([0-9]{1,6}) *(%?)", text.strip())
        percent = bool(match and match.group(2))
        if match is None or not 1 <= int(match.group(1)) <= (MAX_PERCENT if percent else MAX_PARITY):
            raise InvalidInput(f"invalid --parity {text!r}",
                               hint=f"give the parity chunks per stripe (1 to {MAX_PARITY}) or a percentage of "
                                    f"its data chunks (1% to {MAX_PERCENT}%), e.g. --parity 2 or --parity 10%")
        value = int(match.group(1))
        return cls(percent=value) if percent else cls(count=value)

    def per_stripe(self, data: int) -> int:
        if self.percent:
            return max(1, -(-data * self.percent // 100))
        return self.count

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent else str(self.count)


@dataclass(frozen=True)
class StripeLayout:
    """``stripes`` (S) stripes of ``data`` (K) data shares and ``parity`` (M) parity chunks each."""

    stripes: int
    data: int
    parity: int

    @classmethod
    def plan(cls, chunks: int, spec: ParitySpec, max_data: int = MAX_STRIPE_DATA) -> StripeLayout:
        """The writers' rule: as few stripes as hold ``chunks`` data chunks at ``max_data`` per stripe, and
        the chunks spread evenly over them."""
        if chunks < 1:
            raise InvalidInput("a bundle without chunks has no parity")
        stripes = -(-chunks // max_data)
        data = -(-chunks // stripes)
        parity = spec.per_stripe(data)
        if data + parity > MAX_SHARES:
            raise InvalidInput(f"--parity {spec} gives {parity} parity chunks for {data} data chunks per stripe",
                               hint=f"data and parity chunks of a stripe must be at most {MAX_SHARES}")
        return cls(stripes, data, parity)

    def stripe_of(self, index: int) -> int:
        return index % self.stripes

    def share_of(self, index: int) -> int:
        """The data chunk's share number in its stripe (0 to K-1)."""
        return index // self.stripes

    def members(self, stripe: int, chunks: int) -> range:
        """The indexes of the data chunks of ``stripe``, in share order (shares past the end are all-zero)."""
        return range(stripe, chunks, self.stripes)


@dataclass(frozen=True)
class ParityChunk:
    name: str
    size: int
    sha256: str
    stripe: int
    index: int  # 0 to M-1; its share number in the stripe is K + index

    def as_chunk(self) -> Chunk:
        return Chunk(self.name, self.size, self.sha256)


@dataclass(frozen=True)
class StripeDamage:
    """The chunks of one stripe (data and parity) that are missing or damaged."""

    stripe: int
    bad: tuple[str, ...]
    limit: int  # M: at most this many can be rebuilt

    @property
    def repairable(self) -> bool:
        return len(self.bad) <= self.limit

    def describe(self) -> str:
        return (f"stripe {self.stripe} has {len(self.bad)} chunks missing or damaged ({', '.join(self.bad)}) but "
                f"parity rebuilds at most {self.limit} per stripe")


@dataclass(frozen=True)
class Parity:
    layout: StripeLayout
    chunks: tuple[ParityChunk, ...]  # stripe by stripe, each stripe's in index order

    def of_stripe(self, stripe: int) -> tuple[ParityChunk, ...]:
        m = self.layout.parity
        return self.chunks[stripe * m:(stripe + 1) * m]

    def stripe_size(self, stripe: int, data: Sequence[Chunk]) -> int:
        """The size of the stripe's parity chunks: that of its largest data chunk."""
        return max(data[i].size for i in self.layout.members(stripe, len(data)))

    @property
    def size(self) -> int:
        return sum(c.size for c in self.chunks)

    def stripe_of_name(self, name: str, data: Sequence[Chunk]) -> int | None:
        index = self._names(data).get(name)
        if index is None:
            return None
        return self.layout.stripe_of(index) if index >= 0 else self.chunks[-index - 1].stripe

    def _names(self, data: Sequence[Chunk]) -> dict[str, int]:
        """Data chunk names to their index, parity chunk names to ``-1 - position`` (cached)."""
        cache: dict[str, int] | None = self.__dict__.get("_name_cache")
        if cache is None:
            cache = {c.name: i for i, c in enumerate(data)}
            cache.update({c.name: -1 - n for n, c in enumerate(self.chunks)})
            object.__setattr__(self, "_name_cache", cache)
        return cache

    def damage(self, data: Sequence[Chunk], bad: Collection[str]) -> list[StripeDamage]:
        """Per stripe that has any, the missing or damaged chunks (data first, then parity) named in ``bad``."""
        out = []
        stripes = sorted({s for name in bad if (s := self.stripe_of_name(name, data)) is not None})
        for s in stripes:
            names = [data[i].name for i in self.layout.members(s, len(data)) if data[i].name in bad]
            names += [c.name for c in self.of_stripe(s) if c.name in bad]
            out.append(StripeDamage(s, tuple(names), self.layout.parity))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "code": CODE, "field": FIELD, "stripes": self.layout.stripes,
            "stripe_data_chunks": self.layout.data, "stripe_parity_chunks": self.layout.parity,
            "chunks": [{"name": c.name, "size": c.size, "sha256": c.sha256, "stripe": c.stripe, "index": c.index}
                       for c in self.chunks],
        }


def _int(obj: dict[str, Any], key: str, where: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ManifestError(f"manifest.json: {where}.{key} is missing, not a whole number or out of range")
    return value


def parse_parity(obj: Any, data: Sequence[Chunk]) -> Parity:
    """The ``parity`` member of manifest.json, checked against the bundle's data chunks ``data``."""
    if not isinstance(obj, dict):
        raise ManifestError("manifest.json: parity is not an object")
    if obj.get("code") != CODE or obj.get("field") != FIELD:
        raise ManifestError(f"manifest.json: parity uses a code this airgap does not know "
                            f"({str(obj.get('code'))[:40]!r} over {str(obj.get('field'))[:20]!r})",
                            hint="use a newer airgap to read it")
    if not data:
        raise ManifestError("manifest.json: parity for a bundle without chunks")
    stripes = _int(obj, "stripes", "parity", 1, len(data))
    k = _int(obj, "stripe_data_chunks", "parity", 1, MAX_SHARES - 1)
    m = _int(obj, "stripe_parity_chunks", "parity", 1, MAX_SHARES - k)
    if k != -(-len(data) // stripes):
        raise ManifestError(f"manifest.json: parity.stripe_data_chunks is {k}, but {len(data)} chunks in {stripes} "
                            f"stripes make {-(-len(data) // stripes)}")
    layout = StripeLayout(stripes, k, m)
    entries = obj.get("chunks")
    if not isinstance(entries, list) or len(entries) != stripes * m or len(entries) > MAX_CHUNKS:
        raise ManifestError(f"manifest.json: parity.chunks is not a list of {stripes} x {m} chunks")
    taken = {c.name for c in data} | {"manifest.json", "manifest.json.sig"}
    chunks: list[ParityChunk] = []
    sizes = [max(data[i].size for i in layout.members(s, len(data))) for s in range(stripes)]
    for n, c in enumerate(entries):
        where = f"parity.chunks[{n}]"
        if not isinstance(c, dict):
            raise ManifestError(f"manifest.json: {where} is not an object")
        name = check_chunk_name(c.get("name"))
        if name in taken:
            raise ManifestError(f"manifest.json: parity chunk name {name!r} is used twice or reserved")
        taken.add(name)
        sha = c.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise ManifestError(f"manifest.json: {where}.sha256 is not 64 lowercase hex digits")
        stripe, index = divmod(n, m)
        if _int(c, "stripe", where, 0, stripes - 1) != stripe or _int(c, "index", where, 0, m - 1) != index:
            raise ManifestError(f"manifest.json: {where} is out of order (stripe {stripe}, index {index} expected)")
        if _int(c, "size", where, 1, sizes[stripe]) != sizes[stripe]:
            raise ManifestError(f"manifest.json: {where}.size is not {sizes[stripe]}, the size of its stripe's "
                                "largest data chunk")
        chunks.append(ParityChunk(name, sizes[stripe], sha, stripe, index))
    return Parity(layout, tuple(chunks))
