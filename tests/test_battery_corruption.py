"""Reliability battery (issue 5), part 2: damaged media and tampered bundles, in many seeded trials.

* ``verify`` on seeded random damage (one byte flipped at a random offset of a random chunk, a chunk truncated,
  two chunks swapped, a chunk copied over another or under an extra name, a chunk deleted): every damaged
  chunk is named with the images it affects, nothing else is reported, and the detections are counted.
* ``import`` on the same kinds of damage: nothing corrupt is committed (HEAD on every blob of the affected
  images: absent, or present with exactly the right bytes), the damaged chunk is named, the other images are
  complete with their source digests.
* A manifest edited (one field, keys reordered, random one-byte edits), a signature replaced, signed with
  another key, or claiming the trusted key's id: refused before any request reaches the target.
* Property: the chunk reader on random damage returns the exact bytes or raises an AirgapError, nothing else;
  the tar header check and the journals' loaders likewise.

Seeds are printed; ``AIRGAP_CORRUPTION_SEED=N`` replays a run. Counts go to ``docs/threat-model.md``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import FaultProxyFactory, RunAirgap
from harness import RegistryServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_import_faults import ACCEPT, EXIT_BUNDLE, EXIT_INCOMPLETE, Bundle, assert_error_line, bundle_2m, catalog

from airgap.bundle import tarfmt
from airgap.bundle.reader import BundleReader, read_signed_manifest
from airgap.cli.main import main as airgap_main
from airgap.errors import AirgapError, InvalidInput
from airgap.model.bundle import BundleManifest
from airgap.model.digest import Digest
from airgap.signing import PrivateKey, SignatureError, load_public_key, sign
from tests.unit.test_bundle_model import build, noise

__all__ = ["bundle_2m"]  # the module-scoped bundle fixture of test_import_faults, used here too

KINDS = ["flip", "truncate", "swap", "copy-over", "copy-extra", "delete"]


def _seed(name: str = "AIRGAP_CORRUPTION_SEED") -> int:
    seed = int(os.environ.get(name) or random.SystemRandom().randrange(1 << 32))
    print(f"corruption seed: {seed} (rerun with {name}={seed})")
    return seed


# --------------------------------------------------------------------------- damage


@dataclass
class Damage:
    kind: str
    chunks: dict[str, str]  # damaged chunk name -> what verify must call it: corrupt, truncated, oversized, missing
    extra: str | None = None  # a file that is not part of the bundle (a copy under another name)
    detail: str = ""


def _size_kind(size: int, expected: int) -> str:
    return "corrupt" if size == expected else ("truncated" if size < expected else "oversized")


def apply_damage(kind: str, rng: random.Random, d: Path, m: BundleManifest) -> Damage:
    """Damage the bundle in ``d`` (which holds every chunk intact) in one of the ways of ``KINDS``."""
    chunks = list(m.chunks)
    c = rng.randrange(len(chunks))
    name, size = chunks[c].name, chunks[c].size
    path = d / name
    if kind == "flip":
        offset, bit = rng.randrange(size), 1 << rng.randrange(8)
        with path.open("r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ bit]))
        return Damage(kind, {name: "corrupt"}, detail=f"{name}@{offset}^{bit:#04x}")
    if kind == "truncate":
        length = rng.randrange(size)
        os.truncate(path, length)
        return Damage(kind, {name: "truncated"}, detail=f"{name} to {length}")
    other = rng.choice([i for i in range(len(chunks)) if i != c])
    oname, osize = chunks[other].name, chunks[other].size
    if kind == "swap":
        tmp = d / "swap.tmp"
        path.rename(tmp)
        (d / oname).rename(path)
        tmp.rename(d / oname)
        return Damage(kind, {name: _size_kind(osize, size), oname: _size_kind(size, osize)}, detail=f"{name}<->{oname}")
    if kind == "copy-over":
        shutil.copyfile(d / oname, path)
        return Damage(kind, {name: _size_kind(osize, size)}, detail=f"{oname} over {name}")
    if kind == "copy-extra":
        extra = rng.choice([f"{name}.copy", f"Copy of {name}", f"chunk-{len(chunks) + rng.randrange(9):06d}.bin",
                            "backup.bin", f"{name[:-4]} (1).bin"])
        shutil.copyfile(path, d / extra)
        return Damage(kind, {}, extra=str(d / extra), detail=f"{name} as {extra!r}")
    assert kind == "delete"
    path.unlink()
    return Damage(kind, {name: "missing"}, detail=name)


def restore(d: Path, pristine: Path, m: BundleManifest) -> None:
    """Put every chunk back (only those that differ) and remove whatever else appeared."""
    keep = {c.name for c in m.chunks} | {"manifest.json", "manifest.json.sig"}
    for p in d.iterdir():
        if p.name not in keep:
            p.unlink()
    for c in m.chunks:
        p = d / c.name
        if not p.exists() or p.stat().st_size != c.size or hashlib.sha256(p.read_bytes()).hexdigest() != c.sha256:
            shutil.copyfile(pristine / c.name, p)


@pytest.fixture(scope="module")
def work(bundle_2m: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A copy of the module's bundle that the trials damage and restore in place."""
    return bundle_2m.copy_to(tmp_path_factory.mktemp("battery-corruption") / "bundle")


