"""`airgap import` under faults, against the real registry (Debian's docker-registry, distribution 2.8).

Every case checks the same four things: a non-zero exit with ONE ``airgap: error:`` line on stderr that
names what went wrong (the chunk, the registry, the image) and no traceback; nothing corrupt committed in
the target (HEAD requests on every blob, manifest and tag the bundle names); and that running the same
command again, once the cause is fixed, completes with every image's digest equal to the source's
(skopeo).

What distribution 2.8 does with an upload session after the client was killed (checked in
``test_sigkill_at_several_moments``):

* Every upload ``Location`` carries ``_state``: base64url of a 32-byte HMAC (keyed by ``http.secret``)
  followed by JSON ``{"Name", "UUID", "Offset", "StartedAt"}``. The client cannot make one up.
* A request on an upload (``GET`` status, ``PATCH``, ``PUT``) is served only when the size of the upload's
  ``data`` file equals the ``Offset`` in its ``_state``; otherwise the registry logs "upload resumed at
  wrong offest: <size> != <offset>" and answers ``404 BLOB_UPLOAD_INVALID`` without a ``Range`` header
  (the upload directory is left behind, not cancelled; a ``GET`` without ``_state`` is also ``404
  BLOB_UPLOAD_INVALID``, "invalid secret").
* A client killed during a ``PATCH`` leaves the bytes that had reached the registry in ``data`` (all of
  them, when the 1 MiB body already sat in socket buffers: the proxy delivers it and the registry accepts
  the PATCH whose answer nobody reads), while the newest ``Location`` the client saw (and journaled) still
  has the old offset. Such a session can never be continued; the import must notice (its ``GET`` answers
  404) and open a new one.
* A client killed *between* requests (its last PATCH answered and journaled, the next one not yet
  received by the registry) leaves a session that ``GET`` reports as ``204`` with ``Range: 0-<offset-1>``,
  and the rerun must continue it: same upload UUID, no new ``POST``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from conftest import AIRGAP, FaultProxyFactory, RegistryFactory, Run, RunAirgap, require_tools, started
from harness import FaultProxy, RegistryServer, skopeo_digest, start_registry

from airgap.journal import ImportJournal
from airgap.model.bundle import BundleImage, BundleManifest
from airgap.signing import load_private_key, sign
from scripts.demo_images import DEMO_IMAGE_NAMES

MiB = 1024 * 1024
PASSWORD = "s3cret-pass"
ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
UPLOAD_LINE = re.compile(r"^(?P<method>[A-Z]+) /v2/(?P<repo>.+?)/blobs/uploads/(?P<uuid>[0-9a-fA-F-]{36})?"
                         r"(?:\?(?P<query>\S*))?$")
MANIFEST_PUT = re.compile(r"^PUT /v2/(?P<repo>.+?)/manifests/(?P<ref>[^?\s]+)")
EXIT_REGISTRY, EXIT_BUNDLE, EXIT_INCOMPLETE = 5, 6, 8  # RegistryError, BundleError/SignatureError, ImportIncomplete


# --------------------------------------------------------------------------- bundles (built once per module)


@dataclass
class Bundle:
    """An exported bundle: its directory, the signing key, its manifest, and the source's digests."""

    dir: Path
    key: Path
    manifest: BundleManifest
    source: RegistryServer
    digests: dict[str, str]  # "demo/large:1.0" -> the source's digest (skopeo)
    pristine: Path = field(default=Path())  # an untouched copy, to restore damaged files from

    @property
    def pub(self) -> Path:
        return Path(f"{self.key}.pub")

    def image(self, name: str) -> BundleImage:
        return next(i for i in self.manifest.images if f"{i.repository}:{i.tag}" == name)

    def name_of(self, image: BundleImage) -> str:
        return f"{image.repository}:{image.tag}"

    @property
    def big_layer(self) -> str:
        """The digest of the largest blob (the layer of demo/large)."""
        return str(max(self.manifest.blobs, key=lambda b: b.size).digest)

    def chunk(self, index: int) -> Path:
        return self.dir / self.manifest.chunks[index].name

    def copy_to(self, dest: Path) -> Bundle:
        shutil.copytree(self.dir, dest)
        return replace(self, dir=dest, pristine=self.dir)


