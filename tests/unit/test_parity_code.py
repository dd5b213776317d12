"""Parity: the code (:mod:`airgap.bundle.rscode`) against an implementation of docs/bundle-format.md
section 9 written here, apart from it, in plain Python; the ``parity`` member of manifest.json as untrusted
input; encoding and rebuilding stripes on disk."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap.bundle import rscode
from airgap.bundle.files import BundleError
from airgap.bundle.parity import NotRepairable, Source, SourceCorrupt, Target, rebuild_stripe, write_parity
from airgap.errors import InvalidInput
from airgap.model.bundle import BundleManifest, Chunk, ManifestError
from airgap.model.parity import MAX_PARITY, MAX_SHARES, MAX_STRIPE_DATA, ParitySpec, StripeLayout
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


def vandermonde(k: int, m: int) -> list[list[int]]:
    return [[int(c == 0) for c in range(k)]] + [[EXP[(r - 1) * c % 255] for c in range(k)] for r in range(1, k + m)]


@functools.cache
def _generator(k: int, m: int) -> tuple[tuple[int, ...], ...]:
    v = vandermonde(k, m)
    return tuple(map(tuple, gf_matmul(v, gf_inverse(v[:k]))))


def generator(k: int, m: int) -> list[list[int]]:
    return [list(row) for row in _generator(k, m)]


def combine(rows: list[list[int]], shares: list[bytes]) -> list[bytes]:
    """Each row's combination of ``shares``, byte by byte."""
    return [bytes(functools.reduce(lambda acc, i: acc ^ gf_mul(row[i], shares[i][o]), range(len(shares)), 0)
                  for o in range(len(shares[0]))) for row in rows]


def encode(k: int, m: int, shares: list[bytes]) -> list[bytes]:
    return combine(generator(k, m)[k:], shares)


def rebuild(k: int, m: int, known: list[int], shares: list[bytes], wanted: list[int]) -> list[bytes]:
    """By the doc: invert the known rows of G, which gives the data shares; G then gives any share."""
    g = generator(k, m)
    data = combine(gf_inverse([g[n] for n in known]), shares)
    return combine([g[n] for n in wanted], data)


def test_worked_example_of_the_spec() -> None:
    g = generator(3, 2)
    assert g[:3] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert g[3:] == [[15, 8, 6], [45, 48, 28]]
    assert generator(4, 2)[4:] == [[119, 64, 56, 14], [199, 167, 13, 108]]
    assert encode(3, 2, [b"\x01", b"\x02", b"\x03"]) == [bytes([21]), bytes([105])]
    assert rscode.generator(3, 2).tolist() == g
    assert rscode.generator(4, 2)[4:].tolist() == [[119, 64, 56, 14], [199, 167, 13, 108]]
    assert [bytes(p) for p in rscode.encode(3, 2, [b"\x01", b"\x02", b"\x03"])] == [bytes([21]), bytes([105])]


@pytest.mark.parametrize(("k", "m", "size", "seed", "sha256"), [
    (16, 4, 1000, 1, "be0ebf6577ac2b868e4b97c7b8b296ca98585e187509c23a38bc410a6eee2012"),
    (5, 2, 777, 2, "089a3cd310ab19842b76ee4eb4f7f337713fd6e168a7ecbb6eae6616e4206db1"),
    (3, 13, 100, 3, "69342ada0b25478371dbdd7d1be76f62976ae5d00f05dc5502fbb07409463275"),
])
def test_parity_bytes_are_those_of_zfec(k: int, m: int, size: int, seed: int, sha256: str) -> None:
    """Pinned: the sha256 of the parity shares that zfec 1.6 (``zfec.Encoder(k, k + m)``, which bundles
    written before airgap had its own implementation used) computed for these data shares."""
    rng = random.Random(seed)
    data = [rng.randbytes(size) for _ in range(k)]
    parity = rscode.encode(k, m, data)
    assert hashlib.sha256(b"".join(bytes(p) for p in parity)).hexdigest() == sha256
    assert [bytes(p) for p in parity] == encode(k, m, data)