# --------------------------------------------------------------------------- 1. verify


def verify_cli(capsys: pytest.CaptureFixture[str], bundle: Bundle) -> tuple[int, str, str]:
    """``airgap verify`` in this process (the same code as the command, without starting Python 200 times)."""
    code = airgap_main(["verify", str(bundle.dir), "--pubkey", str(bundle.pub)])
    out = capsys.readouterr()
    return code, out.out, out.err


def check_verify_report(code: int, err: str, damage: Damage, m: BundleManifest) -> None:
    index = {c.name: i for i, c in enumerate(m.chunks)}
    reported = {line.split(":", 1)[0]: line for line in err.splitlines()
                if not line.startswith(("airgap:", "note:"))}
    assert set(reported) == set(damage.chunks), f"{damage.detail}: reported {sorted(reported)}\n{err}"
    for name, kind in damage.chunks.items():
        affects = ", ".join(i.reference for i in m.images_affected({index[name]}))
        assert reported[name].startswith(f"{name}: {kind}"), reported[name]
        assert reported[name].endswith(f"; affects {affects}"), reported[name]
    if damage.chunks:
        assert code == 7, err
        assert f": {len(damage.chunks)} of {len(m.chunks)} chunks missing or damaged" in err
    else:  # a copy under another name harms nothing, and is pointed out
        assert code == 0, err
        assert f"note: {damage.extra} is not part of the bundle" in err


