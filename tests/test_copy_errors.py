"""End-to-end error handling of ``airgap copy`` (and ``airgap login``) against the real registry.

Every failure must end the process with the right exit code (``exit_code`` in airgap/errors.py: 5 for
registry errors) and ONE line on stderr, ``airgap: error: ...``, that names the registry host (and the
repository where there is one) and says what to do, never a traceback. Every transient fault (429,
5xx bursts, resets, dropped connections, a SIGKILL) must end in a complete copy whose digest skopeo
confirms.

Facts about distribution 2.8 that these tests rely on (checked in
``test_distribution_28_patch_interrupted_cannot_resume``):

* Every upload ``Location`` carries ``_state``, an HMAC-signed JSON holding the offset the registry
  acknowledged. ``GET <location>`` (upload status) and the next ``PATCH``/``PUT`` compare that offset with
  the size of the upload file and answer ``404 BLOB_UPLOAD_INVALID`` when they differ.
* A ``PATCH`` interrupted mid-body leaves its partial bytes in the upload file (2.8 logs "client
  disconnected during blob PATCH") while every ``Location`` the client holds still has the old offset, so
  the session is dead: it cannot be resumed, a new session must be opened. The same holds for a ``PATCH``
  the registry applied whose answer was lost (the client never saw the new ``Location``).
* A session can be resumed (``GET`` answers ``204`` with ``Range: 0-<last byte>``) only when the failed
  request never reached the registry (dropped by a proxy, a 5xx from a load balancer), and only with the
  newest ``Location``.
* An empty session answers ``Range: 0-0``, the same as a session holding one byte.
* After the closing ``PUT`` the session is gone (``404 BLOB_UPLOAD_UNKNOWN``).

So after a failed upload request the client (airgap/registry/client.py) first asks ``HEAD`` whether the
blob is there (the closing ``PUT`` may have been applied), then ``GET``s the status of the newest
``Location`` and goes on from the offset it gives, and opens a new session when that is 404 or empty.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import (
    FaultProxy,
    RegistryServer,
    TokenServer,
    make_oci_layout,
    skopeo_copy,
    skopeo_digest,
    skopeo_inspect_raw,
)

RegistryFactory = Callable[..., RegistryServer]
FaultProxyFactory = Callable[..., FaultProxy]

AIRGAP = [sys.executable, "-m", "airgap.cli"]
ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
PASSWORD = "s3cret-pass"
SUMMARY = re.compile(r"blobs: (\d+) uploaded \([^)]+\), (\d+) mounted, (\d+) already present")
REGISTRY_EXIT = 5  # RegistryError.exit_code


# --------------------------------------------------------------------------- helpers


def assert_error_line(run: Any, *needles: str, exit_code: int = REGISTRY_EXIT) -> str:
    """One ``airgap: error:`` line on stderr holding every needle; the right exit code; no traceback."""
    assert "Traceback" not in run.output, run.output
    assert run.returncode == exit_code, f"exit {run.returncode}, expected {exit_code}:\n{run.output}"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr:\n{run.stderr}"
    line: str = lines[0]
    assert line.startswith("airgap: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def assert_copied(run: Any, src: str, dst: str) -> None:
    assert run.returncode == 0, run.output
    assert "Traceback" not in run.output, run.output
    assert skopeo_digest(dst) == skopeo_digest(src)


def manifest_of(registry: RegistryServer, repository: str, tag: str) -> dict[str, Any]:
    with registry.client() as client:
        resp = client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result


def large_layer(registry: RegistryServer) -> tuple[str, int]:
    """Digest and size of the 2 MiB layer of ``demo/large:1.0``."""
    layer = max(manifest_of(registry, "demo/large", "1.0")["layers"], key=lambda d: d["size"])
    assert layer["size"] >= 2 * 1024 * 1024
    return layer["digest"], layer["size"]


def blobs_of(registry: RegistryServer, repository: str, tag: str) -> list[str]:
    manifest = manifest_of(registry, repository, tag)
    return [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def skip_matches(proxy: FaultProxy, n: int, match: str) -> None:
    """Let the next ``n`` requests matching ``match`` through untouched, so that a fault added after
    this hits the (n+1)-th one. (A reset after more bytes than any answer has is a no-op that consumes
    a match; faults of one kind are taken in the order they were added.)"""
    for _ in range(n):
        proxy.reset_after(1 << 40, match=match)


def count(requests: list[str], pattern: str) -> int:
    return sum(1 for line in requests if re.search(pattern, line))


@pytest.fixture
def library_copy(airgap_env: dict[str, str]) -> Callable[..., Any]:
    """``copy(src, dst)`` through the library with small upload chunks (2 MiB -> 4 PATCHes + PUT)."""
    from airgap.copy import copy
    from airgap.registry import Registries, RegistryOptions, RetryPolicy, UploadPolicy

    def run(src: str, dst: str) -> Any:
        options = RegistryOptions(retry=RetryPolicy(tries=4, base_delay=0.01), timeout=20.0)
        upload = UploadPolicy(monolithic_max=256 * 1024, chunk_size=512 * 1024)
        with Registries(options, upload=upload) as registries:
            return copy(registries, src, dst, jobs=1)

    return run


# --------------------------------------------------------------------------- 1. 401


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_401_without_credentials(auth: str, registry_factory: RegistryFactory, demo_registry: RegistryServer,
                                 run_airgap: Callable[..., Any]) -> None:
    target = registry_factory(auth=auth)
    run = run_airgap("copy", demo_registry.ref("demo/multi:1.0"), target.ref("demo/multi:1.0"))
    line = assert_error_line(run, f"{target.host}/demo/multi", "401")
    assert f"airgap login {target.host}" in line


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_401_wrong_password(auth: str, registry_factory: RegistryFactory, demo_registry: RegistryServer,
                            run_airgap: Callable[..., Any]) -> None:
    target = registry_factory(auth=auth)
    run = run_airgap("copy", "--dest-username", "alice", demo_registry.ref("demo/multi:1.0"),
                     target.ref("demo/multi:1.0"), env={"AIRGAP_DEST_PASSWORD": "not-the-password"})
    line = assert_error_line(run, f"{target.host}/demo/multi", "401")
    assert "check" in line and "airgap login" in line
    assert "not-the-password" not in run.output


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_login_wrong_password(auth: str, registry_factory: RegistryFactory, run_airgap: Callable[..., Any],
                              airgap_env: dict[str, str]) -> None:
    target = registry_factory(auth=auth)
    run = run_airgap("login", target.host, "-u", "alice", "--password-stdin", input="not-the-password\n")
    line = assert_error_line(run, target.host)
    assert "refused" in line and "check" in line
    assert "not-the-password" not in run.output
    assert not (Path(airgap_env["DOCKER_CONFIG"]) / "config.json").exists()
    # and the right password works, so the failure above was about the password
    ok = run_airgap("login", target.host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert ok.returncode == 0, ok.output


# --------------------------------------------------------------------------- 2. 403


@pytest.mark.parametrize("denied", [r"^PUT /v2/demo/multi/manifests/", r"^POST /v2/demo/multi/blobs/uploads/"])
def test_403_denied(denied: str, registry: RegistryServer, demo_registry: RegistryServer,
                    fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.http_error(403, times=100, match=denied)  # answers {"errors":[{"code":"DENIED",...}]}
    run = run_airgap("copy", demo_registry.ref("demo/multi:1.0"), f"{proxy.host}/demo/multi:1.0")
    line = assert_error_line(run, f"{proxy.host}/demo/multi", "403", "DENIED")
    assert "ask the registry's admin" in line
    assert proxy.faults_injected >= 1
    # a 403 is final: no retries of the denied request
    assert proxy.faults_injected == count(proxy.requests, denied)


# --------------------------------------------------------------------------- 3. 404


@pytest.mark.parametrize(("source", "code"), [
    ("nope/nothing:1.0", "MANIFEST_UNKNOWN"),  # 2.8 says MANIFEST_UNKNOWN, not NAME_UNKNOWN, for a manifest
    ("demo/multi:no-such-tag", "MANIFEST_UNKNOWN"),
    ("demo/multi@sha256:" + "0" * 64, "MANIFEST_UNKNOWN"),
])
def test_404(source: str, code: str, registry: RegistryServer, demo_registry: RegistryServer,
             run_airgap: Callable[..., Any]) -> None:
    repository = re.split(r"[:@]", source)[0]
    run = run_airgap("copy", demo_registry.ref(source), registry.ref(f"{repository}:copied"))
    line = assert_error_line(run, f"{demo_registry.host}/{repository}", "404", code)
    assert "check the repository name, tag or digest" in line


# --------------------------------------------------------------------------- 4. TLS


def test_tls_verification(tls_registry: RegistryServer, registry: RegistryServer, tmp_path: Path,
                          run_airgap: Callable[..., Any]) -> None:
    image = make_oci_layout(tmp_path / "img", tag="v1", layers=2)
    skopeo_copy(image.ref, tls_registry.ref("test/img:v1"), dest_tls_verify=True, cert_dir=tls_registry.cert_dir)
    src = tls_registry.ref("test/img:v1")

    failed = run_airgap("copy", src, registry.ref("test/img:v1"))
    line = assert_error_line(failed, tls_registry.host, "certificate")
    assert "--ca-cert" in line

    trusted = run_airgap("copy", "--ca-cert", str(tls_registry.ca_cert), src, registry.ref("test/img:v1"))
    assert trusted.returncode == 0, trusted.output
    assert skopeo_digest(registry.ref("test/img:v1")) == image.digest

    insecure = run_airgap("copy", "--insecure-registry", tls_registry.host, src, registry.ref("test/img:v2"))
    assert insecure.returncode == 0, insecure.output
    assert skopeo_digest(registry.ref("test/img:v2")) == image.digest


def test_a_certificate_for_another_name_is_named_as_such(tls_registry: RegistryServer, registry: RegistryServer,
                                                         run_airgap: Callable[..., Any]) -> None:
    """The CA is trusted but the certificate does not name the host as the user wrote it (127.1 is 127.0.0.1,
    a name the certificate does not list): "pass --ca-cert" would not help, and is not what it says."""
    assert tls_registry.ca_cert is not None
    host = f"127.1:{tls_registry.port}"
    r = run_airgap("copy", "--ca-cert", str(tls_registry.ca_cert), f"{host}/x/y:1", registry.ref("x/y:1"))
    line = assert_error_line(r, host, "certificate", f"the certificate is trusted but not issued for {host}")
    assert "pass the registry's CA" not in line


DAMAGED_PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("content", [b"hello\n", b"", DAMAGED_PEM], ids=["text", "empty", "damaged-pem"])
def test_a_ca_cert_that_is_not_a_pem_certificate_is_named(content: bytes, tls_registry: RegistryServer,
                                                          registry: RegistryServer, tmp_path: Path,
                                                          run_airgap: Callable[..., Any]) -> None:
    """A --ca-cert file that holds no PEM certificate: one line naming the file, exit 2 (it was an internal error,
    exit 70, from OpenSSL: "SSLError: [X509: NO_CERTIFICATE_OR_CRL_FOUND] ...")."""
    bad = tmp_path / "not-a-cert.crt"
    bad.write_bytes(content)
    for args in (["login", tls_registry.host, "-u", "alice", "--password-stdin"],
                 ["copy", tls_registry.ref("test/img:v1"), registry.ref("test/img:v1")]):
        r = run_airgap(*args, "--ca-cert", str(bad), input="pw\n")
        line = assert_error_line(r, f"{bad} (--ca-cert) is not a PEM certificate", exit_code=2)
        assert "internal error" not in line and "_ssl.c" not in line and "PEM form" in line, line


# --------------------------------------------------------------------------- 5. connection refused


def test_connection_refused(registry: RegistryServer, run_airgap: Callable[..., Any]) -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    run = run_airgap("copy", "--retries", "2", f"{host}/demo/multi:1.0", registry.ref("demo/multi:1.0"),
                     timeout=30)
    elapsed = time.monotonic() - started
    line = assert_error_line(run, host, "refused", "2 tries")
    assert "check that the registry is up" in line
    assert elapsed < 10, f"took {elapsed:.1f}s"


def test_a_target_that_cannot_serve_a_manifest_it_took_is_named(registry: RegistryServer,
                                                                 demo_registry: RegistryServer,
                                                                 run_airgap: Callable[..., Any]) -> None:
    """distribution keeps a manifest file a cut write left empty and answers the PUT of that manifest 201: the
    copy asks for each manifest it pushed and names the file, instead of saying it copied the image."""
    src, dst = demo_registry.ref("demo/multi:1.0"), registry.ref("demo/multi:1.0")
    assert run_airgap("copy", src, dst).returncode == 0
    digest = skopeo_digest(src).removeprefix("sha256:")
    (registry.storage / "docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data").write_bytes(b"")
    line = assert_error_line(run_airgap("copy", src, dst), registry.host, "cannot serve it")
    path = f"docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data"
    assert f"remove this file from its storage: {path}, then" in line
    # two at once (a full disk cuts several writes short): both named, for one repair
    child = json.loads(skopeo_inspect_raw(src))["manifests"][0]["digest"].removeprefix("sha256:")
    (registry.storage / "docker/registry/v2/blobs/sha256" / child[:2] / child / "data").write_bytes(b"")
    line = assert_error_line(run_airgap("copy", src, dst), registry.host, "cannot serve it", "(and 1 more)")
    paths = sorted(f"docker/registry/v2/blobs/sha256/{d[:2]}/{d}/data" for d in (digest, child))
    assert "remove these files from its storage: " in line and all(p in line for p in paths), line


# --------------------------------------------------------------------------- 6. transient faults, then success


def test_429_retry_after_then_success(registry: RegistryServer, demo_registry: RegistryServer,
                                      fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.http_error(429, times=1, retry_after=1, match=r"^PUT /v2/demo/multi/manifests/1\.0")
    started = time.monotonic()
    run = run_airgap("--debug", "copy", demo_registry.ref("demo/multi:1.0"), f"{proxy.host}/demo/multi:1.0")
    elapsed = time.monotonic() - started
    assert_copied(run, demo_registry.ref("demo/multi:1.0"), registry.ref("demo/multi:1.0"))
    assert proxy.faults_injected == 1
    assert re.search(r"PUT \S+/manifests/1\.0: 429, retry 1/\d+ in 1\.0s", run.stderr), run.stderr
    assert elapsed >= 1.0


def test_5xx_burst_then_success(registry: RegistryServer, demo_registry: RegistryServer,
                                fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(registry.host)
    for status in (500, 502, 503):
        proxy.http_error(status, times=1, match=r" /v2/demo/multi/")
    run = run_airgap("copy", demo_registry.ref("demo/multi:1.0"), f"{proxy.host}/demo/multi:1.0")
    assert_copied(run, demo_registry.ref("demo/multi:1.0"), registry.ref("demo/multi:1.0"))
    assert proxy.faults_injected == 3


def test_reset_mid_download_resumes(registry: RegistryServer, demo_registry: RegistryServer,
                                    fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    digest, _ = large_layer(demo_registry)
    proxy = fault_proxy_factory(demo_registry.host)
    blob_get = rf"^GET /v2/demo/large/blobs/{digest}"
    proxy.reset_after(500_000, match=blob_get)
    run = run_airgap("--debug", "copy", f"{proxy.host}/demo/large:1.0", registry.ref("demo/large:1.0"))
    assert_copied(run, demo_registry.ref("demo/large:1.0"), registry.ref("demo/large:1.0"))
    assert proxy.faults_injected == 1
    assert count(proxy.requests, blob_get) == 2
    resumed = re.search(r"blob \S+: \w+ at byte (\d+), resuming", run.stderr)
    assert resumed and 0 < int(resumed.group(1)) <= 500_000, run.stderr


def test_reset_on_monolithic_put_then_success(registry: RegistryServer, demo_registry: RegistryServer,
                                              fault_proxy_factory: FaultProxyFactory,
                                              run_airgap: Callable[..., Any]) -> None:
    digest, _ = large_layer(demo_registry)
    proxy = fault_proxy_factory(registry.host)
    # the registry stored the blob, the answer is lost
    proxy.reset_after(1, match=rf"^PUT /v2/demo/large/blobs/uploads/\S*{digest.split(':')[1]}")
    run = run_airgap("copy", demo_registry.ref("demo/large:1.0"), f"{proxy.host}/demo/large:1.0")
    assert_copied(run, demo_registry.ref("demo/large:1.0"), registry.ref("demo/large:1.0"))
    assert proxy.faults_injected == 1
    # a HEAD finds the blob the registry stored: not uploaded a second time (config + large: 2 sessions)
    assert count(proxy.requests, r"^POST /v2/demo/large/blobs/uploads/") == 2


def test_dropped_monolithic_put_then_success(registry: RegistryServer, demo_registry: RegistryServer,
                                             fault_proxy_factory: FaultProxyFactory,
                                             run_airgap: Callable[..., Any]) -> None:
    # The PUT never reaches the registry: the session is empty and 2.8 says `Range: 0-0` for it.
    proxy = fault_proxy_factory(registry.host)
    proxy.drop_every(2, match=r"^PUT /v2/demo/multi/blobs/uploads/")
    run = run_airgap("copy", "--jobs", "1", demo_registry.ref("demo/multi:1.0"), f"{proxy.host}/demo/multi:1.0")
    assert_copied(run, demo_registry.ref("demo/multi:1.0"), registry.ref("demo/multi:1.0"))
    assert proxy.faults_injected >= 2


def test_drop_every_third_request_then_success(registry: RegistryServer, demo_registry: RegistryServer,
                                               fault_proxy_factory: FaultProxyFactory,
                                               run_airgap: Callable[..., Any]) -> None:
    src = fault_proxy_factory(demo_registry.host)
    dst = fault_proxy_factory(registry.host)
    src.drop_every(3)
    dst.drop_every(3)
    run = run_airgap("copy", f"{src.host}/demo/multi:1.0", f"{dst.host}/demo/multi:1.0")
    assert_copied(run, demo_registry.ref("demo/multi:1.0"), registry.ref("demo/multi:1.0"))
    assert src.faults_injected > 0 and dst.faults_injected > 0


# ---- chunked uploads (library: UploadPolicy is not a CLI option)


def test_reset_on_middle_patch_opens_new_session(registry: RegistryServer, demo_registry: RegistryServer,
                                                 fault_proxy_factory: FaultProxyFactory,
                                                 library_copy: Callable[..., Any]) -> None:
    """The 2nd of 4 PATCHes is applied but its answer is lost: the upload status of the newest Location
    the client has answers 404 BLOB_UPLOAD_INVALID on 2.8, so the client opens a new session."""
    proxy = fault_proxy_factory(registry.host)
    patch = r"^PATCH /v2/demo/large/blobs/uploads/"
    skip_matches(proxy, 1, patch)
    proxy.reset_after(1, match=patch)
    result = library_copy(demo_registry.ref("demo/large:1.0"), f"{proxy.host}/demo/large:1.0")
    assert skopeo_digest(registry.ref("demo/large:1.0")) == skopeo_digest(demo_registry.ref("demo/large:1.0"))
    assert proxy.faults_injected == 1 and result.uploaded == 2
    assert count(proxy.requests, r"^GET /v2/demo/large/blobs/uploads/") >= 1  # asked for the offset first
    # config + large + the new session for large
    assert count(proxy.requests, r"^POST /v2/demo/large/blobs/uploads/") == 3
    assert count(proxy.requests, patch) == 2 + 4


def test_dropped_middle_patch_resumes_at_offset(registry: RegistryServer, demo_registry: RegistryServer,
                                                fault_proxy_factory: FaultProxyFactory,
                                                library_copy: Callable[..., Any]) -> None:
    """The 3rd of 4 PATCHes never reaches the registry: the session holds 1 MiB and the client goes on
    from there in the same session."""
    proxy = fault_proxy_factory(registry.host)
    patch = r"^PATCH /v2/demo/large/blobs/uploads/"
    proxy.drop_every(3, match=patch)
    library_copy(demo_registry.ref("demo/large:1.0"), f"{proxy.host}/demo/large:1.0")
    assert skopeo_digest(registry.ref("demo/large:1.0")) == skopeo_digest(demo_registry.ref("demo/large:1.0"))
    assert proxy.faults_injected == 1
    assert count(proxy.requests, r"^POST /v2/demo/large/blobs/uploads/") == 2  # config + large: no new session
    assert count(proxy.requests, patch) == 4 + 1


def test_reset_on_final_put_after_patches(registry: RegistryServer, demo_registry: RegistryServer,
                                          fault_proxy_factory: FaultProxyFactory,
                                          library_copy: Callable[..., Any]) -> None:
    digest, _ = large_layer(demo_registry)
    proxy = fault_proxy_factory(registry.host)
    proxy.reset_after(1, match=rf"^PUT /v2/demo/large/blobs/uploads/\S*{digest.split(':')[1]}")
    library_copy(demo_registry.ref("demo/large:1.0"), f"{proxy.host}/demo/large:1.0")
    assert skopeo_digest(registry.ref("demo/large:1.0")) == skopeo_digest(demo_registry.ref("demo/large:1.0"))
    assert proxy.faults_injected == 1
    # the blob was committed, only the answer was lost: found with HEAD, not uploaded again
    assert count(proxy.requests, r"^POST /v2/demo/large/blobs/uploads/") == 2
    assert count(proxy.requests, r"^PATCH /v2/demo/large/blobs/uploads/") == 4


def test_distribution_28_patch_interrupted_cannot_resume(registry: RegistryServer) -> None:
    """Documents 2.8 with raw HTTP: an empty session says `Range: 0-0`; the status of an intact session
    gives its offset; a PATCH cut mid-body kills the session (status and PATCH answer 404
    BLOB_UPLOAD_INVALID), so it cannot be resumed and a new session is needed."""
    data = hashlib.shake_256(b"patch").digest(300_000)
    with registry.client() as client:
        opened = client.post("/v2/probe/blobs/uploads/")
        empty = opened.url.join(opened.headers["Location"])
        status = client.get(empty)
        assert (status.status_code, status.headers["Range"]) == (204, "0-0")
        first = client.patch(empty, content=data[:100_000], headers={"Content-Range": "0-99999"})
        assert first.status_code == 202
        location = first.url.join(first.headers["Location"])
        assert client.get(location).headers["Range"] == "0-99999"  # resumable while nothing was cut
        # a PATCH that stops half-way through its body
        with socket.create_connection(("127.0.0.1", registry.port)) as sock:
            sock.sendall(f"PATCH {location.raw_path.decode()} HTTP/1.1\r\nHost: {registry.host}\r\n"
                         f"Content-Type: application/octet-stream\r\nContent-Range: 100000-199999\r\n"
                         f"Content-Length: 100000\r\n\r\n".encode() + data[100_000:150_000])
            time.sleep(0.2)
        time.sleep(0.3)
        for answer in (client.get(location),
                       client.patch(location, content=data[100_000:], headers={"Content-Range": "100000-299999"})):
            assert answer.status_code == 404
            assert json.loads(answer.text)["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


# --------------------------------------------------------------------------- 7. retries exhausted


def test_retries_exhausted(registry: RegistryServer, demo_registry: RegistryServer,
                           fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.http_error(503, times=100, match=r"/manifests/")
    run = run_airgap("copy", "--retries", "3", f"{proxy.host}/demo/multi:1.0", registry.ref("demo/multi:1.0"))
    line = assert_error_line(run, f"{proxy.host}/demo/multi", "503")
    assert "run again later" in line
    assert proxy.faults_injected == 3


def test_upload_retries_exhausted(registry: RegistryServer, demo_registry: RegistryServer,
                                  fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.drop_every(1, match=r"^PUT /v2/demo/multi/blobs/uploads/")
    run = run_airgap("copy", "--retries", "3", "--jobs", "1", demo_registry.ref("demo/multi:1.0"),
                     f"{proxy.host}/demo/multi:1.0")
    line = assert_error_line(run, f"{proxy.host}/demo/multi", "after 3 tries")
    assert "run the command again" in line
    # every blob was tried 3 times (the engine may have started a second blob before the first failed)
    tried = [re.sub(r".*digest=", "", entry) for entry in proxy.fault_log]
    assert tried and all(tried.count(d) == 3 for d in tried), proxy.fault_log


def test_retries_exhausted_on_ping(registry: RegistryServer, demo_registry: RegistryServer,
                                   fault_proxy_factory: FaultProxyFactory, run_airgap: Callable[..., Any]) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.http_error(503, times=100)
    run = run_airgap("copy", "--retries", "3", demo_registry.ref("demo/multi:1.0"), f"{proxy.host}/demo/multi:1.0")
    line = assert_error_line(run, proxy.host, "503")
    assert "run again later" in line
    assert proxy.faults_injected == 3


# --------------------------------------------------------------------------- 8. --debug shows no secrets


def secret_forms(password: str) -> list[str]:
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    return [password, basic, basic.rstrip("=")]


def test_debug_hides_basic_credentials(htpasswd_registry: RegistryServer, demo_registry: RegistryServer,
                                       run_airgap: Callable[..., Any]) -> None:
    run = run_airgap("--debug", "copy", "--dest-username", "alice", demo_registry.ref("demo/multi:1.0"),
                     htpasswd_registry.ref("demo/multi:1.0"), env={"AIRGAP_DEST_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.output
    for secret in secret_forms(PASSWORD):
        assert secret not in run.output
    assert "Authorization" not in run.output and "Basic " not in run.output
    assert re.search(rf"PUT http://{re.escape(htpasswd_registry.host)}/v2/demo/multi/manifests/1\.0 -> 201",
                     run.stderr), run.stderr


def test_debug_hides_bearer_tokens(token_registry: RegistryServer, demo_registry: RegistryServer,
                                   run_airgap: Callable[..., Any]) -> None:
    server = token_registry.token_server
    assert isinstance(server, TokenServer)
    tokens = server.minted
    run = run_airgap("--debug", "copy", "--dest-username", "alice", demo_registry.ref("demo/multi:1.0"),
                     token_registry.ref("demo/multi:1.0"), env={"AIRGAP_DEST_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.output
    assert tokens and len(tokens) == len(server.issued)
    assert any(req.user == "alice" for req in server.requests)
    for secret in [*secret_forms(PASSWORD), *tokens, *(t.rsplit(".", 1)[1] for t in tokens)]:
        assert secret not in run.output
    assert "Authorization" not in run.output and "Bearer ey" not in run.output
    assert re.search(rf"PUT http://{re.escape(token_registry.host)}/v2/demo/multi/manifests/1\.0 -> 201",
                     run.stderr), run.stderr
    assert "token for repository:demo/multi:pull,push" in run.stderr  # token fetches are logged, not tokens


# --------------------------------------------------------------------------- 9. SIGKILL, then run again


def test_sigkill_then_rerun_skips_present_blobs(registry: RegistryServer, demo_registry: RegistryServer,
                                                fault_proxy_factory: FaultProxyFactory, airgap_env: dict[str, str],
                                                run_airgap: Callable[..., Any]) -> None:
    blobs = blobs_of(demo_registry, "demo/many-layers", "1.0")
    assert len(blobs) == 13
    proxy = fault_proxy_factory(registry.host)
    proxy.rate_limit(4000)  # bytes/s per connection: a few tenths of a second per blob

    def present() -> int:
        with registry.client(timeout=2.0) as client:
            return sum(client.head(f"/v2/demo/many-layers/blobs/{d}").status_code == 200 for d in blobs)

    cmd = [*AIRGAP, "copy", "--jobs", "1", demo_registry.ref("demo/many-layers:1.0"),
           f"{proxy.host}/demo/many-layers:1.0"]
    proc = subprocess.Popen(cmd, env=airgap_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        have = 0
        while have < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            have = present()
        assert proc.poll() is None, "the copy finished before it could be killed; lower the rate limit"
        assert have >= 3, "no progress within 30 s"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.communicate()  # close the pipes
    assert proc.returncode == -signal.SIGKILL
    assert have < 13
    proxy.stop()  # cut what it still relays for the dead process
    present_before = present()

    run = run_airgap("copy", demo_registry.ref("demo/many-layers:1.0"), registry.ref("demo/many-layers:1.0"))
    assert run.returncode == 0, run.output
    summary = SUMMARY.search(run.stdout)
    assert summary, run.stdout
    uploaded, mounted, skipped = (int(g) for g in summary.groups())
    assert skipped >= present_before >= 3  # (>=: a request in flight at the kill may still have completed)
    assert uploaded + mounted + skipped == 13
    assert skopeo_digest(registry.ref("demo/many-layers:1.0")) == skopeo_digest(
        demo_registry.ref("demo/many-layers:1.0"))