def _cli(env: dict[str, str], *args: str) -> Run:
    proc = subprocess.run(AIRGAP + list(args), capture_output=True, text=True, env=env, timeout=300, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _make_bundle(workdir: Path, layout: Path, *extra: str) -> Iterator[Bundle]:
    """Push ``layout`` into a fresh source registry, then ``airgap keygen`` and ``airgap export`` (1 MiB chunks,
    and the ``extra`` options)."""
    from scripts.push_layout import push_layout

    require_tools()
    env = {**os.environ, "DOCKER_CONFIG": str(workdir / "docker-config"), "HOME": str(workdir / "home"),
           "XDG_RUNTIME_DIR": str(workdir / "run"), "AIRGAP_RETRY_BASE_DELAY": "0.05"}
    env.pop("REGISTRY_AUTH_FILE", None)
    source = start_registry(workdir / "registries")
    try:
        push_layout(layout, source.host)
        key = workdir / "keys" / "signing.key"
        key.parent.mkdir()
        r = _cli(env, "keygen", str(key))
        assert r.returncode == 0, r.output
        out = workdir / "bundle"
        r = _cli(env, "export", *[source.ref(n) for n in DEMO_IMAGE_NAMES], "--output", str(out), "--key", str(key),
                 "--chunk-size", "1MiB", *extra)
        assert r.returncode == 0, r.output
        manifest = BundleManifest.parse((out / "manifest.json").read_bytes())
        digests = {n: skopeo_digest(source.ref(n)) for n in DEMO_IMAGE_NAMES}
        yield Bundle(out, key, manifest, source, digests, pristine=out)
    finally:
        source.close()


@pytest.fixture(scope="module")
def bundle_2m(tmp_path_factory: pytest.TempPathFactory, demo_layout: tuple[Path, list[Any]]) -> Iterator[Bundle]:
    """The demo images (2 MiB large layer): 3 chunks; chunk 0 holds every small image, 1 and 2 only demo/large."""
    yield from _make_bundle(tmp_path_factory.mktemp("bundle-2m"), demo_layout[0])


@pytest.fixture(scope="module")
def bundle_12m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    """The demo images with a 12 MiB large layer: 13 chunks."""
    from scripts.demo_images import build_demo_layout

    workdir = tmp_path_factory.mktemp("bundle-12m")
    build_demo_layout(workdir / "layout", large_layer_size=12 * MiB)
    yield from _make_bundle(workdir, workdir / "layout")


@pytest.fixture
def bundle(bundle_2m: Bundle, tmp_path: Path) -> Bundle:
    """A private copy of the 2 MiB bundle, free to damage."""
    return bundle_2m.copy_to(tmp_path / "bundle")


# --------------------------------------------------------------------------- helpers


def import_args(bundle: Bundle, to: str, state: Path, *extra: str, directory: Path | None = None) -> list[str]:
    return ["import", str(directory or bundle.dir), "--to", to, "--pubkey", str(bundle.pub), "--state-dir",
            str(state), *extra]


def assert_error_line(run: Run, *needles: str, exit_code: int | None = None) -> str:
    """A non-zero exit, exactly one ``airgap: error:`` line on stderr holding every needle, no traceback."""
    assert "Traceback" not in run.output, run.output
    assert run.returncode != 0, run.output
    if exit_code is not None:
        assert run.returncode == exit_code, f"exit {run.returncode}, expected {exit_code}:\n{run.output}"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{run.stderr}"
    line = lines[0]
    assert line.startswith("airgap: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_complete(target: RegistryServer, bundle: Bundle, names: list[str] | None = None, run: Run | None = None,
                    creds: str | None = None) -> None:
    """Every image (or ``names``) is in ``target`` with the source's digest."""
    if run is not None:
        assert run.returncode == 0, run.output
        assert "Traceback" not in run.output, run.output
    for name in DEMO_IMAGE_NAMES if names is None else names:
        assert skopeo_digest(target.ref(name), creds=creds) == bundle.digests[name], name


@dataclass
class Inventory:
    """What a target holds of a bundle, found with HEAD requests."""

    blobs: set[tuple[str, str]]  # (repository, digest)
    manifests: set[tuple[str, str]]
    tags: dict[str, str]  # "repository:tag" -> digest

    @property
    def empty(self) -> bool:
        return not (self.blobs or self.manifests or self.tags)


def inventory(target: RegistryServer, manifest: BundleManifest, auth: tuple[str, str] | None = None) -> Inventory:
    inv = Inventory(set(), set(), {})
    with target.client(auth=auth) as client:
        for img in manifest.images:
            repo = img.repository
            for d in img.blobs:
                if client.head(f"/v2/{repo}/blobs/{d}").status_code == 200:
                    inv.blobs.add((repo, str(d)))
            for d in img.manifests:
                if client.head(f"/v2/{repo}/manifests/{d}", headers={"Accept": ACCEPT}).status_code == 200:
                    inv.manifests.add((repo, str(d)))
            if img.tag:
                resp = client.head(f"/v2/{repo}/manifests/{img.tag}", headers={"Accept": ACCEPT})
                if resp.status_code == 200:
                    inv.tags[f"{repo}:{img.tag}"] = resp.headers.get("docker-content-digest", "")
    return inv


def catalog(target: RegistryServer, auth: tuple[str, str] | None = None) -> list[str]:
    with target.client(auth=auth) as client:
        resp = client.get("/v2/_catalog")
        resp.raise_for_status()
        return list(resp.json().get("repositories") or [])


def writes(requests: list[str]) -> list[str]:
    return [r for r in requests if r.split(" ", 1)[0] in ("POST", "PUT", "PATCH", "DELETE")]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tree_state(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int, str]]:
    """(size, mtime, sha256) of every file under ``root`` outside ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip) or not p.is_file() or p.is_symlink():
            continue
        st = p.stat()
        out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def resign(bundle: Bundle, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit ``manifest.json`` as JSON and sign it again with the bundle's own key, so the signature passes."""
    obj = json.loads((bundle.dir / "manifest.json").read_bytes())
    edit(obj)
    data = (json.dumps(obj, indent=1, ensure_ascii=True) + "\n").encode()
    (bundle.dir / "manifest.json").write_bytes(data)
    (bundle.dir / "manifest.json.sig").write_bytes(sign(load_private_key(bundle.key, passphrase=None), data))


def restore(bundle: Bundle) -> None:
    for p in bundle.dir.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    for p in bundle.pristine.iterdir():
        shutil.copy2(p, bundle.dir / p.name)


# --------------------------------------------------------------------------- 1. trust


def _other_bundle_sig(bundle: Bundle, run_airgap: RunAirgap, tmp_path: Path) -> bytes:
    other = tmp_path / "other-bundle"
    r = run_airgap("export", bundle.source.ref("demo/base-a:1.0"), "--output", str(other), "--key", str(bundle.key),
                   "--chunk-size", "1MiB")
    assert r.returncode == 0, r.output
    return (other / "manifest.json.sig").read_bytes()


@pytest.mark.parametrize("case", ["wrong-pubkey", "no-signature", "edited-one-byte", "edited-json-broken",
                                  "signature-of-other-bundle"])