def run_verify_trials(work: Bundle, capsys: pytest.CaptureFixture[str], trials: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    m = work.manifest
    counts = {k: 0 for k in KINDS}
    detected = 0
    restore(work.dir, work.pristine, m)
    for n in range(trials):
        kind = rng.choice(KINDS)
        damage = apply_damage(kind, rng, work.dir, m)
        code, _out, err = verify_cli(capsys, work)
        try:
            check_verify_report(code, err, damage, m)
        except AssertionError as exc:
            raise AssertionError(f"trial {n + 1} ({damage.detail}), AIRGAP_CORRUPTION_SEED={seed}: {exc}") from exc
        counts[kind] += 1
        detected += 1
        restore(work.dir, work.pristine, m)
    assert verify_cli(capsys, work)[0] == 0
    assert detected == trials
    return counts


def test_verify_names_every_damage(work: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    counts = run_verify_trials(work, capsys, 200, seed)
    with capsys.disabled():
        print(f"verify trials: 200 (seed {seed}), every one detected and named: {counts}")
    assert all(counts[k] for k in KINDS)


@pytest.mark.slow
def test_verify_names_every_damage_2000(work: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    seed = _seed()
    counts = run_verify_trials(work, capsys, 2000, seed)
    with capsys.disabled():
        print(f"verify trials: 2000 (seed {seed}), every one detected and named: {counts}")


# --------------------------------------------------------------------------- 2. import


def check_import(r: Any, damage: Damage, bundle: Bundle, target: RegistryServer, prefix: str) -> str:
    """What an import of a damaged bundle must do; returns what it said."""
    m = bundle.manifest
    index = {c.name: i for i, c in enumerate(m.chunks)}
    repo = functools.partial("{}/{}".format, prefix)
    if not damage.chunks:
        assert r.returncode == 0, r.output
        hit: list[Any] = []
        said = "imported"
    elif "missing" in damage.chunks.values():
        (name,) = damage.chunks
        said = assert_error_line(r, f"({name})", "needed by", exit_code=EXIT_BUNDLE)
        assert not [x for x in catalog(target) if x.startswith(f"{prefix}/")], "pushed before refusing"
        return said
    else:
        said = assert_error_line(r, "images not imported", exit_code=EXIT_INCOMPLETE)
        assert any(f"chunk {name} is " in said for name in damage.chunks), said
        hit = m.images_affected({index[n] for n in damage.chunks})
        assert f"{len(hit)} of {len(m.images)} images not imported" in said
    with target.client() as client:
        for img in m.images:
            if img in hit:
                for d in img.blobs:  # absent, or exactly right
                    resp = client.get(f"/v2/{repo(img.repository)}/blobs/{d}")
                    assert resp.status_code in (200, 404), resp.status_code
                    if resp.status_code == 200:
                        assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == str(d)
                for d in img.manifests:  # no manifest, no tag
                    head = client.head(f"/v2/{repo(img.repository)}/manifests/{d}", headers={"Accept": ACCEPT})
                    assert head.status_code == 404
                tag = client.head(f"/v2/{repo(img.repository)}/manifests/{img.tag}", headers={"Accept": ACCEPT})
                assert tag.status_code == 404
            else:
                tag = client.head(f"/v2/{repo(img.repository)}/manifests/{img.tag}", headers={"Accept": ACCEPT})
                assert tag.headers.get("docker-content-digest") == bundle.digests[f"{img.repository}:{img.tag}"]
    return said


def run_import_trials(bundle: Bundle, target: RegistryServer, run_airgap: RunAirgap, tmp_path: Path,
                      kinds: list[str], seed: int) -> int:
    rng = random.Random(seed)
    m = bundle.manifest
    for n, kind in enumerate(kinds):
        damage = apply_damage(kind, rng, bundle.dir, m)
        prefix = f"trial-{seed % 10000}-{n}"
        r = run_airgap("import", str(bundle.dir), "--to", f"{target.host}/{prefix}", "--pubkey", str(bundle.pub),
                       "--state-dir", str(tmp_path / f"state-{n}"))
        said = check_import(r, damage, bundle, target, prefix)
        print(f"  import trial {n + 1}: {kind} ({damage.detail}) -> {said[:160]}")
        restore(bundle.dir, bundle.pristine, m)
    return len(kinds)


def test_import_commits_nothing_corrupt(bundle_2m: Bundle, registry: RegistryServer, run_airgap: RunAirgap,
                                        tmp_path: Path) -> None:
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    seed = _seed()
    n = run_import_trials(bundle, registry, run_airgap, tmp_path, KINDS, seed)
    print(f"import trials: {n}, nothing corrupt committed, the damaged chunk named in each")


@pytest.mark.slow
def test_import_commits_nothing_corrupt_40(bundle_2m: Bundle, registry: RegistryServer, run_airgap: RunAirgap,
                                           tmp_path: Path) -> None:
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    seed = _seed()
    rng = random.Random(seed)
    n = run_import_trials(bundle, registry, run_airgap, tmp_path, [rng.choice(KINDS) for _ in range(40)], seed)
    print(f"import trials: {n}, nothing corrupt committed, the damaged chunk named in each")


# --------------------------------------------------------------------------- 3. tampering


def tamper(case: str, bundle: Bundle) -> tuple[str, ...]:
    """Alter manifest.json or its signature; return what the refusal must say."""
    mpath, spath = bundle.dir / "manifest.json", bundle.dir / "manifest.json.sig"
    data = mpath.read_bytes()
    attacker = PrivateKey.generate()
    if case == "edited-field":  # a valid manifest that says something else: another tag for an image
        obj = json.loads(data)
        obj["images"][0]["tag"] = "2.0"
        mpath.write_bytes((json.dumps(obj, indent=1, ensure_ascii=True) + "\n").encode())
        return ("manifest.json does not match its signature",)
    if case == "reordered-keys":  # the same content, other bytes
        mpath.write_bytes(json.dumps(json.loads(data), sort_keys=True).encode())
        return ("manifest.json does not match its signature",)
    if case == "signature-replaced":  # well-formed, the right key id, 64 random bytes
        sig = json.loads(spath.read_bytes())
        sig["signature"] = base64.b64encode(os.urandom(64)).decode()
        spath.write_bytes((json.dumps(sig, indent=2) + "\n").encode())  # canonical form: the signature is checked
        return ("manifest.json does not match its signature",)
    if case == "signed-by-another-key":  # the courier edits the manifest and signs it with their own key
        obj = json.loads(data)
        obj["images"][0]["tag"] = "2.0"
        edited = (json.dumps(obj, indent=1, ensure_ascii=True) + "\n").encode()
        mpath.write_bytes(edited)
        spath.write_bytes(sign(attacker, edited))
        return (attacker.public.key_id, "not trusted")
    assert case == "another-key-claiming-the-trusted-id"
    sig = json.loads(sign(attacker, data))
    sig["key_id"] = bundle.manifest.key_id
    spath.write_bytes((json.dumps(sig, indent=2) + "\n").encode())
    return ("manifest.json does not match its signature",)


@pytest.mark.parametrize("case", ["edited-field", "reordered-keys", "signature-replaced", "signed-by-another-key",
                                  "another-key-claiming-the-trusted-id"])
def test_tampered_bundle_is_refused_before_any_push(case: str, bundle_2m: Bundle, registry: RegistryServer,
                                                    fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                    tmp_path: Path) -> None:
    """Complements test_import_faults.py::test_untrusted_bundle_is_refused_before_any_push (wrong key, no
    signature, one byte, broken JSON, another bundle's signature)."""
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    needles = tamper(case, bundle)
    with pytest.raises(SignatureError):
        read_signed_manifest(bundle.dir, [load_public_key(bundle.pub)])
    proxy = fault_proxy_factory(registry.host)
    state = tmp_path / "state"
    r = run_airgap("import", str(bundle.dir), "--to", proxy.host, "--pubkey", str(bundle.pub), "--state-dir",
                   str(state))
    assert_error_line(r, *needles, exit_code=EXIT_BUNDLE)
    assert proxy.requests == []
    assert not (state / "imports").exists() or not any((state / "imports").iterdir())
    v = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub))
    assert_error_line(v, *needles, exit_code=EXIT_BUNDLE)


def test_a_bundle_signed_again_by_another_trusted_key_is_refused(bundle_2m: Bundle, run_airgap: RunAirgap,
                                                                  tmp_path: Path) -> None:
    """During a key rotation both keys are trusted: a bundle made with one and signed again with the other (say a
    leaked old key) no longer says who made it; refused, naming both keys (inspect named the wrong one)."""
    from airgap.signing import encode_public_key

    attacker = PrivateKey.generate()
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    data = (bundle.dir / "manifest.json").read_bytes()
    (bundle.dir / "manifest.json.sig").write_bytes(sign(attacker, data))
    other = tmp_path / "other.pub"
    other.write_bytes(encode_public_key(attacker.public))
    for command in ("verify", "inspect"):
        r = run_airgap(command, str(bundle.dir), "--pubkey", str(bundle.pub), "--pubkey", str(other))
        assert_error_line(r, f"names key {bundle.manifest.key_id} as its signer, but key {attacker.public.key_id} "
                             "signed it", exit_code=EXIT_BUNDLE)


def test_oversized_manifest_is_refused_without_reading_it(bundle_2m: Bundle, registry: RegistryServer,
                                                          fault_proxy_factory: FaultProxyFactory,
                                                          run_airgap: RunAirgap, tmp_path: Path) -> None:
    """A manifest.json beyond the spec's 256 MiB (a sparse file here) is refused by its size, before it is read
    into memory or its signature is checked; nothing is pushed."""
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    with (bundle.dir / "manifest.json").open("r+b") as f:
        f.truncate(257 * 1024 * 1024)
    proxy = fault_proxy_factory(registry.host)
    r = run_airgap("import", str(bundle.dir), "--to", proxy.host, "--pubkey", str(bundle.pub), "--state-dir",
                   str(tmp_path / "state"))
    assert_error_line(r, "manifest.json is larger than the 256 MiB", exit_code=EXIT_BUNDLE)
    assert proxy.requests == []


def test_random_edits_of_manifest_and_signature_are_refused(bundle_2m: Bundle, tmp_path: Path) -> None:
    """Seeded: 300 random one-byte edits of manifest.json (any offset, any new value) and 100 of its signature
    file, each checked the way verify and import check it (library): every one refused."""
    seed = _seed()
    rng = random.Random(seed)
    bundle = bundle_2m.copy_to(tmp_path / "bundle")
    trusted = [load_public_key(bundle.pub)]
    mpath, spath = bundle.dir / "manifest.json", bundle.dir / "manifest.json.sig"
    data, sig = mpath.read_bytes(), spath.read_bytes()
    refused = 0
    for n in range(400):
        path, original = (mpath, data) if n < 300 else (spath, sig)
        edited = bytearray(original)
        at = rng.randrange(len(edited))
        edited[at] = rng.choice([b for b in range(256) if b != edited[at]])
        path.write_bytes(bytes(edited))
        with pytest.raises(AirgapError):
            read_signed_manifest(bundle.dir, trusted)
        refused += 1
        path.write_bytes(original)
    read_signed_manifest(bundle.dir, trusted)
    print(f"manifest/signature edits: {refused} of 400 refused (seed {seed})")


# --------------------------------------------------------------------------- 4. properties


@functools.cache
def _small_bundle(stored: bool) -> tuple[BundleManifest, dict[str, bytes], list[bytes]]:
    """A bundle of a few blobs in 4 KiB chunks and 4 KiB segments (many frames, many chunk boundaries)."""
    blobs = [noise(9000, 1), b"abc" * 3000, b"", noise(5000, 2)[:4096] * 2, b"tiny"]
    with tempfile.TemporaryDirectory() as tmp:
        m, d = build(Path(tmp), blobs, chunk_size=4096, segment=4096,
                     media_type="application/vnd.oci.image.layer.v1.tar+gzip" if stored else "application/json")
        files = {c.name: (d / c.name).read_bytes() for c in m.chunks}
    return m, files, blobs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_chunk_reader_on_random_damage_returns_exact_bytes_or_airgap_error(data: Any) -> None:
    """Whatever happens to the chunk files, reading a blob gives exactly its bytes or raises an AirgapError
    (never a zstd, tar, struct, index or value error), with and without the whole-chunk check."""
    m, pristine, blobs = _small_bundle(data.draw(st.booleans(), label="stored"))
    files = dict(pristine)
    names = sorted(files)
    starts = sorted({s.offset + sum(s.frames[:k]) for s in [b.span for b in m.blobs] + [f.span for f in m.files]
                     for k in range(len(s.frames))})
    for _ in range(data.draw(st.integers(1, 3), label="damages")):
        name = data.draw(st.sampled_from(names), label="chunk")
        raw = bytearray(files.get(name, b""))
        kind = data.draw(st.sampled_from(["flip", "frame-header", "truncate", "extend", "zero", "delete", "swap"]))
        if kind == "flip" and raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "frame-header":  # a byte of a frame's magic, header or first block header
            start = data.draw(st.sampled_from(starts)) + data.draw(st.integers(0, 20))
            idx, off = divmod(start, m.chunk_size)
            name = m.chunks[min(idx, len(m.chunks) - 1)].name
            raw = bytearray(files.get(name, b""))
            if off < len(raw):
                raw[off] = data.draw(st.integers(0, 255))
        elif kind == "truncate":
            raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
        elif kind == "extend":
            raw += data.draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero" and raw:
            a = data.draw(st.integers(0, len(raw) - 1))
            n = len(raw[a: a + data.draw(st.integers(1, 600))])
            raw[a: a + n] = bytes(n)
        elif kind == "delete":
            files.pop(name, None)
            continue
        elif kind == "swap":
            other = data.draw(st.sampled_from(names))
            files[name], files[other] = files.get(other, b""), bytes(raw)
            continue
        files[name] = bytes(raw)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, content in files.items():
            (d / name).write_bytes(content)
        reader = BundleReader(m, [d], verify_chunks=data.draw(st.booleans(), label="verify_chunks"))
        for blob in data.draw(st.lists(st.sampled_from(blobs), min_size=1, max_size=3, unique=True)):
            offset = data.draw(st.integers(0, len(blob)), label="offset")
            try:
                with reader.open_blob(Digest.of(blob), offset) as chunks:
                    got = b"".join(chunks)
            except AirgapError:
                continue
            assert got == blob[offset:]
        with contextlib.suppress(AirgapError):
            assert reader.read_file("index.json") == b"{}"


def _header(name: str, size: int, **kw: Any) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    for k, v in kw.items():
        setattr(info, k, v)
    return info.tobuf(format=tarfile.PAX_FORMAT)


GOOD = "blobs/sha256/" + "a" * 64


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda h, at, v: h[:at] + bytes([v]) + h[at + 1:], st.sampled_from([
        _header(GOOD, 100), _header(GOOD, 1 << 40), _header("../../etc/x", 100),
        _header(GOOD, 0, type=tarfile.SYMTYPE, linkname="/etc/passwd")]), st.integers(0, 1535), st.integers(0, 255)),
))
def test_tar_header_check_never_trusts_anything_else(data: bytes) -> None:
    """The tar header check of the bundle reader either accepts exactly the member the manifest places there
    (name, regular file, size) or raises InvalidInput; no other exception, whatever the bytes."""
    try:
        skip = tarfmt.parse_header(data, expect_path=GOOD, expect_size=100)
    except InvalidInput:
        return
    info = tarfile.TarFile(fileobj=io.BytesIO(data[: tarfmt.MAX_HEADER])).next()
    assert info is not None and info.name == GOOD and info.isreg() and info.size == 100 and skip == info.offset_data