def test_field_tables() -> None:
    assert rscode.MUL.tolist() == [[gf_mul(a, b) for b in range(256)] for a in range(256)]
    assert rscode.EXP.tolist() == EXP
    assert all(gf_mul(a, int(rscode.INV[a])) == 1 for a in range(1, 256))


@pytest.mark.parametrize(("k", "m"), [(1, 1), (1, 3), (2, 2), (3, 2), (5, 3), (16, 2), (16, 4), (16, 16), (13, 7),
                                      (17, 16), (40, 20), (MAX_STRIPE_DATA, MAX_PARITY), (1, MAX_SHARES - 1)])
def test_generator_is_the_documented_one(k: int, m: int) -> None:
    assert rscode.generator(k, m).tolist() == generator(k, m)


@pytest.mark.parametrize(("k", "m"), [(MAX_SHARES - 1, 1), (128, 128), (200, 56)])
def test_generator_for_the_largest_stripes(k: int, m: int) -> None:
    """G · T = V (T the top square of V), checked on some rows: the reference inversion is too slow here."""
    g = rscode.generator(k, m)
    v = vandermonde(k, m)
    assert g.shape == (k + m, k) and (g[:k] == np.eye(k, dtype=np.uint8)).all()
    for r in [0, k - 1, k, k + m - 1, *random.Random(k).sample(range(k + m), 3)]:
        row = g[r].tolist()
        assert [functools.reduce(lambda acc, i: acc ^ gf_mul(row[i], v[i][c]), range(k), 0)  # noqa: B023
                for c in range(k)] == v[r], r
    rng = random.Random(m)
    data = [rng.randbytes(5) for _ in range(k)]
    every = data + [bytes(p) for p in rscode.encode(k, m, data)]
    assert [bytes(p) for p in rscode.encode(k, m, data, [k + m - 1])] == combine([g[k + m - 1].tolist()], data)
    for _ in range(3):
        known = rng.sample(range(k + m), k)
        assert [bytes(d) for d in rscode.decode(k, m, [every[n] for n in known], known)] == data


def test_any_k_shares_rebuild_the_stripe() -> None:
    k, m = 4, 3
    rng = random.Random(7)
    shares = [bytes(rng.randrange(256) for _ in range(16)) for _ in range(k)]
    every = shares + encode(k, m, shares)
    for chosen in itertools.combinations(range(k + m), k):
        assert rebuild(k, m, list(chosen), [every[n] for n in chosen], list(range(k))) == shares, chosen
        assert [bytes(d) for d in rscode.decode(k, m, [every[n] for n in chosen], chosen)] == shares, chosen
        wanted = [n for n in range(k + m) if n not in chosen]
        coder = rscode.Combiner(rscode.recovery_matrix(k, m, chosen, wanted))
        assert [bytes(x) for x in coder([every[n] for n in chosen])] == [every[n] for n in wanted], chosen