def test_untrusted_bundle_is_refused_before_any_push(case: str, bundle: Bundle, registry: RegistryServer,
                                                     fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                     tmp_path: Path) -> None:
    proxy = fault_proxy_factory(registry.host)  # to see that not a single request reaches the target
    state = tmp_path / "state"
    args = import_args(bundle, proxy.host, state)
    mpath, spath = bundle.dir / "manifest.json", bundle.dir / "manifest.json.sig"
    if case == "wrong-pubkey":
        other = tmp_path / "other.key"
        assert run_airgap("keygen", str(other)).returncode == 0
        args[args.index(str(bundle.pub))] = f"{other}.pub"
        needles: tuple[str, ...] = (bundle.manifest.key_id, "not trusted")
    elif case == "no-signature":
        spath.unlink()
        needles = ("no manifest.json.sig", "unsigned")
    elif case == "edited-one-byte":
        # one hex digit of a chunk's sha256: still valid JSON, so only the signature can catch it
        data = mpath.read_bytes()
        at = data.index(bundle.manifest.chunks[1].sha256.encode()) + 10
        mpath.write_bytes(data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:])
        needles = ("manifest.json does not match its signature",)
    elif case == "edited-json-broken":
        data = mpath.read_bytes()  # the signature is checked before the JSON is parsed
        mpath.write_bytes(data[:1] + b"!" + data[2:])
        needles = ("manifest.json does not match its signature",)
    else:
        spath.write_bytes(_other_bundle_sig(bundle, run_airgap, tmp_path))
        needles = ("manifest.json does not match its signature",)

    r = run_airgap(*args)
    assert_error_line(r, *needles, exit_code=EXIT_BUNDLE)
    assert proxy.requests == []
    assert catalog(registry) == []
    assert not (state / "imports").exists() or not any((state / "imports").iterdir())

    restore(bundle)
    r = run_airgap(*import_args(bundle, proxy.host, state))
    assert_complete(registry, bundle, run=r)


# --------------------------------------------------------------------------- 2. damaged chunks