journal_lines = st.lists(st.one_of(
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(
                     ["t", "repo", "digest", "location", "offset", "chunk", "name", "size", "sha256", "frames"]),
                     c, max_size=6), max_leaves=12).map(json.dumps),
    st.builds(lambda o: json.dumps({"t": "session", "repo": "r", "digest": "d", "location": "l", "offset": o}),
              st.one_of(st.floats(), st.integers(), st.text(max_size=5))),
    st.builds(lambda s, n: json.dumps({"chunk": 0, "name": n, "size": s, "sha256": "0" * 64, "frames": [[0, 0, s]]}),
              st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
              st.one_of(st.just("chunk-000000.bin"), st.integers(), st.text(max_size=5))),
), max_size=6)


@settings(max_examples=300, deadline=None)
@given(journal_lines)
def test_journals_survive_any_damage(lines: list[str]) -> None:
    """A journal damaged by a crash or the disk (torn lines, garbage, odd values) never stops a rerun: the
    loaders keep what they can read and never raise."""
    from airgap.bundle.chunks import Journal
    from airgap.journal import ImportJournal

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = "\n".join(lines)
        imports = d / "imports"
        imports.mkdir()
        journal = ImportJournal.open(d, "b-x", "target")
        journal.path.write_text(text, encoding="utf-8", errors="surrogateescape")
        again = ImportJournal.open(d, "b-x", "target")
        again.put("repo", "sha256:" + "0" * 64, "http://x/v2/repo/blobs/uploads/u", 1)
        assert ImportJournal.open(d, "b-x", "target").get("repo", "sha256:" + "0" * 64) is not None
        (d / "journal.jsonl").write_text(text, encoding="utf-8", errors="surrogateescape")
        Journal.load(d / "journal.jsonl", d, 1, lambda p, c: True)