def _stripe(k: int, m: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    data = [rng.randbytes(size) for _ in range(k)]
    return data + encode(k, m, data)


@given(k=st.integers(1, 24), m=st.integers(1, 16), size=st.sampled_from([0, 1, 2, 3, 7, 8, 9, 31, 64, 100]),
       step=st.sampled_from([1, 2, 3, 8, 13, 64, rscode.STEP]), seed=st.integers(0, 2**32), data=st.data())
@settings(max_examples=300, deadline=None)
def test_rscode_computes_the_documented_code(k: int, m: int, size: int, step: int, seed: int, data: Any) -> None:
    """Random stripes, block sizes, erasures and wanted shares: rscode against the reference, including
    blocks processed in several slices (``step``) and matrices of more than 8 rows (several table groups)."""
    every = _stripe(k, m, size, seed)
    assert [bytes(p) for p in rscode.encode(k, m, every[:k])] == every[k:]
    known = data.draw(st.permutations(range(k + m)))[:k]
    wanted = data.draw(st.lists(st.integers(0, k + m - 1), max_size=20))
    coder = rscode.Combiner(rscode.recovery_matrix(k, m, known, wanted), step=step)
    shares = [every[n] for n in known]
    rebuilt = [bytes(x) for x in coder(shares)]
    assert rebuilt == [every[n] for n in wanted]
    assert rebuilt == rebuild(k, m, known, shares, wanted)
    assert [bytes(d) for d in rscode.decode(k, m, shares, known)] == every[:k]
    # memoryviews and arrays work as well as bytes, and a Combiner can be used again (on other lengths)
    assert [bytes(x) for x in coder([memoryview(s) for s in shares])] == rebuilt
    assert [bytes(x) for x in coder([np.frombuffer(s[:size // 2], np.uint8) for s in shares])] == \
        [r[:size // 2] for r in rebuilt]


@pytest.mark.parametrize(("k", "m"), [(1, 1), (1, 2), (1, 16), (2, 16), (16, 1), (16, 2), (16, 16)])
def test_every_loss_at_the_edges_is_rebuilt(k: int, m: int) -> None:
    """K = 1 (each parity share is a copy), K = 16 (writers' largest stripes), M up to 16: losses of 1 to M
    shares, the stripe rebuilt from K of the others (data shares first, as rebuild_stripe reads them)."""
    every = _stripe(k, m, 37, k * 100 + m)
    rng = random.Random(k + m)
    for _ in range(40):
        lost = sorted(rng.sample(range(k + m), rng.randint(1, m)))
        known = [n for n in range(k + m) if n not in lost][:k]
        coder = rscode.Combiner(rscode.recovery_matrix(k, m, known, lost), step=rng.choice([5, rscode.STEP]))
        assert [bytes(x) for x in coder([every[n] for n in known])] == [every[n] for n in lost], lost


@pytest.mark.parametrize(("k", "m"), [(1, 2), (5, 2), (16, 2), (16, 9), (MAX_STRIPE_DATA, 16)])
def test_long_blocks_are_coded_by_slices(k: int, m: int) -> None:
    """Blocks longer than a slice: the code is byte-wise, so coding the pieces separately gives the same."""
    rng = random.Random(k * m)
    size = 3 * rscode.STEP + 12345
    data = [rng.randbytes(size) for _ in range(k)]
    whole = [bytes(p) for p in rscode.encode(k, m, data)]
    cuts = [0, 1, rscode.STEP - 1, rscode.STEP + 17, 2 * rscode.STEP, size]
    pieces = [rscode.encode(k, m, [d[a:b] for d in data]) for a, b in itertools.pairwise(cuts)]
    assert whole == [b"".join(bytes(p[j]) for p in pieces) for j in range(m)]
    every = data + whole
    known = rng.sample(range(k + m), k)
    assert [bytes(d) for d in rscode.decode(k, m, [every[n] for n in known], known)] == data
    sample = [every[n][:200] for n in range(k + m)]
    assert encode(k, m, sample[:k]) == sample[k:]


def test_rscode_refuses_wrong_inputs() -> None:
    with pytest.raises(ValueError, match="K \\+ M <= 256"):
        rscode.generator(200, 57)
    with pytest.raises(ValueError, match="K >= 1"):
        rscode.generator(0, 2)
    with pytest.raises(ValueError, match="distinct"):
        rscode.recovery_matrix(3, 2, [0, 0, 4], [1])
    with pytest.raises(ValueError, match="need 3"):
        rscode.recovery_matrix(3, 2, [0, 4], [1])
    with pytest.raises(ValueError, match="share numbers go from 0 to 4"):
        rscode.recovery_matrix(3, 2, [0, 1, 5], [2])
    with pytest.raises(ValueError, match="share numbers go from 0 to 4"):
        rscode.recovery_matrix(3, 2, [0, 1, 2], [-1])
    with pytest.raises(ValueError, match="different lengths"):
        rscode.encode(2, 1, [b"ab", b"abc"])
    with pytest.raises(ValueError, match="2 needed"):
        rscode.encode(2, 1, [b"ab"])
    with pytest.raises(ValueError, match="need 3 distinct shares"):
        rscode.decode(3, 2, [b"a", b"b", b"c", b"d"], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="need 3 distinct shares"):
        rscode.decode(3, 2, [b"a", b"b", b"c"], [0, 0, 1])
    with pytest.raises(ValueError, match="singular"):
        rscode.inverse(np.array([[1, 2], [2, 4]], np.uint8))
    assert rscode.Combiner(rscode.recovery_matrix(3, 2, [0, 1, 2], []))([b"a", b"b", b"c"]) == []


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
