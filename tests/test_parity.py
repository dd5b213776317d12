"""Parity chunks (issue 9), against the real registry: ``export --parity``, ``verify`` saying what can be rebuilt,
``repair``, and ``import`` rebuilding what it needs on the fly.

* The demo bundle (3 data chunks of 1 MiB, ``--parity 2``: one stripe, 2 parity chunks): every pair of its 5
  chunks deleted or damaged is rebuilt byte for byte; three gone is refused, naming them and the limit.
* A larger bundle (22 data chunks: 2 interleaved stripes of 11): seeded random pairs per stripe plus a corrupt
  chunk, repaired; and imported with the original digests.
* A rebuilt chunk is never written under its name unless its sha256 matches the manifest.

Seeds are printed; ``AIRGAP_PARITY_SEED=N`` replays a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FaultProxyFactory, RunAirgap
from harness import RegistryServer
from test_import_faults import (
    EXIT_BUNDLE,
    Bundle,
    _make_bundle,
    assert_complete,
    assert_error_line,
    flip_byte,
    import_args,
    inventory,
    resign,
)

from airgap.bundle.files import BundleError
from airgap.model.bundle import BundleManifest
from airgap.repair import repair_bundle
from airgap.signing import load_public_key
from scripts.demo_images import DEMO_IMAGE_NAMES

MiB = 1024 * 1024
EXIT_DAMAGED = 7


def _seed() -> int:
    seed = int(os.environ.get("AIRGAP_PARITY_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"parity seed: {seed} (rerun with AIRGAP_PARITY_SEED={seed})")
    return seed


@pytest.fixture(scope="module")
def parity_2m(tmp_path_factory: pytest.TempPathFactory, demo_layout: tuple[Path, list[Any]]) -> Iterator[Bundle]:
    """The demo images (2 MiB large layer) with --parity 2: chunks 0 to 2 and parity-000000-000/001."""
    yield from _make_bundle(tmp_path_factory.mktemp("parity-2m"), demo_layout[0], "--parity", "2")


@pytest.fixture(scope="module")
def parity_21m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    """The demo images with a 21 MiB large layer and --parity 2: 22 data chunks in 2 stripes of 11."""
    from scripts.demo_images import build_demo_layout

    workdir = tmp_path_factory.mktemp("parity-21m")
    build_demo_layout(workdir / "layout", large_layer_size=21 * MiB)
    yield from _make_bundle(workdir, workdir / "layout", "--parity", "2")


@pytest.fixture
def bundle(parity_2m: Bundle, tmp_path: Path) -> Bundle:
    return parity_2m.copy_to(tmp_path / "bundle")


def every_name(m: BundleManifest) -> list[str]:
    assert m.parity is not None
    return [c.name for c in m.chunks] + [c.name for c in m.parity.chunks]


def snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "flip":
        flip_byte(path, path.stat().st_size // 3)
    else:
        os.truncate(path, path.stat().st_size // 2)


# --------------------------------------------------------------------------- export, verify, inspect


def test_export_writes_parity_listed_in_the_signed_manifest(parity_2m: Bundle, run_airgap: RunAirgap) -> None:
    m = parity_2m.manifest
    assert m.parity is not None
    assert (m.parity.layout.stripes, m.parity.layout.data, m.parity.layout.parity) == (1, 3, 2)
    assert [c.name for c in m.parity.chunks] == ["parity-000000-000.bin", "parity-000000-001.bin"]
    for c in m.parity.chunks:
        p = parity_2m.dir / c.name
        assert p.stat().st_size == c.size == MiB == m.chunk_size
        assert hashlib.sha256(p.read_bytes()).hexdigest() == c.sha256
    assert sorted(p.name for p in parity_2m.dir.iterdir()) == sorted(every_name(m) + ["manifest.json",
                                                                                     "manifest.json.sig"])
    r = run_airgap("verify", str(parity_2m.dir), "--pubkey", str(parity_2m.pub))
    assert r.returncode == 0 and "OK" in r.stdout and r.stderr == "", r.output
    doc = json.loads(run_airgap("inspect", str(parity_2m.dir), "--json").stdout)
    assert doc["parity"]["stripe_parity_chunks"] == 2 and doc["parity"]["size"] == 2 * MiB
    assert [c["name"] for c in doc["parity"]["chunks"]] == [c.name for c in m.parity.chunks]
    assert "parity: 2 chunks (2 MiB), 2 for each of 1 stripe" in run_airgap("inspect", str(parity_2m.dir)).stdout
    dry = run_airgap("export", parity_2m.source.ref("demo/large:1.0"), "--output", "/nonexistent", "--dry-run",
                     "--chunk-size", "1MiB", "--parity", "10%")
    assert dry.returncode == 0 and "plus 1 parity chunk" in dry.stdout, dry.output
    dry = run_airgap("export", parity_2m.source.ref("demo/large:1.0"), "--output", "/nonexistent", "--dry-run",
                     "--chunk-size", "cd", "--parity", "1")
    assert dry.returncode == 0 and "1 chunk (1 cd disc)" in dry.stdout, dry.output
    assert "plus 1 parity chunk (1 more cd disc)" in dry.stdout, dry.output  # parity goes on other media


def test_verify_says_what_parity_can_rebuild(bundle: Bundle, run_airgap: RunAirgap) -> None:
    damage(bundle.chunk(1), "delete")
    damage(bundle.dir / "parity-000000-001.bin", "flip")
    r = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert r.returncode == EXIT_DAMAGED, r.output
    lines = r.stderr.splitlines()
    large = bundle.image("demo/large:1.0").reference
    assert lines[0] == f"chunk-000001.bin: missing; affects {large}; stripe 0, can be rebuilt"
    assert lines[1] == "parity-000000-001.bin: corrupt (sha256 differs); parity of stripe 0, can be rebuilt"
    assert lines[2].startswith(f"airgap: error: bundle {bundle.manifest.bundle_id}: 2 of 5 chunks missing or "
                               "damaged; parity can rebuild every one of them: run `airgap repair ")
    assert len(lines) == 3

    damage(bundle.chunk(0), "truncate")
    r = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert r.returncode == EXIT_DAMAGED, r.output
    assert "chunk-000000.bin: truncated" in r.stderr and r.stderr.count("cannot be rebuilt") == 3
    assert "3 of 5 chunks missing or damaged; stripe 0 has 3 chunks missing or damaged (chunk-000000.bin, " \
           "chunk-000001.bin, parity-000000-001.bin) but parity rebuilds at most 2 per stripe" \
           in r.stderr.splitlines()[-1]


# --------------------------------------------------------------------------- repair


def test_repair_every_pair_of_lost_chunks(parity_2m: Bundle, tmp_path: Path) -> None:
    """Every pair of the 5 chunks (data and parity), each deleted, flipped or truncated: rebuilt byte for byte."""
    work = parity_2m.copy_to(tmp_path / "bundle")
    pristine = snapshot(work.dir)
    trusted = [load_public_key(work.pub)]
    kinds = itertools.cycle(["delete", "flip", "truncate"])
    pairs = list(itertools.combinations(every_name(work.manifest), 2))
    assert len(pairs) == 10
    for a, b in pairs:
        ways = {a: next(kinds), b: next(kinds)}
        for name, how in ways.items():
            damage(work.dir / name, how)
        result = repair_bundle(work.dir, trusted)
        assert sorted(r.name for r in result.rebuilt) == sorted(ways), ways
        assert not result.unrepairable and result.error() is None
        assert snapshot(work.dir) == pristine, ways
    assert repair_bundle(work.dir, trusted).problems == []  # nothing left to do


def test_repair_cli_into_another_directory(bundle: Bundle, run_airgap: RunAirgap, tmp_path: Path) -> None:
    before = snapshot(bundle.dir)
    damage(bundle.chunk(0), "flip")
    damage(bundle.dir / "parity-000000-000.bin", "delete")
    damaged = snapshot(bundle.dir)
    out = tmp_path / "rebuilt"
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub), "--output", str(out))
    assert r.returncode == 0, r.output
    assert f"chunk-000000.bin: was corrupt; rebuilt into {out / 'chunk-000000.bin'}" in r.stdout
    assert "parity-000000-000.bin: was missing" in r.stdout
    assert "2 chunks rebuilt from parity" in r.stdout and f"pass --media {out}" in r.stdout
    assert snapshot(bundle.dir) == damaged  # the bundle directory was not touched
    assert snapshot(out) == {n: before[n] for n in ("chunk-000000.bin", "parity-000000-000.bin")}
    # in place: the damaged chunk is replaced, the intact ones are left alone
    mtimes = {p.name: p.stat().st_mtime_ns for p in bundle.dir.iterdir()}
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert r.returncode == 0, r.output
    assert snapshot(bundle.dir) == before
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in bundle.dir.iterdir()
               if p.name not in ("chunk-000000.bin", "parity-000000-000.bin"))
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert r.returncode == 0 and "every chunk is intact; nothing to repair" in r.stdout, r.output
    assert run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub)).returncode == 0


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[bool]:
    """``path`` bind-mounted read-only onto itself (True), as a DVD or a read-only USB mount is; False when
    mounting is not allowed here (root can write through any mode bits, so chmod cannot stand in)."""
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    try:
        if mounted:
            mounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True
                                     ).returncode == 0
        yield mounted and not os.access(path, os.W_OK)
    finally:
        if mounted or path.is_mount():
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_media_are_repaired_into_another_directory(bundle: Bundle, registry: RegistryServer,
                                                             run_airgap: RunAirgap, tmp_path: Path) -> None:
    """The runbook for a damaged DVD: verify says to rebuild with --output; repair in place says the same, in one
    line; the rebuilt copy then stands in for the damaged one in verify and import (the media never written)."""
    damage(bundle.chunk(1), "flip")
    damaged = snapshot(bundle.dir)
    out = tmp_path / "rebuilt"
    with read_only(bundle.dir) as ro:
        if not ro:
            pytest.skip("a read-only bind mount needs root")
        v = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub))
        assert v.returncode == 7 and "--output DIR" in v.stderr and "--media DIR" in v.stderr, v.output
        r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.output
        assert f"cannot write rebuilt chunks into {bundle.dir}: it is read-only" in r.stderr and "--output" in r.stderr
        r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub), "--output", str(out))
        assert r.returncode == 0, r.output
        v = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub), "--media", str(out))
        assert v.returncode == 0 and "the good copy" in v.stderr, v.output
        r = run_airgap("import", str(bundle.dir), "--media", str(out), "--to", registry.host, "--pubkey",
                       str(bundle.pub), "--state-dir", str(tmp_path / "state"), "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["repaired_chunks"] == [], r.output
    assert snapshot(bundle.dir) == damaged


def test_three_lost_chunks_are_named_with_the_limit(bundle: Bundle, run_airgap: RunAirgap) -> None:
    damage(bundle.chunk(0), "delete")
    damage(bundle.chunk(2), "flip")
    damage(bundle.dir / "parity-000000-001.bin", "delete")
    before = snapshot(bundle.dir)
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert_error_line(r, "stripe 0 has 3 chunks missing or damaged (chunk-000000.bin, chunk-000002.bin, "
                         "parity-000000-001.bin)", "parity rebuilds at most 2 per stripe", exit_code=EXIT_DAMAGED)
    assert snapshot(bundle.dir) == before and not [p for p in bundle.dir.iterdir() if p.name.startswith(".")]


def test_repair_checks_the_signature_first(bundle: Bundle, run_airgap: RunAirgap) -> None:
    damage(bundle.chunk(1), "delete")
    manifest = bundle.dir / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"stripe_parity_chunks": 2', b'"stripe_parity_chunks": 1'))
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert_error_line(r, "does not match its signature", exit_code=EXIT_BUNDLE)
    assert not bundle.chunk(1).exists()


def test_a_rebuilt_chunk_is_never_written_unless_its_sha256_matches(bundle: Bundle, run_airgap: RunAirgap,
                                                                    registry: RegistryServer, tmp_path: Path) -> None:
    """A signed manifest whose parity chunk matches its listed sha256 but not the data (a bug, or a hostile
    exporter): what it rebuilds is refused, the chunk is not written, and import commits nothing of it."""
    bad = bundle.dir / "parity-000000-000.bin"
    flip_byte(bad, 1000)
    sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    resign(bundle, lambda doc: doc["parity"]["chunks"][0].update(sha256=sha))
    damage(bundle.chunk(1), "delete")
    r = run_airgap("repair", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert_error_line(r, "rebuilt chunk-000001.bin does not match its sha256 in the manifest; it was not written",
                      exit_code=EXIT_BUNDLE)
    assert not bundle.chunk(1).exists() and not [p for p in bundle.dir.iterdir() if p.name.startswith(".")]
    with pytest.raises(BundleError, match="does not match its sha256"):
        repair_bundle(bundle.dir, [load_public_key(bundle.pub)], output=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []

    state = tmp_path / "state"
    r = run_airgap(*import_args(bundle, registry.host, state))
    assert r.returncode == 8 and "chunk-000001.bin" in r.stderr and "does not match its sha256" in r.stderr, r.output
    m = bundle.manifest
    from_chunk_1 = {str(b.digest) for b in m.blobs if 1 in m.chunks_for(b.span)}
    assert from_chunk_1 and not {d for _, d in inventory(registry, m).blobs} & from_chunk_1
    assert "demo/large:1.0" not in inventory(registry, m).tags
    assert_complete(registry, bundle, [n for n in DEMO_IMAGE_NAMES if n != "demo/large:1.0"])


# --------------------------------------------------------------------------- import


def test_import_rebuilds_missing_and_damaged_chunks_on_the_fly(bundle: Bundle, registry: RegistryServer,
                                                               run_airgap: RunAirgap, tmp_path: Path) -> None:
    damage(bundle.chunk(1), "delete")
    damage(bundle.chunk(0), "flip")  # every image has data in chunk 0
    before = snapshot(bundle.dir)
    state = tmp_path / "state"
    dry = run_airgap(*import_args(bundle, registry.host, state, "--dry-run"))  # sees the missing one, not the flip
    assert dry.returncode == 0 and "MISSING chunk-000001.bin; parity rebuilds chunk-000001.bin" in dry.stdout, \
        dry.output
    r = run_airgap(*import_args(bundle, registry.host, state, "--json"))
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    assert sorted(doc["repaired_chunks"]) == ["chunk-000000.bin", "chunk-000001.bin"]
    assert_complete(registry, bundle)  # skopeo: every image with the source's digest
    assert snapshot(bundle.dir) == before  # the media are read, never written
    assert not (state / "repaired").exists()  # removed once done
    assert all(d.stat().st_mode & 0o077 == 0 for d in (state, *(p for p in state.rglob("*") if p.is_dir())))
    again = run_airgap(*import_args(bundle, registry.host, state))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output


def test_a_chunk_rebuilt_by_an_interrupted_import_is_reported_by_the_next(bundle: Bundle, tmp_path: Path) -> None:
    """The rebuilt copy an interrupted import left in the state directory is used by the rerun, and listed in
    its repaired_chunks like one it rebuilt itself."""
    from airgap.repair import Repairer

    damage(bundle.chunk(1), "delete")
    first = Repairer.for_import(bundle.manifest, [bundle.dir], tmp_path / "state")
    assert first is not None
    first.rebuild(1)  # then the run is interrupted
    again = Repairer.for_import(bundle.manifest, [bundle.dir], tmp_path / "state")
    assert again is not None and again.rebuilt == []
    assert again.rebuild(1) == first.out_dir / "chunk-000001.bin"
    assert again.rebuilt == ["chunk-000001.bin"]


def test_import_with_three_lost_names_them_and_the_limit(bundle: Bundle, registry: RegistryServer,
                                                         run_airgap: RunAirgap, tmp_path: Path) -> None:
    for name in ("chunk-000001.bin", "chunk-000002.bin", "parity-000000-000.bin"):
        damage(bundle.dir / name, "delete")
    r = run_airgap(*import_args(bundle, registry.host, tmp_path / "state"))
    assert_error_line(r, "2 chunks missing (chunk-000001.bin, chunk-000002.bin)", "parity cannot rebuild them",
                      "stripe 0 has 3 chunks missing or damaged (chunk-000001.bin, chunk-000002.bin, "
                      "parity-000000-000.bin)",
                      "at most 2 per stripe", exit_code=EXIT_BUNDLE)
    assert inventory(registry, bundle.manifest).empty


def test_interrupted_export_with_parity(registry: RegistryServer, fault_proxy_factory: FaultProxyFactory,
                                        demo_registry: RegistryServer, run_airgap: RunAirgap, tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    assert run_airgap("keygen", str(key)).returncode == 0
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.http_error(500, times=1000, match=r"GET /v2/demo/large/blobs/")
    out = tmp_path / "bundle"
    args = [f"{proxy.host}/demo/base-a:1.0", f"{proxy.host}/demo/large:1.0", "--output", str(out), "--key", str(key),
            "--chunk-size", "1MiB", "--retries", "2"]
    r = run_airgap("export", *args, "--parity", "2")
    assert r.returncode == 5 and not (out / "manifest.json").exists(), r.output
    r = run_airgap("export", *args, "--parity", "1")
    assert r.returncode == 2 and "interrupted export of something else (parity 2 there, 1 now)" in r.stderr, r.output
    r = run_airgap("export", *args)
    assert r.returncode == 2 and "(parity 2 there, None now)" in r.stderr, r.output
    proxy.clear()
    r = run_airgap("export", *args, "--parity", "2")
    assert r.returncode == 0 and "2 parity chunks" in r.stdout, r.output
    assert run_airgap("verify", str(out), "--pubkey", f"{key}.pub").returncode == 0
    r = run_airgap("export", *args, "--parity", "1")
    assert r.returncode == 2 and "already holds a complete bundle" in r.stderr, r.output
    assert "parity differs" in r.stderr, r.output
    r = run_airgap("export", *args, "--parity", "2")
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.output


# --------------------------------------------------------------------------- a larger bundle, several stripes


def test_larger_bundle_random_pairs_and_a_corrupt_chunk(parity_21m: Bundle, tmp_path: Path) -> None:
    m = parity_21m.manifest
    parity = m.parity
    assert parity is not None and len(m.chunks) == 22
    assert (parity.layout.stripes, parity.layout.data, parity.layout.parity) == (2, 11, 2)
    work = parity_21m.copy_to(tmp_path / "bundle")
    pristine = snapshot(work.dir)
    trusted = [load_public_key(work.pub)]
    rng = random.Random(_seed())
    stripes = [[m.chunks[i].name for i in parity.layout.members(s, len(m.chunks))]
               + [c.name for c in parity.of_stripe(s)] for s in range(parity.layout.stripes)]
    for trial in range(6):
        s = rng.randrange(2)
        lost = rng.sample(stripes[s], 2)  # two in one stripe, and one damaged in the other
        corrupt = rng.choice(stripes[1 - s])
        for name in lost:
            damage(work.dir / name, rng.choice(["delete", "truncate"]))
        damage(work.dir / corrupt, "flip")
        result = repair_bundle(work.dir, trusted)
        assert sorted(r.name for r in result.rebuilt) == sorted([*lost, corrupt]), trial
        assert snapshot(work.dir) == pristine, (trial, lost, corrupt)


def test_larger_bundle_imports_with_the_original_digests(parity_21m: Bundle, registry: RegistryServer,
                                                         run_airgap: RunAirgap, tmp_path: Path) -> None:
    work = replace(parity_21m.copy_to(tmp_path / "bundle"))
    rng = random.Random(_seed())
    m = work.manifest
    assert m.parity is not None
    first = [m.chunks[i].name for i in m.parity.layout.members(0, len(m.chunks))]
    lost = rng.sample(first[1:], 2)  # chunk 0 holds the small images: keep it, lose two of demo/large's
    second = [m.chunks[i].name for i in m.parity.layout.members(1, len(m.chunks))]
    corrupt = rng.choice(second)
    for name in lost:
        damage(work.dir / name, "delete")
    damage(work.dir / corrupt, "flip")
    r = run_airgap(*import_args(work, registry.host, tmp_path / "state"))
    assert r.returncode == 0, r.output
    assert "rebuilt from parity: " in r.stdout and all(n in r.stdout for n in [*lost, corrupt])
    assert_complete(registry, work)
    shutil.rmtree(work.dir)