@pytest.mark.slow
def test_properties_at_length() -> None:
    """The three properties above, 25 times over: 10,000 damaged bundles read, 12,500 tar headers, 7,500
    damaged journals."""
    for _ in range(25):
        test_chunk_reader_on_random_damage_returns_exact_bytes_or_airgap_error()
        test_tar_header_check_never_trusts_anything_else()
        test_journals_survive_any_damage()


# --------------------------------------------------------------------------- 5. resuming inside a member


def _members(big: bytes, opener: Any) -> list[Any]:
    from airgap.bundle.stream import Member
    from airgap.bundle.tarfmt import END_OF_ARCHIVE, blob_path

    return [Member("oci-layout", 2, data=b"{}"),
            Member(blob_path(Digest.of(big).hex), len(big), "application/octet-stream", Digest.of(big),
                   opener=opener),
            Member("index.json", 2, data=b"{}", trailer=END_OF_ARCHIVE)]


def _opener(content: bytes, digest: Digest, fail_after: int | None = None) -> Any:
    from airgap.errors import ConnectionFailed
    from airgap.streams import verified

    @contextlib.contextmanager
    def opener(offset: int) -> Any:
        def pieces() -> Any:
            for at in range(0, len(content), 1000):
                if fail_after is not None and at >= fail_after:
                    raise ConnectionFailed("the source went away")
                yield content[at:at + 1000]
        yield verified(pieces(), digest, len(content), "the big blob")
    return opener