def damage(case: str, b: Bundle) -> tuple[int, str]:
    """Damage the bundle; return the index of the damaged chunk and what the error calls the damage."""
    if case == "flip-chunk-1":  # the middle of the large layer
        flip_byte(b.chunk(1), MiB // 2)
        return 1, "is corrupt"
    if case == "flip-chunk-0":  # every image has data in chunk 0
        flip_byte(b.chunk(0), MiB // 2)
        return 0, "is corrupt"
    if case == "flip-in-a-manifest":  # a byte of demo/large's manifest (read while planning, before any blob)
        span = b.manifest.blob(b.image("demo/large:1.0").digest).span  # type: ignore[union-attr]
        at = span.offset + span.length // 2
        flip_byte(b.chunk(at // MiB), at % MiB)
        return at // MiB, "is corrupt"
    assert case == "truncated-last"
    os.truncate(b.chunk(len(b.manifest.chunks) - 1), b.chunk(len(b.manifest.chunks) - 1).stat().st_size // 2)
    return len(b.manifest.chunks) - 1, "is truncated"


@pytest.mark.parametrize("case", ["flip-chunk-1", "flip-chunk-0", "flip-in-a-manifest", "truncated-last"])
def test_damaged_chunk_commits_nothing_of_it(case: str, bundle: Bundle, registry: RegistryServer,
                                             run_airgap: RunAirgap, tmp_path: Path) -> None:
    index, kind = damage(case, bundle)
    m = bundle.manifest
    chunk = m.chunks[index].name
    hit = m.images_affected({index})
    assert hit
    state = tmp_path / "state"

    r = run_airgap(*import_args(bundle, registry.host, state))
    first = bundle.name_of(hit[0])
    assert_error_line(r, f"{len(hit)} of {len(m.images)} images not imported", f"{registry.host}/{first}",
                      f"chunk {chunk} {kind}", f"`airgap verify {bundle.dir} --pubkey ",
                      "names every damaged chunk", exit_code=EXIT_INCOMPLETE)

    inv = inventory(registry, m)
    bad = {str(b.digest) for b in m.blobs if index in m.chunks_for(b.span)}
    assert not {d for _, d in inv.blobs | inv.manifests} & bad, "a blob or manifest from the damaged chunk"
    for img in hit:  # no manifest, no tag for an image whose data lies in the chunk
        assert not {(img.repository, str(d)) for d in img.manifests} & inv.manifests
        assert bundle.name_of(img) not in inv.tags
        assert f"FAILED    {registry.host}/{bundle.name_of(img)}" in r.stdout
    whole = [n for n in DEMO_IMAGE_NAMES if bundle.image(n) not in hit]
    assert_complete(registry, bundle, whole)  # keep going: the images that do not touch the chunk are complete

    restore(bundle)
    r = run_airgap(*import_args(bundle, registry.host, state))
    assert_complete(registry, bundle, run=r)


@pytest.mark.parametrize("case", ["missing", "renamed"])
def test_missing_chunk_refuses_and_names_what_can_go_now(case: str, bundle: Bundle, registry: RegistryServer,
                                                         run_airgap: RunAirgap, tmp_path: Path) -> None:
    m = bundle.manifest
    index = 1 if case == "missing" else len(m.chunks) - 1
    chunk = bundle.chunk(index)
    if case == "missing":
        chunk.unlink()
    else:
        chunk.rename(bundle.dir / "renamed.bin")
    hit = m.images_affected({index})
    assert [bundle.name_of(i) for i in hit] == ["demo/large:1.0"]
    state = tmp_path / "state"

    r = run_airgap(*import_args(bundle, registry.host, state))
    line = assert_error_line(r, f"({chunk.name})", "needed by " + hit[0].reference, exit_code=EXIT_BUNDLE)
    now = line.split("can be imported now with --image:", 1)[1]
    assert sorted(x.strip() for x in now.split(",")) == sorted(i.reference for i in m.images if i not in hit)
    assert inventory(registry, m).empty  # refused before the first push

    # an image that does not need the chunk can go now
    r = run_airgap(*import_args(bundle, registry.host, state, "--image", "demo/base-a:1.0"))
    assert_complete(registry, bundle, ["demo/base-a:1.0"], run=r)
    assert "demo/large:1.0" not in inventory(registry, m).tags

    restore(bundle)
    r = run_airgap(*import_args(bundle, registry.host, state))
    assert "nothing to do" not in r.stdout
    assert_complete(registry, bundle, run=r)


# --------------------------------------------------------------------------- 3. hostile chunk names


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", "chunk-000000.bin\x00x", "manifest.json.sig",
                                  "chunk-000000.bin\n"])
def test_hostile_chunk_name_in_a_signed_manifest(name: str, bundle: Bundle, registry: RegistryServer,
                                                 fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                 tmp_path: Path) -> None:
    if name == "/abs":
        name = str(tmp_path / "abs-chunk")
    # decoys holding the real chunk's bytes where the hostile name points: using one would make the import work
    chunk0 = bundle.chunk(0).read_bytes()
    for decoy in (bundle.dir.parent / "evil", bundle.dir / "a" / "b", tmp_path / "abs-chunk"):
        decoy.parent.mkdir(exist_ok=True)
        decoy.write_bytes(chunk0)

    def edit(obj: dict[str, Any]) -> None:
        obj["chunks"][0]["name"] = name

    resign(bundle, edit)
    proxy = fault_proxy_factory(registry.host)
    state = tmp_path / "state"
    before = tree_state(tmp_path, skip=(bundle.dir, state, registry.workdir.parent))

    r = run_airgap(*import_args(bundle, proxy.host, state))
    assert_error_line(r, "manifest.json", repr(name).strip("'\""), exit_code=EXIT_BUNDLE)
    assert "unsafe chunk file" in r.stderr or "reserved" in r.stderr
    assert proxy.requests == []
    assert tree_state(tmp_path, skip=(bundle.dir, state, registry.workdir.parent)) == before

    restore(bundle)
    r = run_airgap(*import_args(bundle, proxy.host, state))
    assert_complete(registry, bundle, run=r)


@pytest.mark.parametrize(("field", "value"), [("repository", "../x"), ("repository", "demo/../x"),
                                              ("repository", "demo/base-a\n"),
                                              ("tag", "1.0\n")])
def test_hostile_image_name_in_a_signed_manifest(field: str, value: str, bundle: Bundle, registry: RegistryServer,
                                                 fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                 tmp_path: Path) -> None:
    def edit(obj: dict[str, Any]) -> None:
        obj["images"][0][field] = value

    resign(bundle, edit)
    proxy = fault_proxy_factory(registry.host)
    r = run_airgap(*import_args(bundle, proxy.host, tmp_path / "state"))
    assert_error_line(r, f"images[0].{field}", exit_code=EXIT_BUNDLE)
    assert proxy.requests == []


@pytest.mark.parametrize("bundle_id", ["../../evil", "a/b", "x\x00y", "." * 40, "b" * 129])
def test_hostile_bundle_id_is_refused_before_anything_is_written(bundle_id: str, bundle: Bundle,
                                                                 registry: RegistryServer, run_airgap: RunAirgap,
                                                                 tmp_path: Path) -> None:
    """The bundle id names the journal file and is a delta's base id: one outside their grammar (section 8 of
    docs/bundle-format.md) is refused, signed or not, before a file is written or a request is made. (The
    journal's name is made of safe characters all the same.)"""
    def edit(obj: dict[str, Any]) -> None:
        obj["bundle_id"] = bundle_id

    resign(bundle, edit)
    state = tmp_path / "work" / "state"  # "../../evil" from state/imports would land in tmp_path/work
    state.parent.mkdir()
    before = tree_state(tmp_path, skip=(bundle.dir, registry.workdir.parent))
    r = run_airgap(*import_args(bundle, registry.host, state))
    assert_error_line(r, "manifest.bundle_id is not 1 to 128 characters", exit_code=EXIT_BUNDLE)
    assert not [p for p in state.rglob("*") if p.name != "audit.jsonl"]
    assert tree_state(tmp_path, skip=(bundle.dir, state, registry.workdir.parent)) == before
    assert registry.client().get("/v2/_catalog").json()["repositories"] == []


# --------------------------------------------------------------------------- 4. several media


def test_chunks_on_two_media(bundle: Bundle, registry: RegistryServer, run_airgap: RunAirgap,
                             tmp_path: Path) -> None:
    media2 = tmp_path / "media2"
    media2.mkdir()
    moved = [bundle.chunk(i) for i in range(1, len(bundle.manifest.chunks))]
    for p in moved:
        p.rename(media2 / p.name)
    state = tmp_path / "state"

    r = run_airgap(*import_args(bundle, registry.host, state))
    line = assert_error_line(r, f"{len(moved)} chunks missing", *(p.name for p in moved), "demo/large:1.0",
                             "--media", exit_code=EXIT_BUNDLE)
    assert "demo/base-a:1.0" in line.split("can be imported now", 1)[1]
    assert inventory(registry, bundle.manifest).empty
    # verify of the first medium alone points at the others too, not only at the source bundle
    r = run_airgap("verify", str(bundle.dir), "--pubkey", str(bundle.pub))
    line = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 7 and "pass each other one with --media DIR" in line, r.output

    r = run_airgap(*import_args(bundle, registry.host, state, "--media", str(media2)))
    assert_complete(registry, bundle, run=r)


# --------------------------------------------------------------------------- 5. the target refuses


def test_401_then_credentials(bundle: Bundle, htpasswd_registry: RegistryServer, run_airgap: RunAirgap,
                              tmp_path: Path) -> None:
    target, state = htpasswd_registry, tmp_path / "state"
    auth = ("alice", PASSWORD)
    r = run_airgap(*import_args(bundle, target.host, state))
    line = assert_error_line(r, target.host, "401", exit_code=EXIT_REGISTRY)
    assert f"airgap login {target.host}" in line or "--username" in line
    assert inventory(target, bundle.manifest, auth=auth).empty

    r = run_airgap(*import_args(bundle, target.host, state, "--username", "alice", "--password-stdin"),
                   input=PASSWORD + "\n")
    assert PASSWORD not in r.output
    assert_complete(target, bundle, run=r, creds=target.creds)


def test_403_on_writes_then_allowed(bundle: Bundle, registry: RegistryServer, fault_proxy_factory: FaultProxyFactory,
                                    run_airgap: RunAirgap, tmp_path: Path) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.http_error(403, times=1_000_000, match=r"^(PUT|POST) ")
    state = tmp_path / "state"
    r = run_airgap(*import_args(bundle, proxy.host, state))
    line = assert_error_line(r, proxy.host, "403", "DENIED", exit_code=EXIT_REGISTRY)
    assert "ask the registry's admin" in line
    assert proxy.faults_injected >= 1
    assert inventory(registry, bundle.manifest).empty and catalog(registry) == []

    proxy.clear()
    r = run_airgap(*import_args(bundle, proxy.host, state))
    assert_complete(registry, bundle, run=r)


def test_a_read_only_registry_is_named_as_such(bundle: Bundle, registry_factory: RegistryFactory,
                                              run_airgap: RunAirgap, tmp_path: Path) -> None:
    """distribution in maintenance mode answers pushes 405: the line says the registry takes no pushes."""
    target = registry_factory(extra_config={"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    r = run_airgap(*import_args(bundle, target.host, tmp_path / "state"))
    line = assert_error_line(r, target.host, "405", exit_code=EXIT_REGISTRY)
    assert "the registry takes no pushes (read-only, or in maintenance mode)" in line
    assert catalog(target) == []


# --------------------------------------------------------------------------- 6. the target goes away


def _popen(airgap_env: dict[str, str], args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(AIRGAP + args, env=airgap_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str] | None = None, timeout: float = 60) -> bool:
    """Poll ``cond`` until true (True), or until ``proc`` ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("timed out")


def test_target_stops_mid_run_then_comes_back(bundle: Bundle, registry: RegistryServer,
                                              fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                              airgap_env: dict[str, str], tmp_path: Path) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.rate_limit(1 * MiB)  # the 2 MiB layer takes 2 s
    state = tmp_path / "state"
    args = import_args(bundle, proxy.host, state)
    proc = _popen(airgap_env, args)
    try:
        started = _wait_for(lambda: any(re.match(r"^(PUT|PATCH) /v2/demo/large/blobs/uploads/", x)
                                        for x in list(proxy.requests)), proc)
        assert started, proc.communicate()
        time.sleep(0.3)
        registry.stop()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = Run(proc.returncode, out, err)
    assert_error_line(r, proxy.host, exit_code=EXIT_REGISTRY)

    registry.start()
    inv = inventory(registry, bundle.manifest)
    assert ("demo/large", bundle.big_layer) not in inv.blobs and "demo/large:1.0" not in inv.tags
    proxy.rate_limit(None)
    r = run_airgap(*args)
    assert_complete(registry, bundle, run=r)


# --------------------------------------------------------------------------- 7. kill -9 at several moments


@dataclass
class UploadRequest:
    method: str
    repo: str
    uuid: str | None
    digest: str | None
    mount: str | None


def parse_upload(line: str) -> UploadRequest | None:
    m = UPLOAD_LINE.match(line)
    if not m:
        return None
    query = parse_qs(m["query"] or "")
    return UploadRequest(m["method"], m["repo"], m["uuid"], (query.get("digest") or [None])[0],
                         (query.get("mount") or [None])[0])


def _state_of(location: str) -> dict[str, Any]:
    """The JSON inside distribution's ``_state`` (after its 32-byte HMAC)."""
    raw = parse_qs(urlsplit(location).query)["_state"][0]
    data = base64.urlsafe_b64decode(unquote(raw) + "=" * (-len(raw) % 4))
    result: dict[str, Any] = json.loads(data[32:])
    return result


def _wait_idle(proxy: FaultProxy, timeout: float = 20) -> None:
    """Wait until the proxy has finished every connection (a killed client's PATCH body is still being
    delivered to the registry for a moment after the kill)."""
    deadline = time.monotonic() + timeout
    while proxy._threads and time.monotonic() < deadline:  # the harness has no public "idle"
        time.sleep(0.01)
    time.sleep(0.05)


@dataclass
class KillReport:
    mode: str
    at: float
    present: Inventory
    session: tuple[str, int] | None  # journal's session for the big layer: location, offset
    held: int | None  # size of that session's data file in the registry
    resumable: bool


def _patches_for(requests: list[str], repo: str) -> list[UploadRequest]:
    return [u for u in map(parse_upload, requests) if u and u.method == "PATCH" and u.repo == repo]


def run_kill_rounds(bundle: Bundle, target: RegistryServer, proxy: FaultProxy, airgap_env: dict[str, str],
                    run_airgap: RunAirgap, tmp_path: Path, modes: list[str], seed: int) -> list[KillReport]:
    """Start the import, SIGKILL it at each mode's moment, check the next run's requests; then finish it."""
    rng = random.Random(seed)
    m = bundle.manifest
    large = bundle.image("demo/large:1.0")
    big = bundle.big_layer
    state = tmp_path / "state"
    args = import_args(bundle, proxy.host, state, "--upload-chunk-size", "1MiB", "--retries", "20")
    rate = 4 * MiB
    reports: list[KillReport] = []
    last_patch_uuid: str | None = None

    def check_run(requests: list[str], after: KillReport) -> None:
        """The run after a kill: nothing that HEAD found committed is uploaded again; a continuable session
        of the big layer is continued, a dead one is asked about and replaced."""
        uploads = [u for u in map(parse_upload, requests) if u]
        present_digests = {d for _, d in after.present.blobs}
        for u in uploads:
            if u.method == "PUT" and u.digest:
                assert u.digest not in present_digests, f"{u.digest} uploaded again after HEAD found it: {u}"
            if u.method == "POST" and u.mount:
                assert (u.repo, u.mount) not in after.present.blobs, f"mounted again: {u}"
        for line in requests:
            mp = MANIFEST_PUT.match(line)
            if mp and mp["ref"].startswith("sha256:"):
                assert (mp["repo"], mp["ref"]) not in after.present.manifests, f"manifest pushed again: {line}"
        # plain POSTs open sessions: no more of them per repository than that repository has blobs missing
        for img in m.images:
            missing = sum(1 for d in img.blobs if (img.repository, str(d)) not in after.present.blobs)
            posts = sum(1 for u in uploads if u.method == "POST" and u.repo == img.repository and not u.mount)
            assert posts <= missing, f"{img.repository}: {posts} sessions opened for {missing} missing blobs"
        sends = [u for u in uploads if u.repo == large.repository
                 and (u.method == "PATCH" or (u.method == "PUT" and u.digest == big))]  # the big layer's bytes
        if (large.repository, big) in after.present.blobs:
            assert not sends, "the committed big layer was sent again"
        elif after.session is not None and sends:
            old_uuid = urlsplit(after.session[0]).path.rsplit("/", 1)[1]
            asked = [x for x in requests if x.startswith(f"GET /v2/{large.repository}/blobs/uploads/{old_uuid}")]
            assert asked, "the rerun did not ask the registry about the journaled session"
            if after.resumable:
                assert sends[0].uuid == old_uuid, (
                    f"a continuable session ({after.held} bytes held) was not continued: first {sends[0].method} "
                    f"to {sends[0].uuid}, the killed run's last PATCH went to {old_uuid}")
            else:
                assert sends[0].uuid != old_uuid

    previous: KillReport | None = None
    for mode in modes:
        proxy.clear()
        proxy.rate_limit(rate)
        proxy.reset_counters()
        proc = _popen(airgap_env, args)
        t0 = time.monotonic()
        try:
            if mode == "delay":  # anywhere: planning, HEADs, small blobs, the first PATCHes
                time.sleep(rng.uniform(0.2, 1.5))
                reached = proc.poll() is None
            elif mode == "mid-patch":  # while a PATCH of the big layer is on its way
                n = rng.randint(1, 4)
                reached = _wait_for(lambda n=n: len(_patches_for(list(proxy.requests), large.repository)) >= n, proc)
                time.sleep(rng.uniform(0.0, 0.2))
            elif mode == "between-patches":  # the next PATCH is refused before it reaches the registry
                n = rng.randint(1, 4)
                reached = _wait_for(lambda n=n: len(_patches_for(list(proxy.requests), large.repository)) >= n, proc)
                proxy.http_error(503, times=1_000_000, match=rf"^PATCH /v2/{re.escape(large.repository)}/blobs/")
                reached = reached and _wait_for(lambda: proxy.faults_injected >= 1, proc)
            else:  # "before-final-put": every PATCH is acknowledged, the closing PUT never reaches the registry
                assert mode == "before-final-put"
                proxy.http_error(503, times=1_000_000,
                                 match=rf"^PUT /v2/{re.escape(large.repository)}/blobs/uploads/\S*{big[7:]}")
                reached = _wait_for(lambda: proxy.faults_injected >= 1, proc)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), f"{mode}: the run failed by itself:\n{out}{err}"
        at = time.monotonic() - t0
        _wait_idle(proxy)
        requests = list(proxy.requests)
        if previous is not None:
            check_run(requests, previous)
        patches = _patches_for(requests, large.repository)
        if patches:
            last_patch_uuid = patches[-1].uuid
        if not reached and proc.returncode == 0:
            print(f"  {mode}: the run finished before the kill")
            previous = None
            break
        # what the kill left behind
        present = inventory(target, m)
        journal = ImportJournal.open(state, m.bundle_id, proxy.host)
        session = journal.sessions.get((large.repository, big))
        held = None
        resumable = False
        if session is not None and (large.repository, big) not in present.blobs:
            uuid = urlsplit(session[0]).path.rsplit("/", 1)[1]
            assert uuid == last_patch_uuid, "the journal does not hold the session the client was PATCHing"
            assert _state_of(session[0])["Offset"] == session[1]
            data = target.storage / "docker/registry/v2/repositories" / large.repository / "_uploads" / uuid / "data"
            held = data.stat().st_size if data.exists() else None
            resumable = held == session[1]
            # what distribution 2.8 says about that session (a GET does not change it)
            with target.client() as client:
                status = client.get(urlsplit(session[0])._replace(scheme="", netloc="").geturl())
            if resumable:
                assert (status.status_code, status.headers.get("range")) == (204, f"0-{session[1] - 1}")
            else:
                assert status.status_code == 404 and "range" not in status.headers
                assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        if mode in ("between-patches", "before-final-put"):
            assert session is not None and resumable, (
                f"killed between requests, yet the journaled session is not continuable: the registry holds {held} "
                f"bytes, the journal {session}")
        report = KillReport(mode, at, present, session, held, resumable)
        print(f"  kill {len(reports) + 1}: {mode} after {at:.2f}s; big layer "
              f"{'committed' if (large.repository, big) in present.blobs else 'not committed'}; journaled session "
              f"at {session[1] if session else None}, registry holds {held} -> "
              f"{'continuable' if resumable else 'not continuable'}")
        reports.append(report)
        previous = report

    # the last run, no faults left
    proxy.clear()
    proxy.reset_counters()
    r = run_airgap(*args)
    if previous is not None:
        check_run(list(proxy.requests), previous)
        # the checks above read digests out of the request lines: make sure they found some
        assert previous.present.blobs or any(u.digest for u in map(parse_upload, proxy.requests) if u)
    assert_complete(target, bundle, run=r)
    again = run_airgap(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
    return reports


def _seed() -> int:
    seed = int(os.environ.get("AIRGAP_KILL_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"kill seed: {seed} (rerun with AIRGAP_KILL_SEED={seed})")
    return seed


def test_sigkill_at_several_moments(bundle_12m: Bundle, registry: RegistryServer,
                                    fault_proxy_factory: FaultProxyFactory, airgap_env: dict[str, str],
                                    run_airgap: RunAirgap, tmp_path: Path) -> None:
    seed = _seed()
    proxy = fault_proxy_factory(registry.host)
    reports = run_kill_rounds(bundle_12m, registry, proxy, airgap_env, run_airgap, tmp_path,
                              ["delay", "mid-patch", "between-patches", "mid-patch"], seed)
    assert len(reports) == 4
    assert any(r.resumable for r in reports)


def test_sigkill_before_the_closing_put_continues(bundle_12m: Bundle, registry: RegistryServer,
                                                  fault_proxy_factory: FaultProxyFactory, airgap_env: dict[str, str],
                                                  run_airgap: RunAirgap, tmp_path: Path) -> None:
    proxy = fault_proxy_factory(registry.host)
    reports = run_kill_rounds(bundle_12m, registry, proxy, airgap_env, run_airgap, tmp_path, ["before-final-put"],
                              _seed())
    assert [r.resumable for r in reports] == [True]


def test_a_token_that_dies_before_its_time_mid_upload_is_replaced_and_the_upload_continues(
        bundle_12m: Bundle, token_registry: RegistryServer, fault_proxy_factory: FaultProxyFactory,
        run_airgap: RunAirgap, tmp_path: Path) -> None:
    """The token service says a token lasts 300 s, but the registry refuses it after 3 s: a PATCH of a streamed
    upload cannot be sent again as it was, so the upload fetches a new token and resumes at the registry's offset
    (it failed with 'the registry refused these credentials')."""
    server = token_registry.token_server
    assert server is not None
    server.token_ttl = -57  # distribution allows 60 s of clock skew past exp: each token dies 3 s after it is made
    proxy = fault_proxy_factory(token_registry.host)
    proxy.rate_limit(2 * MiB)  # the 12 MiB layer takes about 6 s: several tokens die on the way
    r = run_airgap(*import_args(bundle_12m, proxy.host, tmp_path / "state", "--upload-chunk-size", "1MiB",
                                "--username", "alice", "--json"), env={"AIRGAP_PASSWORD": "s3cret-pass"})
    assert r.returncode == 0, r.output
    assert len(server.issued) > 2, server.issued
    for name, digest in bundle_12m.digests.items():
        assert skopeo_digest(f"{token_registry.host}/{name}", creds="alice:s3cret-pass") == digest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_patch_ends_the_patch_and_the_next_run_continues_the_session(
        sig: signal.Signals, bundle_12m: Bundle, registry: RegistryServer, fault_proxy_factory: FaultProxyFactory,
        airgap_env: dict[str, str], run_airgap: RunAirgap, tmp_path: Path) -> None:
    """distribution drops a session whose data a cut PATCH left longer than its last acknowledged offset, so a
    stop that cut the PATCH in flight would make the next run send the big layer again from byte 0."""
    large = bundle_12m.image("demo/large:1.0")
    big = bundle_12m.big_layer
    state = tmp_path / "state"
    proxy = fault_proxy_factory(registry.host)
    args = import_args(bundle_12m, proxy.host, state, "--upload-chunk-size", "1MiB")
    proxy.rate_limit(1 * MiB)  # a 1 MiB PATCH takes about a second
    with started(args, airgap_env) as proc:
        assert _wait_for(lambda: len(_patches_for(list(proxy.requests), large.repository)) >= 2, proc), \
            proc.communicate()
        time.sleep(0.3)  # inside the second PATCH
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "stopping: each upload in flight ends the part it is sending" in err and "Traceback" not in err
    assert err.rstrip().endswith("airgap: interrupted; run the same command again to resume"), err
    assert json.loads((state / "audit.jsonl").read_text().splitlines()[-1])["outcome"] == "interrupted"
    _wait_idle(proxy)
    sent = _patches_for(list(proxy.requests), large.repository)
    journal = ImportJournal.open(state, bundle_12m.manifest.bundle_id, proxy.host)
    session = journal.sessions.get((large.repository, big))
    assert session is not None and session[1] == len(sent) * MiB, (session, len(sent))  # every PATCH sent was ended
    uuid = urlsplit(session[0]).path.rsplit("/", 1)[1]
    data = registry.storage / "docker/registry/v2/repositories" / large.repository / "_uploads" / uuid / "data"
    assert data.stat().st_size == session[1]
    held = {d for _, d in inventory(registry, bundle_12m.manifest).blobs}
    proxy.clear()
    proxy.rate_limit(None)
    proxy.reset_counters()
    r = run_airgap(*args, "--json")
    assert_complete(registry, bundle_12m, run=r)
    rest = _patches_for(list(proxy.requests), large.repository)
    assert {u.uuid for u in rest} == {uuid}, "the rerun did not continue the session"
    size = max(b.size for b in bundle_12m.manifest.blobs)
    assert len(sent) + len(rest) == -(-size // MiB)  # each MiB sent once
    # the summary counts what this run sent: the rest of the big layer, and the blobs no repository held
    layers = {str(d) for img in bundle_12m.manifest.images for d in img.blobs} - held - {big}  # not manifests
    others = sum(b.size for b in bundle_12m.manifest.blobs if str(b.digest) in layers)
    assert json.loads(r.stdout)["bytes_uploaded"] == size - session[1] + others


def test_a_second_import_of_the_bundle_into_the_target_is_refused_while_the_first_runs(
        bundle: Bundle, registry: RegistryServer, fault_proxy_factory: FaultProxyFactory,
        airgap_env: dict[str, str], run_airgap: RunAirgap, tmp_path: Path) -> None:
    """Both would send everything; the second is refused (exit 2, one line) and the first completes. Another
    target is a different import and goes ahead."""
    proxy = fault_proxy_factory(registry.host)
    proxy.rate_limit(1 * MiB)
    state = tmp_path / "state"
    args = import_args(bundle, proxy.host, state)
    with started(args, airgap_env) as first:
        assert _wait_for(lambda: any(re.match(r"^(PUT|PATCH) /v2/.+/blobs/uploads/", x) for x in list(proxy.requests)),
                         first), first.communicate()
        second = run_airgap(*args)
        assert_error_line(second, f"another airgap run is importing bundle {bundle.manifest.bundle_id} into "
                                  f"{proxy.host}", exit_code=2)
        assert first.poll() is None, "the first run ended before the second started: no overlap was tested"
        other = run_airgap(*import_args(bundle, f"{registry.host}/other", state))
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert_complete(registry, bundle)
    assert other.returncode == 0, other.output


@pytest.mark.slow
def test_sigkill_twenty_rounds(bundle_12m: Bundle, registry: RegistryServer,
                               fault_proxy_factory: FaultProxyFactory, airgap_env: dict[str, str],
                               run_airgap: RunAirgap, tmp_path: Path) -> None:
    seed = _seed()
    rng = random.Random(seed ^ 0x5EED)
    modes = [rng.choice(["delay", "mid-patch", "between-patches"]) for _ in range(20)]
    proxy = fault_proxy_factory(registry.host)
    reports = run_kill_rounds(bundle_12m, registry, proxy, airgap_env, run_airgap, tmp_path, modes, seed)
    assert len(reports) >= 3


# --------------------------------------------------------------------------- 8. reruns


def test_rerun_after_success_is_a_checked_no_op(bundle: Bundle, registry: RegistryServer,
                                                fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                tmp_path: Path) -> None:
    proxy = fault_proxy_factory(registry.host)
    state = tmp_path / "state"
    args = import_args(bundle, proxy.host, state)
    assert_complete(registry, bundle, run=run_airgap(*args))

    proxy.reset_counters()
    r = run_airgap(*args)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.output
    assert writes(proxy.requests) == [] and any(x.startswith("HEAD ") for x in proxy.requests)

    # the registry loses everything: the journal says "done", the registry does not
    registry.stop()
    for p in registry.storage.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    registry.start()
    assert inventory(registry, bundle.manifest).empty
    proxy.reset_counters()
    r = run_airgap(*args)
    assert "nothing to do" not in r.stdout
    assert_complete(registry, bundle, run=r)
    assert writes(proxy.requests)


@pytest.mark.parametrize("state", ["same-state", "fresh-state"])
def test_links_a_registry_crash_left_empty_are_mended(state: str, bundle: Bundle, registry: RegistryServer,
                                                      fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                                      tmp_path: Path) -> None:
    """distribution stopped while writing a repository's link file leaves it empty, and then answers 500 for
    good to HEAD and GET of that blob or manifest (seen once in test_battery_faults.py's registry restart).
    The rerun pushes such content again, which rewrites the link: with the same state dir (the journal says
    "done", the check after it finds the 500s) and with a fresh one (the checks before each push)."""
    proxy = fault_proxy_factory(registry.host)
    args = import_args(bundle, proxy.host, tmp_path / "state")
    assert_complete(registry, bundle, run=run_airgap(*args))

    repos = registry.storage / "docker" / "registry" / "v2" / "repositories"
    base_a = bundle.image("demo/base-a:1.0").digest
    links = {  # what a HEAD asks for -> the link file that answers it
        f"/v2/demo/large/blobs/{bundle.big_layer}":
            repos / "demo/large/_layers/sha256" / bundle.big_layer.removeprefix("sha256:") / "link",
        f"/v2/demo/base-a/manifests/{base_a}": repos / "demo/base-a/_manifests/revisions/sha256" / base_a.hex / "link",
        "/v2/demo/multi/manifests/1.0": repos / "demo/multi/_manifests/tags/1.0/current/link",
    }
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}
    with registry.client(headers=accept) as client:
        for url, link in links.items():
            link.write_bytes(b"")
            assert client.head(url).status_code == 500, url  # how distribution answers for such a link

        proxy.reset_counters()
        if state == "fresh-state":
            args = import_args(bundle, proxy.host, tmp_path / "state2")
        r = run_airgap(*args, "--retries", "3")
        assert "nothing to do" not in r.stdout, r.output
        assert_complete(registry, bundle, run=r)
        for url, link in links.items():
            assert client.head(url).status_code == 200, url
            assert link.read_bytes().startswith(b"sha256:"), link
    pushed = writes(proxy.requests)
    assert any(x.startswith("PUT /v2/demo/large/blobs/uploads/") for x in pushed), pushed
    assert any(x.startswith("PUT /v2/demo/base-a/manifests/") for x in pushed), pushed  # by its tag: both links
    assert any(x.startswith("PUT /v2/demo/multi/manifests/1.0") for x in pushed), pushed


@pytest.mark.parametrize("state", ["same-state", "fresh-state"])
@pytest.mark.parametrize("cut", [0, 100])
def test_a_manifest_whose_stored_bytes_a_cut_write_left_short_is_named(state: str, cut: int, bundle: Bundle,
                                                                       registry: RegistryServer, run_airgap: RunAirgap,
                                                                       tmp_path: Path) -> None:
    """distribution writes a manifest's bytes in place; a full disk or a stop cuts the write short, and a push
    of the same manifest keeps that file (it finds it), while the PUT is answered 201. The import asks for each
    manifest it pushed, so it does not report success: it names the file to remove. After that the rerun
    completes."""
    args = import_args(bundle, registry.host, tmp_path / "state")
    assert_complete(registry, bundle, run=run_airgap(*args))
    base_a = bundle.image("demo/base-a:1.0").digest
    data = registry.storage / "docker/registry/v2/blobs/sha256" / base_a.hex[:2] / base_a.hex / "data"
    data.write_bytes(data.read_bytes()[:cut])
    if state == "fresh-state":
        args = import_args(bundle, registry.host, tmp_path / "state2")
    r = run_airgap(*args)
    line = assert_error_line(r, f"{registry.host}/demo/base-a", f"manifest {base_a}", "cannot serve it",
                             exit_code=EXIT_REGISTRY)
    path = f"docker/registry/v2/blobs/sha256/{base_a.hex[:2]}/{base_a.hex}/data"
    assert f"remove this file from its storage: {path}, then" in line
    assert data.stat().st_size == cut  # the push kept it
    data.unlink()
    r = run_airgap(*args)
    assert_complete(registry, bundle, run=r)


def test_torn_journal_line_hides_nothing_after_it(bundle: Bundle, registry: RegistryServer, run_airgap: RunAirgap,
                                                  tmp_path: Path) -> None:
    """A crash (power loss) in the middle of a journal write leaves a torn line: the next runs still work, and
    what they record after it counts."""
    state = tmp_path / "state"
    args = import_args(bundle, registry.host, state)
    assert_complete(registry, bundle, run=run_airgap(*args))
    (journal,) = (state / "imports").glob("*.jsonl")  # beside it: the registry's known blobs (blobs-*.txt)
    journal.write_bytes(journal.read_bytes()[:-5])  # the "done" record, torn
    r = run_airgap(*args)
    assert "nothing to do" not in r.stdout  # "done" is lost: checked, not trusted
    assert_complete(registry, bundle, run=r)
    again = run_airgap(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
