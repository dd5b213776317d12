"""Conformance: bundles written by ``airgap export`` read by an independent reader of docs/bundle-format.md.

``tests/conformance/specreader.py`` was written from the specification alone, by someone who had not read
airgap's code, and imports nothing from airgap. A change to airgap's writer (or to the specification) that a
second implementation would trip over makes it refuse the bundle, and this test fail. It is stricter than the
MUSTs on purpose; see its docstring.

One source registry holds the demo images (2 MiB large layer); the module exports, once:

* ``full``: every demo image, 1 MiB chunks, ``--parity 2`` (3 data chunks, the last one short; 2 parity
  chunks);
* ``subset``: ``demo/multi:1.0 --platform linux/amd64`` (a new index listing one platform);
* ``delta``: after a new tag ``demo/base-a:2.0`` (base-a's layers plus one new layer) is pushed to the source,
  ``demo/base-a:2.0`` and ``demo/multi:1.0`` ``--since`` the full bundle (their layers are relied on).

The reader must accept each, with ``--strict-index`` (index.json as section 2.4 says), and extract the same
files as ``cat chunk-* | zstd -d | tar -x`` (done here with ``zstandard`` and ``tarfile``); it must rebuild a
deleted data chunk from parity; and it must refuse a damaged chunk, a damaged blob under a re-signed manifest,
an edited manifest and an untrusted key, each for its own reason.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
import zstandard
from conftest import AIRGAP, require_tools
from harness import RegistryServer, start_registry

from scripts.demo_images import DEMO_IMAGE_NAMES

READER = Path(__file__).parent / "conformance" / "specreader.py"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
NEW_TAG = "demo/base-a:2.0"
NEW_LAYER = hashlib.shake_256(b"conformance: the new layer of demo/base-a:2.0").digest(300_000)


# --------------------------------------------------------------------------- helpers


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


def manifest_of(bundle: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((bundle / "manifest.json").read_bytes())
    return doc


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(AIRGAP + list(args), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, f"airgap {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc


@dataclass
class Verdict:
    returncode: int
    doc: dict[str, Any]
    output: str

    @property
    def accepted(self) -> bool:
        return self.returncode == 0 and self.doc.get("accepted") is True

    @property
    def notes(self) -> list[str]:
        return list(self.doc.get("notes", []))


def read(bundle: Path, pub: Path, *extra: str) -> Verdict:
    """The independent reader on ``bundle`` (``--strict-index --json``): exit 0 accepts, 1 refuses."""
    proc = subprocess.run([sys.executable, str(READER), str(bundle), "--pubkey", str(pub), "--strict-index",
                           "--json", *extra], capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    # a crash also exits 1: only a refusal the reader reports counts as one
    assert "Traceback" not in proc.stderr, output
    assert proc.returncode in (0, 1), output
    doc = json.loads(proc.stdout)
    assert doc["accepted"] is (proc.returncode == 0), output
    return Verdict(proc.returncode, doc, output)


def assert_accepted(v: Verdict) -> None:
    assert v.accepted, f"the independent reader refused a bundle airgap wrote:\n{v.output}"
    # the reader's notes are its doubts: an airgap bundle should leave none besides rebuilds and delta bases
    doubts = [n for n in v.notes if not n.startswith(("rebuilt ", "delta: "))]
    assert doubts == [], v.output


def assert_refused(v: Verdict, reason: str) -> None:
    assert v.returncode == 1 and not v.doc["accepted"], f"accepted, expected a refusal ({reason}):\n{v.output}"
    assert reason in v.doc["error"], v.output


def untar_stream(bundle: Path) -> dict[str, bytes]:
    """``cat chunk-* | zstd -d | tar -x``, in memory: the chunks concatenated in the manifest's order, every zstd
    frame decompressed, and the tar's regular files (the only kind allowed) by name."""
    data = b"".join((bundle / c["name"]).read_bytes() for c in manifest_of(bundle)["chunks"])
    files: dict[str, bytes] = {}
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            assert member.isreg(), f"{member.name}: not a regular file (type {member.type!r})"
            assert member.name not in files, f"{member.name}: twice in the stream"
            f = tar.extractfile(member)
            assert f is not None
            files[member.name] = f.read()
    return files


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (nothing else than files and their directories may be there)."""
    out = {}
    for p in sorted(root.rglob("*")):
        assert not p.is_symlink(), p
        if p.is_file():
            out[p.relative_to(root).as_posix()] = p.read_bytes()
        else:
            assert p.is_dir(), p
    return out


def assert_layout(files: dict[str, bytes]) -> None:
    """A plain OCI layout whose every blob file is named by its content's sha256."""
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads(files["index.json"])["manifests"]
    for name, data in files.items():
        if name not in ("oci-layout", "index.json"):
            assert name.startswith("blobs/sha256/"), name
            assert sha256_hex(data) == name.removeprefix("blobs/sha256/"), f"{name}: content sha256 differs"


def copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    return dest


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def resign(bundle: Path, key: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` and sign it with ``key``, as section 5 describes the key file and the signature."""
    priv = json.loads(key.read_bytes())
    assert priv["type"] == "airgap-ed25519-private-key" and priv["encrypted"] is False
    signer = nacl.signing.SigningKey(base64.b64decode(priv["seed"]))
    data = (json.dumps(manifest, indent=1) + "\n").encode()
    sig = {"type": "airgap-signature", "version": 1, "algorithm": "ed25519", "key_id": priv["key_id"],
           "signature": base64.b64encode(signer.sign(data).signature).decode()}
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.json.sig").write_bytes((json.dumps(sig, indent=2) + "\n").encode())


def push_new_tag(source: RegistryServer, layout: Path) -> str:
    """``demo/base-a:2.0``: demo/base-a:1.0's layers (already in the repository) plus one new layer."""
    index = json.loads((layout / "index.json").read_bytes())
    top = next(m for m in index["manifests"]
               if m["annotations"]["org.opencontainers.image.ref.name"] == "demo/base-a:1.0")
    old = json.loads((layout / "blobs" / "sha256" / top["digest"].removeprefix("sha256:")).read_bytes())
    assert old["mediaType"] == OCI_MANIFEST
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": NEW_TAG}},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layers = old["layers"] + [{"mediaType": OCI_LAYER_TAR, "digest": digest_of(NEW_LAYER), "size": len(NEW_LAYER)}]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                           "layers": layers}).encode()
    repo, tag = NEW_TAG.split(":")
    with source.client() as c:
        for blob in (config, NEW_LAYER):
            resp = c.post(f"/v2/{repo}/blobs/uploads/")
            assert resp.status_code == 202, resp.text
            url = httpx.URL(str(resp.url.join(resp.headers["location"]))).copy_add_param("digest", digest_of(blob))
            resp = c.put(url, content=blob)
            assert resp.status_code == 201, resp.text
        resp = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert resp.status_code == 201, resp.text
    return digest_of(manifest)


# --------------------------------------------------------------------------- the exports, made once


@dataclass
class Exports:
    workdir: Path
    key: Path
    pub: Path
    full: Path
    subset: Path
    delta: Path
    new_digest: str


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, demo_layout: tuple[Path, list[Any]]) -> Iterator[Exports]:
    from scripts.push_layout import push_layout

    require_tools()
    workdir = tmp_path_factory.mktemp("conformance")
    env = {**os.environ, "DOCKER_CONFIG": str(workdir / "docker-config"), "HOME": str(workdir / "home"),
           "XDG_RUNTIME_DIR": str(workdir / "run"), "AIRGAP_RETRY_BASE_DELAY": "0.05"}
    env.pop("REGISTRY_AUTH_FILE", None)
    source = start_registry(workdir / "registries")
    try:
        push_layout(demo_layout[0], source.host)
        key = workdir / "keys" / "signing.key"
        key.parent.mkdir()
        run_cli(env, "keygen", str(key))
        sign = ["--key", str(key), "--chunk-size", "1MiB", "-q"]
        full, subset, delta = workdir / "full", workdir / "subset", workdir / "delta"
        run_cli(env, "export", *[source.ref(n) for n in DEMO_IMAGE_NAMES], "--output", str(full), "--parity", "2",
                *sign)
        run_cli(env, "export", source.ref("demo/multi:1.0"), "--platform", "linux/amd64", "--output", str(subset),
                *sign)
        new_digest = push_new_tag(source, demo_layout[0])
        run_cli(env, "export", source.ref(NEW_TAG), source.ref("demo/multi:1.0"), "--since", str(full),
                "--output", str(delta), *sign)
        yield Exports(workdir, key, Path(f"{key}.pub"), full, subset, delta, new_digest)
    finally:
        source.close()


@pytest.fixture(scope="module")
def full_read(exports: Exports) -> tuple[Verdict, Path]:
    """The independent reader on the full bundle, extracting it: its verdict, and where it extracted it."""
    out = exports.workdir / "full-layout"
    return read(exports.full, exports.pub, "--extract", str(out)), out


@pytest.fixture
def full_layout(full_read: tuple[Verdict, Path]) -> Path:
    """The full bundle's layout, as the reader extracted it (test_full_bundle... fails when it refused it)."""
    verdict, out = full_read
    if not verdict.accepted:
        pytest.fail(f"the reader refused the full bundle, so there is no layout to compare with:\n{verdict.output}")
    return out


# --------------------------------------------------------------------------- accepted, and the same content


def test_full_bundle_with_parity_is_read_as_tar_would(exports: Exports, full_read: tuple[Verdict, Path]) -> None:
    m = manifest_of(exports.full)
    # what the case is about: several 1 MiB chunks, 2 parity chunks, every demo image
    assert m["chunk_size"] == 1024 * 1024 and len(m["chunks"]) >= 3, m["chunks"]
    assert m["parity"]["stripe_parity_chunks"] == 2 and len(m["parity"]["chunks"]) == 2
    assert len(m["images"]) == len(DEMO_IMAGE_NAMES)

    verdict, out = full_read
    assert_accepted(verdict)
    extracted = tree(out)
    untarred = untar_stream(exports.full)
    assert sorted(extracted) == sorted(untarred)
    for name, data in untarred.items():
        assert extracted[name] == data, f"{name}: the reader extracted other bytes than tar does"
    assert_layout(extracted)
    assert {n.removeprefix("blobs/sha256/") for n in extracted if n.startswith("blobs/")} == {
        b["digest"].removeprefix("sha256:") for b in m["blobs"]}
    refs = [e["annotations"]["org.opencontainers.image.ref.name"]
            for e in json.loads(extracted["index.json"])["manifests"]]
    assert [r.split("/", 1)[1] for r in refs] == DEMO_IMAGE_NAMES


@pytest.mark.parametrize("index", [0, 1, 2], ids=["first", "middle", "short-last"])
def test_a_deleted_data_chunk_is_rebuilt_from_parity(exports: Exports, full_layout: Path, tmp_path: Path,
                                                     index: int) -> None:
    bundle = copy_bundle(exports.full, tmp_path / "bundle")
    chunks = manifest_of(bundle)["chunks"]
    assert len(chunks) == 3 and chunks[2]["size"] < chunks[0]["size"]  # the short last one is padded to L
    chunk = chunks[index]
    original = (bundle / chunk["name"]).read_bytes()
    (bundle / chunk["name"]).unlink()
    repaired, out = tmp_path / "repaired", tmp_path / "layout"
    v = read(bundle, exports.pub, "--repair-dir", str(repaired), "--extract", str(out))
    assert_accepted(v)
    assert any(n.startswith(f"rebuilt {chunk['name']} from parity") for n in v.notes), v.output
    assert [p.name for p in repaired.iterdir()] == [chunk["name"]]
    assert (repaired / chunk["name"]).read_bytes() == original
    assert tree(out) == tree(full_layout)


def test_platform_subset(exports: Exports) -> None:
    m = manifest_of(exports.subset)
    (image,) = m["images"]
    assert image["platforms"] == ["linux/amd64"] and image["source_digest"] != image["digest"], image
    out = exports.workdir / "subset-layout"
    assert_accepted(read(exports.subset, exports.pub, "--extract", str(out)))
    files = tree(out)
    assert files == untar_stream(exports.subset)
    assert_layout(files)
    index = json.loads(files[f"blobs/sha256/{image['digest'].removeprefix('sha256:')}"])
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["amd64"], index
    assert f"blobs/sha256/{image['source_digest'].removeprefix('sha256:')}" not in files


def test_delta_since_the_full_bundle(exports: Exports, full_layout: Path) -> None:
    m = manifest_of(exports.delta)
    full = manifest_of(exports.full)
    assert [(b["kind"], b["id"]) for b in m["base"]] == [("bundle", full["bundle_id"])]
    relied = {r["digest"] for r in m["relies_on"]}
    assert relied and digest_of(NEW_LAYER) in {b["digest"] for b in m["blobs"]}
    assert m["images"][0]["digest"] == exports.new_digest

    # alone, the reader accepts it and says what it lacks
    v = read(exports.delta, exports.pub)
    assert_accepted(v)
    assert f"delta: relies on {len(relied)} blob(s); {len(relied)} not found" in " ".join(v.notes), v.output

    # with the full bundle's layout as the base, the extracted layout is complete
    out = exports.workdir / "delta-layout"
    v = read(exports.delta, exports.pub, "--base-layout", str(full_layout), "--extract", str(out))
    assert_accepted(v)
    assert f"delta: relies on {len(relied)} blob(s); 0 not found" in " ".join(v.notes), v.output
    files = tree(out)
    untarred = untar_stream(exports.delta)
    assert {n: d for n, d in files.items() if n in untarred} == untarred
    assert set(files) - set(untarred) == {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in relied}
    assert_layout(files)
    for image in m["images"]:
        for d in image["manifests"] + image["blobs"]:
            assert f"blobs/sha256/{d.removeprefix('sha256:')}" in files, (image["repository"], d)

    # section 10.1: every layer the full bundle delivered is left out, and only those (configs never are)
    delivered = {b["digest"] for b in full["blobs"]}
    layers = set()
    for image in m["images"]:
        for d in image["manifests"]:
            doc = json.loads(files[f"blobs/sha256/{d.removeprefix('sha256:')}"])
            layers |= {x["digest"] for x in doc.get("layers", [])}
    assert relied == layers & delivered and digest_of(NEW_LAYER) in layers - delivered


# --------------------------------------------------------------------------- refused


def test_a_flipped_byte_in_a_chunk_is_refused(exports: Exports, tmp_path: Path) -> None:
    bundle = copy_bundle(exports.subset, tmp_path / "bundle")  # no parity to rebuild it from
    chunk = manifest_of(bundle)["chunks"][0]["name"]
    flip_byte(bundle / chunk, 1000)
    assert_refused(read(bundle, exports.pub), f"missing or damaged chunks: ['{chunk}']")


def test_a_damaged_blob_is_refused_even_when_the_chunks_are_signed(exports: Exports, tmp_path: Path) -> None:
    """A byte of the large layer flipped and the chunk's sha256 signed again: the stream itself is checked."""
    bundle = copy_bundle(exports.full, tmp_path / "bundle")
    m = manifest_of(bundle)
    large = max(m["blobs"], key=lambda b: b["size"])
    offset = large["offset"] + large["frames"][0] // 2
    index, at = divmod(offset, m["chunk_size"])
    flip_byte(bundle / m["chunks"][index]["name"], at)
    m["chunks"][index]["sha256"] = sha256_hex((bundle / m["chunks"][index]["name"]).read_bytes())
    del m["parity"]  # its chunks were computed from the undamaged data
    for name in ("parity-000000-000.bin", "parity-000000-001.bin"):
        (bundle / name).unlink()
    resign(bundle, exports.key, m)
    v = read(bundle, exports.pub)
    assert_refused(v, "blobs/sha256/")
    assert large["digest"].removeprefix("sha256:") in v.doc["error"], v.output


def test_an_edited_manifest_is_refused(exports: Exports, tmp_path: Path) -> None:
    bundle = copy_bundle(exports.full, tmp_path / "bundle")
    m = manifest_of(bundle)
    m["images"][0]["tag"] = "9.9"
    (bundle / "manifest.json").write_bytes((json.dumps(m, indent=1) + "\n").encode())
    assert_refused(read(bundle, exports.pub), "signature does not verify")


def test_an_untrusted_key_is_refused(exports: Exports, tmp_path: Path) -> None:
    raw = bytes(nacl.signing.SigningKey.generate().verify_key)
    other = tmp_path / "other.pub"
    other.write_text(json.dumps({"type": "airgap-ed25519-public-key", "version": 1,
                                 "key_id": "ed25519:" + sha256_hex(raw)[:16],
                                 "public_key": base64.b64encode(raw).decode()}))
    assert_refused(read(exports.full, other), "not a trusted key")
