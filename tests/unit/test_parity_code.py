"""Parity: the code against an implementation of docs/bundle-format.md section 9 written here, apart from zfec;
the ``parity`` member of manifest.json as untrusted input; encoding and rebuilding stripes on disk."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import zfec  # type: ignore[import-untyped, unused-ignore]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap.bundle.files import BundleError
from airgap.bundle.parity import NotRepairable, Source, SourceCorrupt, Target, rebuild_stripe, write_parity
from airgap.errors import InvalidInput
from airgap.model.bundle import BundleManifest, Chunk, ManifestError
from airgap.model.parity import ParitySpec, StripeLayout
from airgap.repair import stripe_shares
from tests.unit.test_bundle_model import build, noise

# --------------------------------------------------------------------------- section 9.2, written from the doc

EXP = [0] * 510
LOG = [0] * 256
_x = 1
for _e in range(255):
    EXP[_e], LOG[_x] = _x, _e
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
EXP[255:] = EXP[:255]


def gf_mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def gf_inverse(matrix: list[list[int]]) -> list[list[int]]:
    """Gauss-Jordan elimination over GF(2^8)."""
    k = len(matrix)
    a = [row[:] + [int(i == j) for j in range(k)] for i, row in enumerate(matrix)]
    for col in range(k):
        pivot = next(r for r in range(col, k) if a[r][col])
        a[col], a[pivot] = a[pivot], a[col]
        scale = EXP[255 - LOG[a[col][col]]]
        a[col] = [gf_mul(scale, v) for v in a[col]]
        for r in range(k):
            if r != col and a[r][col]:
                f = a[r][col]
                a[r] = [v ^ gf_mul(f, w) for v, w in zip(a[r], a[col], strict=True)]
    return [row[k:] for row in a]


def gf_matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    return [[functools.reduce(lambda acc, i: acc ^ gf_mul(row[i], b[i][c]), range(len(b)), 0)
             for c in range(len(b[0]))] for row in a]


def generator(k: int, m: int) -> list[list[int]]:
    vandermonde = [[int(c == 0) for c in range(k)]] + [[EXP[(r - 1) * c % 255] for c in range(k)]
                                                       for r in range(1, k + m)]
    return gf_matmul(vandermonde, gf_inverse(vandermonde[:k]))


def encode(k: int, m: int, shares: list[bytes]) -> list[bytes]:
    g = generator(k, m)
    return [bytes(functools.reduce(lambda acc, i: acc ^ gf_mul(g[k + j][i], shares[i][o]), range(k), 0)
                  for o in range(len(shares[0]))) for j in range(m)]


def test_worked_example_of_the_spec() -> None:
    g = generator(3, 2)
    assert g[:3] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert g[3:] == [[15, 8, 6], [45, 48, 28]]
    assert generator(4, 2)[4:] == [[119, 64, 56, 14], [199, 167, 13, 108]]
    assert encode(3, 2, [b"\x01", b"\x02", b"\x03"]) == [bytes([21]), bytes([105])]
    assert zfec.Encoder(3, 5).encode([b"\x01", b"\x02", b"\x03"])[3:] == [bytes([21]), bytes([105])]


@pytest.mark.parametrize(("k", "m"), [(1, 1), (1, 3), (2, 2), (5, 3), (16, 2), (16, 4), (13, 7), (40, 20)])
def test_zfec_computes_the_documented_code(k: int, m: int) -> None:
    rng = random.Random(k * 1000 + m)
    shares = [bytes(rng.randrange(256) for _ in range(24)) for _ in range(k)]
    assert zfec.Encoder(k, k + m).encode(shares)[k:] == encode(k, m, shares)


def test_any_k_shares_rebuild_the_stripe() -> None:
    k, m = 4, 3
    rng = random.Random(7)
    shares = [bytes(rng.randrange(256) for _ in range(16)) for _ in range(k)]
    every = shares + encode(k, m, shares)
    g = generator(k, m)
    for chosen in itertools.combinations(range(k + m), k):
        # by the doc: invert the chosen rows of G
        inv = gf_inverse([g[n] for n in chosen])
        rebuilt = [bytes(functools.reduce(lambda acc, i: acc ^ gf_mul(inv[d][i], every[chosen[i]][o]), range(k), 0)
                         for o in range(16)) for d in range(k)]
        assert rebuilt == shares, chosen
        assert zfec.Decoder(k, k + m).decode([every[n] for n in chosen], list(chosen)) == shares


# --------------------------------------------------------------------------- options and layout


@pytest.mark.parametrize(("text", "spec"), [("2", ParitySpec(count=2)), (" 10% ", ParitySpec(percent=10)),
                                            ("240", ParitySpec(count=240)), ("1000%", ParitySpec(percent=1000))])
def test_parity_option(text: str, spec: ParitySpec) -> None:
    assert ParitySpec.parse(text) == spec


@pytest.mark.parametrize("text", ["0", "-1", "241", "2.5", "", "%", "10 %%", "x", "0%", "1001%", "1e3", "٣"])
def test_bad_parity_option(text: str) -> None:
    with pytest.raises(InvalidInput, match="--parity"):
        ParitySpec.parse(text)


@pytest.mark.parametrize(("chunks", "spec", "layout"), [
    (1, "2", StripeLayout(1, 1, 2)),
    (3, "2", StripeLayout(1, 3, 2)),
    (16, "10%", StripeLayout(1, 16, 2)),
    (17, "2", StripeLayout(2, 9, 2)),
    (100, "25%", StripeLayout(7, 15, 4)),
    (1000, "1", StripeLayout(63, 16, 1)),
])
def test_stripe_layout(chunks: int, spec: str, layout: StripeLayout) -> None:
    got = StripeLayout.plan(chunks, ParitySpec.parse(spec))
    assert got == layout
    members = [sorted(got.members(s, chunks)) for s in range(got.stripes)]
    assert sorted(i for ms in members for i in ms) == list(range(chunks))  # every chunk in one stripe
    assert all(len(ms) in (got.data, got.data - 1) for ms in members)
    assert all(got.stripe_of(i) == s and ms.index(i) == got.share_of(i) for s, ms in enumerate(members) for i in ms)


# --------------------------------------------------------------------------- manifest


@pytest.fixture
def with_parity(tmp_path: Path) -> tuple[BundleManifest, Path]:
    """A bundle of 10 chunks of 8 KiB (the last shorter) in 3 stripes of up to 4, 2 parity chunks each."""
    m, d = build(tmp_path, [noise(50000, 1), noise(30000, 2)], chunk_size=8192)
    parity = write_parity(d, m.chunks, StripeLayout.plan(len(m.chunks), ParitySpec(count=2), max_data=4), block=3000)
    return BundleManifest.parse(dataclasses.replace(m, parity=parity).to_json()), d


def test_manifest_round_trip(with_parity: tuple[BundleManifest, Path]) -> None:
    m, _ = with_parity
    assert m.parity is not None and m.parity.layout == StripeLayout(3, 4, 2)
    assert [c.name for c in m.parity.chunks] == [f"parity-00000{s}-00{j}.bin" for s in range(3) for j in range(2)]
    assert [c.size for c in m.parity.chunks] == [8192] * 6
    assert BundleManifest.parse(m.to_json()) == m
    doc = json.loads(m.to_json())
    assert list(doc).index("parity") == list(doc).index("chunks") + 1
    without = dataclasses.replace(m, parity=None).to_json()
    assert b'"parity"' not in without and BundleManifest.parse(without).parity is None


def test_damage_per_stripe(with_parity: tuple[BundleManifest, Path]) -> None:
    m, _ = with_parity
    assert m.parity is not None
    d = m.parity.damage(m.chunks, {"chunk-000000.bin", "parity-000000-001.bin", "chunk-000003.bin",
                                   "chunk-000001.bin", "unknown.bin"})
    assert [(x.stripe, x.bad, x.repairable) for x in d] == [
        (0, ("chunk-000000.bin", "chunk-000003.bin", "parity-000000-001.bin"), False),
        (1, ("chunk-000001.bin",), True)]
    assert "stripe 0 has 3 chunks missing or damaged" in d[0].describe() and "at most 2 per stripe" in d[0].describe()


def _mutate(doc: dict[str, Any], path: str, value: Any) -> None:
    *keys, last = path.split(".")
    obj: Any = doc["parity"]
    for key in keys:
        obj = obj[int(key)] if key.isdigit() else obj[key]
    if value is KeyError:
        del obj[int(last) if last.isdigit() else last]
    else:
        obj[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(("path", "value"), [
    ("code", "reed-solomon-other"), ("field", "GF(2^16)"), ("code", KeyError), ("stripes", 0), ("stripes", 11),
    ("stripes", 2), ("stripes", True), ("stripes", "3"), ("stripe_data_chunks", 5), ("stripe_data_chunks", 0),
    ("stripe_parity_chunks", 0), ("stripe_parity_chunks", 253), ("stripe_parity_chunks", 3),
    ("stripe_parity_chunks", 1), ("stripe_parity_chunks", -2), ("stripe_parity_chunks", 2.0),
    ("chunks", "nope"), ("chunks", []), ("chunks", None), ("chunks.0", "parity-000000-000.bin"),
    ("chunks.0.name", "../parity.bin"), ("chunks.0.name", "a/b.bin"), ("chunks.0.name", ".hidden"),
    ("chunks.0.name", ".."), ("chunks.0.name", "x\x00.bin"), ("chunks.0.name", "/etc/passwd"),
    ("chunks.0.name", "chunk-000004.bin"), ("chunks.0.name", "manifest.json"), ("chunks.0.name", 7),
    ("chunks.1.name", "parity-000000-000.bin"), ("chunks.0.name", "a" * 200),
    ("chunks.0.sha256", "A" * 64), ("chunks.0.sha256", "0" * 63), ("chunks.0.sha256", None),
    ("chunks.0.size", 8191), ("chunks.0.size", 8193), ("chunks.0.size", 0), ("chunks.0.size", 1 << 60),
    ("chunks.0.stripe", 1), ("chunks.0.stripe", 3), ("chunks.0.stripe", -1), ("chunks.0.index", 1),
    ("chunks.5.index", 2), ("chunks.5.stripe", KeyError), ("chunks.2.stripe", False),
])
def test_hostile_parity_refused(with_parity: tuple[BundleManifest, Path], path: str, value: Any) -> None:
    doc = json.loads(with_parity[0].to_json())
    _mutate(doc, path, value)
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("edit", [
    lambda p: p["chunks"].append(dict(p["chunks"][-1], name="parity-extra.bin")),
    lambda p: p["chunks"].pop(),
    lambda p: p["chunks"].reverse(),
    lambda p: p.update(chunks=p["chunks"] * 3),
    lambda p: p["chunks"].__setitem__(2, p["chunks"][3]),
])
def test_wrong_parity_lists_refused(with_parity: tuple[BundleManifest, Path], edit: Any) -> None:
    doc = json.loads(with_parity[0].to_json())
    edit(doc["parity"])
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("value", [None, [], "x", 3, {}])
def test_parity_must_be_an_object_when_present(with_parity: tuple[BundleManifest, Path], value: Any) -> None:
    doc = json.loads(with_parity[0].to_json())
    doc["parity"] = value
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


# --------------------------------------------------------------------------- stripes on disk


def test_every_loss_of_up_to_m_chunks_is_rebuilt(with_parity: tuple[BundleManifest, Path], tmp_path: Path) -> None:
    m, d = with_parity
    parity = m.parity
    assert parity is not None
    k, n_parity = parity.layout.data, parity.layout.parity
    original = {c.name: (d / c.name).read_bytes() for c in m.chunks + tuple(c.as_chunk() for c in parity.chunks)}
    out = tmp_path / "out"
    out.mkdir()
    for stripe in range(parity.layout.stripes):
        shares = stripe_shares(m, parity, stripe)
        count = len(parity.layout.members(stripe, len(m.chunks)))
        size = parity.stripe_size(stripe, m.chunks)
        for lost in [c for r in range(1, n_parity + 1) for c in itertools.combinations(sorted(shares), r)]:
            sources = {n: Source(d / c.name, c) for n, c in shares.items() if n not in lost}
            targets = {n: Target(out / shares[n].name, shares[n]) for n in lost}
            rebuild_stripe(k, n_parity, count, size, sources, targets, block=1000)
            for n in lost:
                assert (out / shares[n].name).read_bytes() == original[shares[n].name], (stripe, lost)
                (out / shares[n].name).unlink()
        lost3 = tuple(sorted(shares))[:3]
        with pytest.raises(NotRepairable):
            rebuild_stripe(k, n_parity, count, size, {n: Source(d / c.name, c) for n, c in shares.items()
                                                      if n not in lost3},
                           {n: Target(out / shares[n].name, shares[n]) for n in lost3})
    assert list(out.iterdir()) == []


def test_a_damaged_source_is_named_and_nothing_is_written(with_parity: tuple[BundleManifest, Path],
                                                          tmp_path: Path) -> None:
    m, d = with_parity
    assert m.parity is not None
    shares = stripe_shares(m, m.parity, 0)
    bad = d / shares[1].name
    data = bytearray(bad.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SourceCorrupt) as info:
        rebuild_stripe(4, 2, 4, 8192, {n: Source(d / c.name, c) for n, c in shares.items() if n != 0},
                       {0: Target(out / shares[0].name, shares[0])})
    assert info.value.shares == [1]
    assert list(out.iterdir()) == []


def test_a_rebuilt_chunk_that_does_not_match_the_manifest_is_not_written(
        with_parity: tuple[BundleManifest, Path], tmp_path: Path) -> None:
    m, d = with_parity
    assert m.parity is not None
    shares = stripe_shares(m, m.parity, 0)
    wrong = Chunk(shares[0].name, shares[0].size, "0" * 64)  # what a manifest inconsistent with its parity says
    out = tmp_path / "out"
    out.mkdir()
    (out / wrong.name).write_bytes(b"the old, damaged copy")
    with pytest.raises(BundleError, match="does not match its sha256"):
        rebuild_stripe(4, 2, 4, 8192, {n: Source(d / c.name, c) for n, c in shares.items() if n != 0},
                       {0: Target(out / wrong.name, wrong)})
    assert [p.name for p in out.iterdir()] == [wrong.name]  # no temporary file left, the old copy untouched
    assert (out / wrong.name).read_bytes() == b"the old, damaged copy"


def test_a_data_chunk_changed_during_export_is_refused(tmp_path: Path) -> None:
    m, d = build(tmp_path, [noise(20000, 3)], chunk_size=8192)
    changed = copy.copy(list(m.chunks))
    changed[1] = Chunk(changed[1].name, changed[1].size, "f" * 64)
    with pytest.raises(BundleError, match=f"{changed[1].name} in .* changed while its parity was computed"):
        write_parity(d, changed, StripeLayout.plan(len(changed), ParitySpec(count=1)))
    assert not list(d.glob("*parity*"))


def test_single_short_chunk_gets_parity_of_its_size(tmp_path: Path) -> None:
    m, d = build(tmp_path, [b"tiny"], chunk_size=1 << 20)
    assert len(m.chunks) == 1 and m.chunks[0].size < 4096
    parity = write_parity(d, m.chunks, StripeLayout.plan(1, ParitySpec(count=2)))
    assert [c.size for c in parity.chunks] == [m.chunks[0].size] * 2
    # K = 1: each parity chunk is a copy of the data chunk
    assert all((d / c.name).read_bytes() == (d / m.chunks[0].name).read_bytes() for c in parity.chunks)


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_parity_never_crashes_the_parser(with_parity: tuple[BundleManifest, Path], data: Any) -> None:
    """Random byte edits inside the parity member: parsed, or refused with ManifestError, never anything else."""
    raw = bytearray(with_parity[0].to_json())
    start = raw.index(b'"parity"')
    end = raw.index(b'"images"')
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(start, end - 1))] = data.draw(st.sampled_from(b'0123456789abcdef",:{}[]-. /x'))
    with contextlib.suppress(ManifestError):
        m = BundleManifest.parse(bytes(raw))
        if m.parity is not None:  # (an edit of the key itself leaves an unknown member, an extension)
            assert len(m.parity.chunks) == m.parity.layout.stripes * m.parity.layout.parity
