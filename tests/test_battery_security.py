"""Security battery (issue 5), part 3: hostile bundles, hostile registry answers, credentials and keys.

* A bundle signed with the trusted key whose stream holds hostile tar members (``../../etc/x``, an absolute
  name, a symlink, a PAX path override, a 1 TiB size, a garbage header, altered content): nothing is ever
  extracted, each image concerned is refused with a clear message, and the others are imported.
* Hostile or flaky registry answers during ``export``: wrong blob bytes, a redirect loop; and a source that
  sends damaged bytes once: the rerun must not keep what the damaged run wrote.
* Credentials: every command (``login``, ``copy``, ``keygen``, ``export``, ``verify``, ``inspect``,
  ``import``) with ``--debug`` against an htpasswd and a token registry: the password, its base64 form and
  every bearer token issued appear in no output, audit record, journal or bundle file. A real redirect of a
  blob to another loopback server carries no ``Authorization``.
* Private keys: written 0600 whatever the umask; an unencrypted key readable by others draws ONE
  ``airgap: warning:`` line when ``export`` uses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import AIRGAP, RegistryFactory, Run, RunAirgap
from harness import RegistryServer, TokenServer
from test_import_faults import ACCEPT, EXIT_INCOMPLETE, Bundle, assert_error_line, bundle_2m, tree_state

from airgap.bundle import tarfmt
from airgap.bundle.files import STATE_DIR
from airgap.bundle.reader import BundleReader, read_signed_manifest
from airgap.bundle.stream import Member
from airgap.bundle.tarfmt import END_OF_ARCHIVE, blob_path
from airgap.bundle.writer import write_stream
from airgap.model.bundle import BundleManifest, StoredBlob, StoredFile
from airgap.model.digest import Digest
from airgap.signing import load_private_key, load_public_key, sign
from scripts.demo_images import DEMO_IMAGE_NAMES

__all__ = ["bundle_2m"]

MiB = 1024 * 1024
PASSWORD = "s3cret-pass"
WRONG = "not-the-Pa55word"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


# --------------------------------------------------------------------------- 1. hostile tar members


def _tarinfo(path: str, size: int, **attrs: Any) -> bytes:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info.tobuf(format=tarfile.PAX_FORMAT)


# each: (what the tar header says instead of the real member's, and what the refusal must mention)
HOSTILE_HEADERS: dict[str, tuple[Callable[[str, int], bytes], str]] = {
    "dot-dot": (lambda p, n: _tarinfo("../../etc/x", n), "'../../etc/x'"),
    "absolute": (lambda p, n: _tarinfo("/etc/airgap-battery-x", n), "'/etc/airgap-battery-x'"),
    "symlink": (lambda p, n: _tarinfo(p, 0, type=tarfile.SYMTYPE, linkname="/etc/passwd"), "tar member"),
    "pax-path": (lambda p, n: _tarinfo(p, n, pax_headers={"path": "../../etc/x"}), "'../../etc/x'"),
    "huge-size": (lambda p, n: _tarinfo(p, 1 << 40), f"({1 << 40} bytes)"),
    "garbage": (lambda p, n: hashlib.shake_256(p.encode()).digest(512), "malformed tar header"),
}


def craft_bundle(bundle: Bundle, out: Path, headers: dict[str, Callable[[str, int], bytes]], altered: set[str],
                 monkeypatch: pytest.MonkeyPatch) -> BundleManifest:
    """Re-write ``bundle``'s stream into ``out`` with the tar headers of some members replaced (``headers``:
    member path -> header maker) and the content of others altered (``altered``: digests), then sign a manifest
    for it with the bundle's own key: chunk hashes and signature are valid, only the stream's content is
    hostile. (What an attacker who holds the key, or a buggy writer, could produce.)"""
    m = bundle.manifest
    reader = BundleReader(m, [bundle.dir], verify_chunks=True)
    placed = sorted([(b.span.offset, str(b.digest), b.media_type, blob_path(b.digest.hex)) for b in m.blobs]
                    + [(f.span.offset, "", "", f.path) for f in m.files])
    members = []
    for n, (_, digest, media_type, path) in enumerate(placed):
        if digest:
            with reader.open_blob(Digest.parse(digest)) as chunks:
                data = b"".join(chunks)
        else:
            data = reader.read_file(path)
        if digest in altered:
            data = bytes([data[0] ^ 0x20]) + data[1:]
        members.append(Member(path, len(data), media_type, None, data=data,
                              trailer=END_OF_ARCHIVE if n == len(placed) - 1 else b""))
    real = tarfmt.header
    monkeypatch.setattr(tarfmt, "header", lambda p, size: headers[p](p, size) if p in headers else real(p, size))
    out.mkdir()
    chunks, spans, _ = write_stream(out, members, chunk_size=m.chunk_size, segment=m.segment_size,
                                    level=m.compression_level, jobs=2)
    monkeypatch.setattr(tarfmt, "header", real)
    shutil.rmtree(out / STATE_DIR)
    where = {p: s for (_, _, _, p), s in zip(placed, spans, strict=True)}
    crafted = BundleManifest(
        bundle_id=m.bundle_id + "-crafted", created=m.created, tool=m.tool, key_id=m.key_id, chunk_size=m.chunk_size,
        segment_size=m.segment_size, stream_size=sum(c.size for c in chunks), chunks=tuple(chunks),
        files=tuple(StoredFile(f.path, f.size, where[f.path]) for f in m.files),
        blobs=tuple(StoredBlob(b.digest, b.size, b.media_type, where[blob_path(b.digest.hex)]) for b in m.blobs),
        images=m.images, compression_level=m.compression_level)
    data = crafted.to_json()
    (out / "manifest.json").write_bytes(data)
    (out / "manifest.json.sig").write_bytes(sign(load_private_key(bundle.key, passphrase=None), data))
    return BundleManifest.parse(data)


def test_hostile_tar_members_are_never_extracted_nor_trusted(bundle_2m: Bundle, registry: RegistryServer,
                                                            run_airgap: RunAirgap, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    m = bundle_2m.manifest
    # one blob that only one image uses, for each hostile member (the 8th image stays clean)
    users: dict[str, list[str]] = {}
    for img in m.images:
        for d in img.blobs:
            users.setdefault(str(d), []).append(f"{img.repository}:{img.tag}")
    cases = [*HOSTILE_HEADERS, "altered-content"]
    victims: dict[str, tuple[str, str]] = {}  # image -> (case, digest)
    for img in m.images:
        name = f"{img.repository}:{img.tag}"
        own = [str(d) for d in img.blobs if users[str(d)] == [name]]
        if own and len(victims) < len(cases):
            victims[name] = (cases[len(victims)], own[0])
    assert len(victims) == len(cases), victims
    headers = {blob_path(d[7:]): HOSTILE_HEADERS[c][0] for c, d in victims.values() if c in HOSTILE_HEADERS}
    altered = {d for c, d in victims.values() if c == "altered-content"}
    hostile = tmp_path / "hostile"
    crafted = craft_bundle(bundle_2m, hostile, headers, altered, monkeypatch)

    # the signature and every chunk are valid: verify cannot tell (it checks integrity, not content)
    assert run_airgap("verify", str(hostile), "--pubkey", str(bundle_2m.pub)).returncode == 0
    state = tmp_path / "state"
    before = tree_state(tmp_path, skip=(hostile, state, registry.workdir.parent))
    r = run_airgap("import", str(hostile), "--to", registry.host, "--pubkey", str(bundle_2m.pub), "--state-dir",
                   str(state), "--json")
    assert r.returncode == EXIT_INCOMPLETE and "Traceback" not in r.output, r.output
    assert_error_line(r, f"{len(victims)} of {len(m.images)} images not imported", exit_code=EXIT_INCOMPLETE)
    assert tree_state(tmp_path, skip=(hostile, state, registry.workdir.parent)) == before  # nothing extracted
    assert not Path("/etc/x").exists() and not Path("/etc/airgap-battery-x").exists()
    doc = {i["source"].split("/", 1)[1]: i for i in json.loads(r.stdout)["images"]}
    with registry.client() as client:
        for name, (case, digest) in victims.items():
            assert doc[name]["status"] == "failed", doc[name]
            error = doc[name]["error"]
            needle = HOSTILE_HEADERS[case][1] if case in HOSTILE_HEADERS else f"expected {digest}"
            assert needle in error, (case, error)
            print(f"{case}: {name} refused: {error[:150]}")
            repo = name.split(":")[0]
            assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404  # never committed
            assert client.head(f"/v2/{repo}/manifests/1.0", headers={"Accept": ACCEPT}).status_code == 404
        for name in set(DEMO_IMAGE_NAMES) - set(victims):
            assert doc[name]["status"] == "ok"
            resp = client.head(f"/v2/{name.replace(':', '/manifests/')}", headers={"Accept": ACCEPT})
            assert resp.headers.get("docker-content-digest") == bundle_2m.digests[name]
    assert crafted.bundle_id.endswith("-crafted")


# --------------------------------------------------------------------------- 2. a registry of our own


@dataclass
class Seen:
    server: str  # "registry" or "storage"
    method: str
    path: str
    headers: dict[str, str]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """A minimal distribution API on 127.0.0.1 for one image ``team/app:v1`` (an OCI manifest, a config and one
    gzip-typed layer), with Basic or Bearer auth (alice / PASSWORD). Blob GETs are answered with a 307 to a
    second server (``storage``, another port, as S3 would be) that serves the bytes. Every request is recorded
    with its headers. ``damage``: ``(blob digest, times served before) -> bytes to serve instead``."""

    auth: str | None = "basic"
    layer_size: int = 300_000
    redirect_loop: bool = False
    damage: Callable[[str, int], bytes | None] | None = None
    seen: list[Seen] = field(default_factory=list)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    served: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layer = hashlib.shake_256(b"layer").digest(self.layer_size)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                             "diff_ids": [_digest(b"x")]}}).encode()
        self.blobs = {_digest(layer): layer, _digest(config): config}
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        }).encode()
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    @property
    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

    def start(self) -> FakeRegistry:
        self.registry = self._serve("registry", self._registry)
        self.storage = self._serve("storage", self._storage)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.registry.server_address[1]}"

    def _serve(self, name: str, answer: Callable[[BaseHTTPRequestHandler], None]) -> ThreadingHTTPServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
                pass

            def handle_one(self) -> None:
                with fake._lock:
                    fake.seen.append(Seen(name, self.command, self.path, dict(self.headers.items())))
                answer(self)

            do_GET = do_HEAD = do_POST = handle_one  # noqa: N815 - http.server naming

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self._servers.append(server)
        return server

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        got = h.headers.get("Authorization")
        if self.auth is None:
            return True
        return got == (self.basic if self.auth == "basic" else f"Bearer {self.token}")

    def _registry(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        if path == "/token":
            if h.headers.get("Authorization") != self.basic:
                return self._send(h, 401, b"{}")
            return self._send(h, 200, json.dumps({"token": self.token, "expires_in": 300}).encode(),
                              {"Content-Type": "application/json"})
        if not self._authorized(h):
            challenge = ('Basic realm="fake"' if self.auth == "basic" else
                         f'Bearer realm="http://{self.host}/token",service="fake"')
            return self._send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge,
                                                                                "Content-Type": "application/json"})
        if path == "/v2/":
            return self._send(h, 200, b"{}")
        if path in ("/v2/team/app/manifests/v1", f"/v2/team/app/manifests/{_digest(self.manifest)}"):
            return self._send(h, 200, self.manifest, {"Content-Type": OCI_MANIFEST,
                                                      "Docker-Content-Digest": _digest(self.manifest)})
        if path.startswith("/v2/team/app/blobs/sha256:"):
            digest = path.rsplit("/", 1)[1]
            if digest not in self.blobs:
                return self._send(h, 404)
            if self.redirect_loop:
                return self._send(h, 307, headers={"Location": h.path})
            storage = f"http://127.0.0.1:{self.storage.server_address[1]}"
            return self._send(h, 307, headers={"Location": f"{storage}/bucket/{digest[7:]}?X-Amz-Signature=abc"})
        return self._send(h, 404)

    def _storage(self, h: BaseHTTPRequestHandler) -> None:
        digest = "sha256:" + h.path.split("?")[0].rsplit("/", 1)[1]
        if digest not in self.blobs:
            return self._send(h, 404)
        with self._lock:
            times = self.served.get(digest, 0)
            self.served[digest] = times + 1
        body = self.blobs[digest]
        if self.damage is not None:
            body = self.damage(digest, times) or body
        return self._send(h, 200, body, {"Content-Type": "application/octet-stream"})


@pytest.fixture
def fake_registry() -> Iterator[Callable[..., FakeRegistry]]:
    made: list[FakeRegistry] = []

    def make(**kwargs: Any) -> FakeRegistry:
        fake = FakeRegistry(**kwargs).start()
        made.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in made:
            fake.stop()


@pytest.fixture
def key(run_airgap: RunAirgap, tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.key"
    assert run_airgap("keygen", str(path)).returncode == 0
    return path


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_redirect_to_another_host_carries_no_authorization(auth: str, fake_registry: Callable[..., FakeRegistry],
                                                           key: Path, run_airgap: RunAirgap, tmp_path: Path) -> None:
    fake = fake_registry(auth=auth)
    r = run_airgap("login", fake.host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.output
    out = tmp_path / "bundle"
    r = run_airgap("--debug", "export", f"{fake.host}/team/app:v1", "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    blob_gets = [s for s in fake.seen if s.server == "registry" and "/blobs/" in s.path]
    fetched = [s for s in fake.seen if s.server == "storage"]
    assert len(blob_gets) == 2 and len(fetched) == 2  # config and layer, each redirected once
    secret = fake.basic if auth == "basic" else f"Bearer {fake.token}"
    assert all(s.headers.get("Authorization") == secret for s in blob_gets)
    for s in fetched:
        assert "Authorization" not in s.headers and "authorization" not in {k.lower() for k in s.headers}, s
        assert not any(PASSWORD in v or fake.token in v or secret in v for v in s.headers.values()), s
    for text in (r.output, *(p.read_bytes().decode("latin-1") for p in out.iterdir())):
        assert PASSWORD not in text and fake.token not in text and secret.split(" ")[1] not in text
    m = BundleManifest.parse((out / "manifest.json").read_bytes())
    assert str(m.images[0].digest) == _digest(fake.manifest)


@pytest.mark.parametrize("case", ["wrong-bytes", "redirect-loop"])
def test_hostile_registry_answers_fail_the_export_cleanly(case: str, fake_registry: Callable[..., FakeRegistry],
                                                          key: Path, run_airgap: RunAirgap, tmp_path: Path) -> None:
    if case == "wrong-bytes":  # the storage server sends other bytes than the digest names
        fake = fake_registry(auth=None)
        fake.damage = lambda d, n: b"X" + fake.blobs[d][1:]
        needles: tuple[str, ...] = ("has digest", "expected sha256:")
        code = 3
    else:
        fake = fake_registry(auth=None, redirect_loop=True)
        needles = (fake.host, "too many redirects")
        code = 5
    out = tmp_path / "bundle"
    r = run_airgap("export", f"{fake.host}/team/app:v1", "--output", str(out), "--key", str(key), "--retries", "2")
    line = assert_error_line(r, *needles, exit_code=code)
    assert not (out / "manifest.json").exists() and not (out / "manifest.json.sig").exists()
    print(f"{case}: {line}")


def test_damaged_answer_then_rerun_keeps_nothing_of_the_damaged_run(fake_registry: Callable[..., FakeRegistry],
                                                                    key: Path, run_airgap: RunAirgap,
                                                                    tmp_path: Path) -> None:
    """The source sends a large layer (4 segments of 4 MiB) with one byte damaged, once. Its first frames are
    already in complete chunks when the digest check at the end of the layer fails. The rerun gets the right
    bytes; the bundle it completes must be sound (every blob reads back with its digest) and identical to an
    export that never saw the damage, not a bundle whose chunk hashes bless the damaged bytes.

    (4 segments, not 3: the rerun stops reading the layer at its first frame; with 3, the reader could be done
    and stuck on its full queue, see test_battery_faults.py::test_export_stopped_early_does_not_hang.)"""
    fake = fake_registry(auth=None, layer_size=14 * MiB)
    reference = tmp_path / "reference"
    args = [f"{fake.host}/team/app:v1", "--key", str(key), "--chunk-size", "1MiB"]
    assert run_airgap("export", *args, "--output", str(reference)).returncode == 0
    big = max(fake.blobs, key=lambda d: len(fake.blobs[d]))
    fake.served.clear()
    fake.damage = lambda d, n: (fake.blobs[d][:1000] + b"\xff" + fake.blobs[d][1001:]) if d == big and n == 0 \
        else None
    out = tmp_path / "bundle"
    r = run_airgap("export", *args, "--output", str(out))
    assert_error_line(r, big, "expected", exit_code=3)
    assert len(list(out.glob("chunk-*.bin"))) >= 4  # frames of the damaged layer are in complete chunks
    r = run_airgap("export", *args, "--output", str(out))
    assert r.returncode == 0, r.output
    manifest, _ = read_signed_manifest(out, [load_public_key(Path(f"{key}.pub"))])
    reader = BundleReader(manifest, [out], verify_chunks=True)
    for blob in manifest.blobs:
        with reader.open_blob(blob.digest) as chunks:
            assert hashlib.sha256(b"".join(chunks)).hexdigest() == blob.digest.hex
    for chunk in sorted(reference.glob("chunk-*.bin")):
        assert (out / chunk.name).read_bytes() == chunk.read_bytes(), chunk.name
    assert run_airgap("verify", str(out), "--pubkey", f"{key}.pub").returncode == 0


# --------------------------------------------------------------------------- 3. credentials


def _secret_forms(*passwords: str) -> list[str]:
    out = []
    for pw in passwords:
        basic = base64.b64encode(f"alice:{pw}".encode()).decode()
        out += [pw, basic, basic.rstrip("=")]
    return out


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_no_secret_in_any_output_log_journal_or_bundle(auth: str, registry_factory: RegistryFactory,
                                                       demo_registry: RegistryServer, run_airgap: RunAirgap,
                                                       airgap_env: dict[str, str], tmp_path: Path) -> None:
    target = registry_factory(auth=auth)
    tokens: list[str] = []
    if auth == "token":
        server = target.token_server
        assert isinstance(server, TokenServer)
        tokens = server.minted

    runs: list[tuple[str, Run]] = []

    def run(*args: str, ok: bool = True, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        r = run_airgap("--debug", *args, input=input, env=env)
        assert (r.returncode == 0) == ok, r.output
        runs.append((" ".join(args[:1]), r))
        return r

    key, bundle, state = tmp_path / "k" / "signing.key", tmp_path / "bundle", tmp_path / "state"
    run("login", target.host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    run("login", target.host, "-u", "alice", "--password-stdin", input=WRONG + "\n", ok=False)
    run("copy", demo_registry.ref("demo/multi:1.0"), target.ref("demo/multi:1.0"))
    run("copy", "--dest-username", "alice", demo_registry.ref("demo/base-a:1.0"), target.ref("demo/base-a:1.0"),
        env={"AIRGAP_DEST_PASSWORD": PASSWORD})
    run("keygen", str(key))
    run("export", target.ref("demo/multi:1.0"), target.ref("demo/base-a:1.0"), "--output", str(bundle), "--key",
        str(key), "--chunk-size", "1MiB")
    run("verify", str(bundle), "--pubkey", f"{key}.pub")
    run("inspect", str(bundle), "--pubkey", f"{key}.pub")
    run("inspect", str(bundle), "--json")
    common = ["--pubkey", f"{key}.pub", "--state-dir", str(state)]
    run("import", str(bundle), "--to", f"{target.host}/mirror", *common)
    run("import", str(bundle), "--to", f"{target.host}/mirror2", *common, "--username", "alice",
        "--password-stdin", input=PASSWORD + "\n")
    run("import", str(bundle), "--to", f"{target.host}/mirror3", *common, "--username", "alice",
        "--password-stdin", input=WRONG + "\n", ok=False)
    assert any(" -> 200" in r.stderr or " -> 201" in r.stderr for _, r in runs)  # --debug logged the exchanges
    if auth == "token":
        assert tokens and any("token for repository:" in r.stderr for _, r in runs)

    forms = _secret_forms(PASSWORD, WRONG) + tokens + [t.rsplit(".", 1)[1] for t in tokens]
    for what, r in runs:
        for secret in forms:
            assert secret not in r.output, f"a secret in the output of {what}"
        assert "Authorization:" not in r.output and "Basic " not in r.output and "Bearer ey" not in r.output

    # every file airgap wrote: bundle (with hidden names), journals, audit logs, HOME and runtime dirs; the
    # credential store (docker config.json, written by login on purpose) is private instead
    store = Path(airgap_env["DOCKER_CONFIG"]) / "config.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    scanned = []
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and "registries" not in path.relative_to(tmp_path).parts and path != store:
            data = path.read_bytes()
            for secret in forms:
                assert secret.encode() not in data, f"a secret in {path}"
            scanned.append(path)
    names = {p.name for p in scanned}
    assert {"manifest.json", "manifest.json.sig", "chunk-000000.bin", "audit.jsonl"} <= names
    assert any(p.parent.name == "imports" for p in scanned)  # the import journals
    audits = [json.loads(line) for p in scanned if p.name == "audit.jsonl" for line in p.read_text().splitlines()]
    assert {(a["event"], a["outcome"]) for a in audits} >= {("export", "ok"), ("import", "ok"), ("import", "failed")}
    print(f"{auth}: {len(runs)} commands with --debug, {len(forms)} secret forms ({len(tokens)} tokens), "
          f"{len(scanned)} files scanned: no secret anywhere")


# --------------------------------------------------------------------------- 4. private keys


def test_keygen_writes_the_private_key_0600_whatever_the_umask(airgap_env: dict[str, str], tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    for n, umask in enumerate((0o000, 0o022, 0o077)):
        for extra in ([], ["--passphrase-file", str(pw)]):
            key = tmp_path / f"k{n}{len(extra)}" / "signing.key"
            proc = subprocess.run(AIRGAP + ["keygen", str(key), *extra], env=airgap_env, capture_output=True,
                                  text=True, preexec_fn=lambda u=umask: os.umask(u), check=False)
            assert proc.returncode == 0, proc.stderr
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, (umask, extra)
            assert stat.S_IMODE(Path(f"{key}.pub").stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o600, "encrypted-0644"])
def test_readable_unencrypted_key_draws_one_warning_line(mode: int | str, demo_layout: tuple[Path, list[Any]],
                                                         run_airgap: RunAirgap, tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    extra: list[str] = []
    if mode == "encrypted-0644":
        pw = tmp_path / "pw"
        pw.write_text("correct horse\n")
        extra = ["--passphrase-file", str(pw)]
    assert run_airgap("keygen", str(key), *extra).returncode == 0
    key.chmod(0o644 if isinstance(mode, str) else mode)
    r = run_airgap("export", f"oci:{demo_layout[0]}:demo/base-a:1.0", "--output", str(tmp_path / "b"), "--key",
                   str(key), *extra)
    assert r.returncode == 0, r.output
    if isinstance(mode, int) and mode & 0o044:
        assert r.stderr.splitlines() == [
            f"airgap: warning: the unencrypted private key {key} can be read by other users (mode {mode:04o}): "
            f"run `chmod 600 {key}`, or encrypt it with a passphrase"], r.stderr
    else:
        assert r.stderr == ""