@pytest.mark.parametrize("first_run", ["damaged-bytes", "cut-off"])
def test_resume_inside_a_member_keeps_no_unchecked_frame(first_run: str, tmp_path: Path) -> None:
    """The first run puts frames of a member in complete chunks, then fails before the member's digest is
    checked (damaged bytes from the source, or the source went away); the rerun reads the right bytes. The
    chunks it completes are exactly those of a run that never failed."""
    from airgap.bundle.writer import write_stream

    big = noise(5 * 4096 + 100, 7)
    digest = Digest.of(big)
    clean = tmp_path / "clean"
    clean.mkdir()
    want, _, _ = write_stream(clean, _members(big, _opener(big, digest)), chunk_size=4096, segment=4096, level=3,
                              jobs=2)
    out = tmp_path / "out"
    out.mkdir()
    first = (_opener(big[:10] + b"!" + big[11:], digest) if first_run == "damaged-bytes" else
             _opener(big[:10] + b"!" + big[11:], digest, fail_after=3 * 4096))
    with pytest.raises(AirgapError):
        write_stream(out, _members(big, first), chunk_size=4096, segment=4096, level=3, jobs=2)
    assert len(list(out.glob("chunk-*.bin"))) >= 2  # frames of the unchecked member were in complete chunks
    got, _, resumed = write_stream(out, _members(big, _opener(big, digest)), chunk_size=4096, segment=4096,
                                   level=3, jobs=2)
    assert got == want
    for c in want:
        assert (out / c.name).read_bytes() == (clean / c.name).read_bytes()
    assert resumed < 4096 * 2  # only what lay before the member was kept


def test_resume_with_another_encoding_is_refused(tmp_path: Path) -> None:
    """When the frames on disk cannot be produced again (another compression level, another zstd), even after
    forgetting the member, the export says so instead of mixing two encodings."""
    from airgap.bundle.files import BundleError
    from airgap.bundle.stream import Member
    from airgap.bundle.tarfmt import END_OF_ARCHIVE, blob_path
    from airgap.bundle.writer import write_stream

    blobs = [b"".join(hashlib.sha256(f"{n}:{i}".encode()).hexdigest().encode() for i in range(100))
             for n in range(4)]  # hex text: compresses, differently at each level
    members = [Member("oci-layout", 2, data=b"{}")]
    members += [Member(blob_path(Digest.of(b).hex), len(b), "application/json", Digest.of(b), data=b) for b in blobs]
    members.append(Member("index.json", 2, data=b"{}", trailer=END_OF_ARCHIVE))
    out = tmp_path / "out"
    out.mkdir()
    chunks, spans, _ = write_stream(out, members, chunk_size=1024, segment=4096, level=3, jobs=2)
    assert len(chunks) > 10
    for c in chunks[8:]:  # as if interrupted in the middle of the third blob
        (out / c.name).unlink()
    assert spans[3].offset < 8 * 1024 < spans[4].offset
    with pytest.raises(BundleError, match="no longer matches the chunks already written"):
        write_stream(out, members, chunk_size=1024, segment=4096, level=19, jobs=2)

