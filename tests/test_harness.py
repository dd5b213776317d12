"""The test harness itself: real registries, token server, fault proxy and skopeo helpers.

Uses only httpx and skopeo (never the airgap package), so a failure here points at the harness
or the environment, not at airgap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from harness import (
    FaultProxy,
    OciImage,
    RegistryServer,
    SkopeoError,
    TokenRequest,
    TokenServer,
    libtrust_key_id,
    make_oci_layout,
    skopeo_copy,
    skopeo_digest,
    skopeo_inspect_raw,
)
from harness.skopeo import OCI_INDEX, OCI_MANIFEST

RegistryFactory = Callable[..., RegistryServer]
FaultProxyFactory = Callable[..., FaultProxy]

ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
PULL_PUSH = "repository:test/img:pull,push"


# --------------------------------------------------------------------------- helpers


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def push_blob(client: httpx.Client, repo: str, data: bytes, headers: dict[str, str] | None = None) -> str:
    """Monolithic upload: POST, then PUT with the digest added to the Location's own query."""
    digest = sha256(data)
    opened = client.post(f"/v2/{repo}/blobs/uploads/", headers=headers)
    assert opened.status_code == 202, opened.text
    location = opened.url.join(opened.headers["Location"])
    closed = client.put(
        location.copy_add_param("digest", digest),
        content=data,
        headers={**(headers or {}), "Content-Type": "application/octet-stream"},
    )
    assert closed.status_code == 201, closed.text
    return digest


def push_image(
    client: httpx.Client, repo: str, image: OciImage, tag: str, headers: dict[str, str] | None = None
) -> None:
    """Push every blob of ``image`` then its manifest(s) with raw HTTP calls (children first)."""
    manifests = set(image.manifests) | {image.digest}
    for digest, data in image.blobs.items():
        if digest not in manifests:
            assert push_blob(client, repo, data, headers) == digest
    for digest in [*image.manifests, image.digest]:
        data = image.blobs[digest]
        media_type = json.loads(data)["mediaType"]
        ref = tag if digest == image.digest else digest
        response = client.put(
            f"/v2/{repo}/manifests/{ref}",
            content=data,
            headers={**(headers or {}), "Content-Type": media_type},
        )
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == digest


def get_token(ts: TokenServer, scopes: list[str], auth: tuple[str, str] | None = None) -> str:
    params: list[tuple[str, str | int | float | bool | None]] = [("service", ts.service)]
    params += [("scope", s) for s in scopes]
    response = httpx.get(ts.realm, params=params, auth=auth, timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"] == body["access_token"]
    return str(body["token"])


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def decode(part: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return result

    header, claims, _sig = token.split(".")
    return decode(header), decode(claims)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- registries


def test_plain_registry_skopeo_roundtrip(registry: RegistryServer, oci_image: OciImage) -> None:
    assert registry.url == f"http://127.0.0.1:{registry.port}" and registry.auth == "none"
    skopeo_copy(oci_image.ref, f"{registry.host}/test/img:v1")
    assert skopeo_digest(f"{registry.host}/test/img:v1") == oci_image.digest
    with registry.client() as client:
        response = client.get("/v2/test/img/manifests/v1", headers={"Accept": ACCEPT})
        assert response.status_code == 200
        assert response.content == oci_image.manifest
        assert response.headers["Docker-Content-Digest"] == oci_image.digest
        assert response.headers["Content-Type"] == OCI_MANIFEST
    # skopeo also reads the OCI layout itself with the full transport string.
    assert skopeo_inspect_raw(oci_image.ref) == oci_image.manifest


def test_raw_push_then_skopeo_reads_it(registry2: RegistryServer, tmp_path: Any) -> None:
    image = make_oci_layout(tmp_path / "multi", tag="v2", platforms=[("linux", "amd64"), ("linux", "arm64")])
    assert image.media_type == OCI_INDEX and len(image.manifests) == 2
    with registry2.client() as client:
        push_image(client, "test/multi", image, "v2")
    assert skopeo_digest(f"{registry2.host}/test/multi:v2") == image.digest
    child = image.manifests[1]
    assert skopeo_digest(f"{registry2.host}/test/multi@{child}") == child


def test_skopeo_copies_index_between_registries(
    registry: RegistryServer, registry2: RegistryServer, tmp_path: Any
) -> None:
    image = make_oci_layout(tmp_path / "idx", tag="multi", platforms=[("linux", "amd64"), ("linux", "arm64")])
    skopeo_copy(image.ref, f"{registry.host}/src/img:multi")
    skopeo_copy(f"docker://{registry.host}/src/img:multi", f"docker://{registry2.host}/dst/img:multi")
    assert skopeo_digest(f"{registry2.host}/dst/img:multi") == image.digest
    for child in image.manifests:
        assert skopeo_digest(f"{registry2.host}/dst/img@{child}") == child


def test_chunked_upload_and_state_param(registry: RegistryServer) -> None:
    data = bytes(range(256)) * 100
    digest = sha256(data)
    with registry.client() as client:
        location = client.post("/v2/test/img/blobs/uploads/").headers["Location"]
        assert "_state=" in location  # distribution 2.8 needs it back on every call
        first = client.patch(
            location,
            content=data[:10000],
            headers={"Content-Type": "application/octet-stream", "Content-Range": "0-9999"},
        )
        assert first.status_code == 202 and first.headers["Range"] == "0-9999"
        second = client.patch(
            first.headers["Location"],
            content=data[10000:],
            headers={"Content-Type": "application/octet-stream"},
        )
        assert second.status_code == 202
        status = client.get(second.headers["Location"])
        assert status.status_code == 204 and status.headers["Range"] == f"0-{len(data) - 1}"
        done = client.put(httpx.URL(second.headers["Location"]).copy_add_param("digest", digest))
        assert done.status_code == 201, done.text
        blob = client.get(f"/v2/test/img/blobs/{digest}")
        assert blob.status_code == 200 and blob.content == data
        partial = client.get(f"/v2/test/img/blobs/{digest}", headers={"Range": "bytes=100-"})
        assert partial.status_code == 206 and partial.content == data[100:]


def test_htpasswd_registry(htpasswd_registry: RegistryServer, oci_image: OciImage) -> None:
    reg = htpasswd_registry
    assert reg.auth == "htpasswd" and reg.creds == "alice:s3cret-pass"
    with reg.client() as client:
        anonymous = client.get("/v2/")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        assert client.get("/v2/", headers=basic("alice", "wrong")).status_code == 401
        assert client.get("/v2/", headers=basic("mallory", "s3cret-pass")).status_code == 401
        assert client.get("/v2/", headers=basic("alice", "s3cret-pass")).status_code == 200
    skopeo_copy(oci_image.ref, f"{reg.host}/test/img:v1", dest_creds=reg.creds)
    assert skopeo_digest(f"{reg.host}/test/img:v1", creds=reg.creds) == oci_image.digest
    with pytest.raises(SkopeoError) as excinfo:
        skopeo_inspect_raw(f"{reg.host}/test/img:v1", creds="alice:wrong-password")
    message = str(excinfo.value)
    assert "wrong-password" not in message and "***" in message  # credentials are redacted


def test_tls_registry(tls_registry: RegistryServer, oci_image: OciImage) -> None:
    reg = tls_registry
    assert reg.scheme == "https" and reg.url.startswith("https://127.0.0.1:")
    assert reg.ca_cert is not None and reg.cert_dir is not None and (reg.cert_dir / "ca.crt").exists()
    with reg.client() as client:
        assert client.get("/v2/").status_code == 200
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=5) as untrusting:
        untrusting.get(f"{reg.url}/v2/")
    # With certificate verification on, trusting only the test CA.
    skopeo_copy(oci_image.ref, f"{reg.host}/test/img:v1", dest_tls_verify=True, cert_dir=reg.cert_dir)
    assert (
        skopeo_digest(f"{reg.host}/test/img:v1", tls_verify=True, cert_dir=reg.cert_dir) == oci_image.digest
    )
    with pytest.raises(SkopeoError, match="certificate"):
        skopeo_inspect_raw(f"{reg.host}/test/img:v1", tls_verify=True)


def test_token_registry_with_skopeo(token_registry: RegistryServer, oci_image: OciImage) -> None:
    reg = token_registry
    ts = reg.token_server
    assert ts is not None and reg.auth == "token"
    with reg.client() as client:
        challenge = client.get("/v2/")
    assert challenge.status_code == 401
    header = challenge.headers["WWW-Authenticate"]
    assert (
        header.startswith("Bearer ")
        and f'realm="{ts.realm}"' in header
        and 'service="test-registry"' in header
    )

    skopeo_copy(oci_image.ref, f"{reg.host}/test/img:v1", dest_creds=reg.creds)
    assert skopeo_digest(f"{reg.host}/test/img:v1", creds=reg.creds) == oci_image.digest
    assert ts.requests, "skopeo must have asked the token server"
    assert all(r.method == "GET" and r.user == "alice" for r in ts.requests)
    assert any(PULL_PUSH in r.scopes for r in ts.requests)
    assert "s3cret-pass" not in repr(ts.requests)

    before = len(ts.requests)
    with pytest.raises(SkopeoError):
        skopeo_inspect_raw(f"{reg.host}/test/img:v1", creds="alice:nope")
    assert len(ts.requests) > before and ts.requests[-1].user is None


def test_token_protocol_with_httpx(token_registry: RegistryServer, oci_image: OciImage) -> None:
    reg = token_registry
    ts = reg.token_server
    assert ts is not None

    # Wrong credentials: 401 from the token server itself.
    bad = httpx.get(
        ts.realm, params={"service": ts.service, "scope": PULL_PUSH}, auth=("alice", "x"), timeout=5
    )
    assert bad.status_code == 401
    assert ts.requests[-1] == TokenRequest("GET", (PULL_PUSH,), None)

    token = get_token(ts, [PULL_PUSH], auth=("alice", "s3cret-pass"))
    header, claims = jwt_parts(token)
    assert header["alg"] == "ES256" and header["kid"] == ts.kid
    assert len(ts.kid) == 59 and ts.kid.count(":") == 11  # 12 groups of 4 base32 characters
    assert claims["aud"] == "test-registry" and claims["iss"] == "test-issuer" and claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "test/img", "actions": ["pull", "push"]}]
    assert ts.requests[-1] == TokenRequest("GET", (PULL_PUSH,), "alice")

    with reg.client() as client:
        push_image(client, "test/img", oci_image, "v1", headers={"Authorization": f"Bearer {token}"})

        # Anonymous token: empty access (anonymous_pull is off), so the registry refuses even a pull.
        anon = get_token(ts, ["repository:test/img:pull"])
        assert jwt_parts(anon)[1]["access"] == [{"type": "repository", "name": "test/img", "actions": []}]
        refused = client.get(
            "/v2/test/img/manifests/v1", headers={"Authorization": f"Bearer {anon}", "Accept": ACCEPT}
        )
        assert refused.status_code == 401
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]

        # A token for another repository does not open this one.
        other = get_token(ts, ["repository:other/repo:pull"], auth=("alice", "s3cret-pass"))
        assert (
            client.get(
                "/v2/test/img/manifests/v1", headers={"Authorization": f"Bearer {other}", "Accept": ACCEPT}
            ).status_code
            == 401
        )

        # OAuth2 form POST: password grant with a refresh token, then the refresh grant.
        form = {
            "grant_type": "password",
            "username": "alice",
            "password": "s3cret-pass",
            "service": ts.service,
            "scope": "repository:test/img:pull",
            "access_type": "offline",
            "client_id": "harness",
        }
        posted = httpx.post(ts.realm, data=form, timeout=5)
        assert posted.status_code == 200
        refresh = posted.json()["refresh_token"]
        refreshed = httpx.post(
            ts.realm,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "service": ts.service,
                "scope": "repository:test/img:pull",
            },
            timeout=5,
        )
        assert refreshed.status_code == 200
        access = refreshed.json()["access_token"]
        pulled = client.get(
            "/v2/test/img/manifests/v1", headers={"Authorization": f"Bearer {access}", "Accept": ACCEPT}
        )
        assert pulled.status_code == 200 and pulled.content == oci_image.manifest
        assert httpx.post(ts.realm, data={**form, "password": "bad"}, timeout=5).status_code == 401
        assert (
            httpx.post(
                ts.realm, data={"grant_type": "refresh_token", "refresh_token": "forged"}, timeout=5
            ).status_code
            == 401
        )
    assert [r.method for r in ts.requests[-4:]] == ["POST", "POST", "POST", "POST"]
    assert [r.user for r in ts.requests[-4:]] == ["alice", "alice", None, None]


def test_token_server_rs256_and_anonymous_pull(
    registry_factory: RegistryFactory, token_server: TokenServer, oci_image: OciImage
) -> None:
    rs = TokenServer(token_server.workdir / "rs256", algorithm="RS256", expires_in=60)
    reg = registry_factory(auth="token", token_server=rs, anonymous_pull=True)
    try:
        assert rs.anonymous_pull and reg.token_server is rs
        skopeo_copy(oci_image.ref, f"{reg.host}/test/img:v1", dest_creds="alice:s3cret-pass")
        # Anonymous pull works (no credentials at all) ...
        assert skopeo_digest(f"{reg.host}/test/img:v1") == oci_image.digest
        assert any(r.user is None for r in rs.requests)
        # ... but an anonymous push is denied.
        anon = get_token(rs, [PULL_PUSH])
        assert jwt_parts(anon)[0]["alg"] == "RS256"
        assert jwt_parts(anon)[1]["access"][0]["actions"] == ["pull"]
        with reg.client() as client:
            denied = client.post("/v2/test/img/blobs/uploads/", headers={"Authorization": f"Bearer {anon}"})
            assert denied.status_code == 401
    finally:
        rs.stop()  # a token server passed in is the caller's to stop


def test_libtrust_key_id_format(token_server: TokenServer) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    kid = libtrust_key_id(key)
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert libtrust_key_id(key) == kid and token_server.kid != kid


def test_registry_restart_keeps_content_and_upload_sessions(
    registry: RegistryServer, oci_image: OciImage
) -> None:
    skopeo_copy(oci_image.ref, f"{registry.host}/test/img:v1")
    port = registry.port
    data = b"x" * 5000 + b"y" * 5000
    with registry.client() as client:
        location = client.post("/v2/test/img/blobs/uploads/").headers["Location"]
        first = client.patch(
            location, content=data[:5000], headers={"Content-Type": "application/octet-stream"}
        )
        assert first.status_code == 202

    registry.stop()
    assert not registry.running and not port_is_open(port)
    registry.start()
    assert registry.running and registry.port == port and registry.host == f"127.0.0.1:{port}"
    assert skopeo_digest(f"{registry.host}/test/img:v1") == oci_image.digest

    # The upload session survives the restart (fixed http.secret, same storage).
    with registry.client() as client:
        second = client.patch(
            first.headers["Location"],
            content=data[5000:],
            headers={"Content-Type": "application/octet-stream"},
        )
        assert second.status_code == 202, second.text
        done = client.put(httpx.URL(second.headers["Location"]).copy_add_param("digest", sha256(data)))
        assert done.status_code == 201, done.text

    registry.restart()
    assert registry.port == port
    assert "listening on" in registry.log_text()


def test_registry_extra_config_and_fixed_port(registry_factory: RegistryFactory) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    reg = registry_factory(port=free_port, extra_config={"http": {"headers": {"X-Harness": ["yes"]}}})
    assert reg.port == free_port
    with reg.client() as client:
        assert client.get("/v2/").headers["X-Harness"] == "yes"
    assert json.loads(reg.config_path.read_text())["storage"]["delete"] == {"enabled": True}


# --------------------------------------------------------------------------- fault proxy


def test_proxy_passthrough_keeps_location_on_proxy(
    registry: RegistryServer, fault_proxy_factory: FaultProxyFactory, oci_image: OciImage
) -> None:
    proxy = fault_proxy_factory(registry.host)
    skopeo_copy(oci_image.ref, f"{proxy.host}/test/img:v1")
    assert skopeo_digest(f"{registry.host}/test/img:v1") == oci_image.digest
    assert "PUT /v2/test/img/manifests/v1" in proxy.requests
    assert proxy.connections >= len(proxy.requests) and proxy.faults_injected == 0
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        opened = client.post("/v2/test/img/blobs/uploads/")
        assert opened.status_code == 202
        assert httpx.URL(opened.headers["Location"]).netloc.decode() == proxy.host

        # A chunked (Transfer-Encoding) PATCH body goes through the proxy's framing intact.
        data = b"chunked body " * 4000

        def body() -> Any:
            for i in range(0, len(data), 7000):
                yield data[i : i + 7000]

        patched = client.patch(
            opened.headers["Location"], content=body(), headers={"Content-Type": "application/octet-stream"}
        )
        assert patched.status_code == 202
        assert patched.request.headers.get("Transfer-Encoding") == "chunked"
        done = client.put(httpx.URL(patched.headers["Location"]).copy_add_param("digest", sha256(data)))
        assert done.status_code == 201
    assert any(line.startswith("PATCH /v2/test/img/blobs/uploads/") for line in proxy.requests)


def test_proxy_http_error(registry: RegistryServer, fault_proxy_factory: FaultProxyFactory) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.http_error(503, times=2)
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        statuses = [client.get("/v2/").status_code for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert proxy.faults_injected == 2 and proxy.pending_faults == 0

        proxy.http_error(429, retry_after=7)
        limited = client.get("/v2/")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
        assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"

        # match= limits a fault to some requests; a request body is consumed, not forwarded.
        proxy.http_error(500, match=r"^POST ")
        assert client.get("/v2/").status_code == 200
        assert client.post("/v2/test/img/blobs/uploads/", content=b"ignored").status_code == 500
        assert client.post("/v2/test/img/blobs/uploads/").status_code == 202
    assert proxy.faults_injected == 4
    assert len(proxy.requests) == 7
    with pytest.raises(RuntimeError):
        FaultProxy(registry.host, mode="tcp").http_error(500)


def test_proxy_reset_after_cuts_blob_download(
    registry: RegistryServer, fault_proxy_factory: FaultProxyFactory
) -> None:
    data = hashlib.shake_256(b"blob").digest(300_000)
    with registry.client() as client:
        digest = push_blob(client, "test/img", data)
    proxy = fault_proxy_factory(registry.host)
    proxy.reset_after(5000)
    received = bytearray()
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        with (
            pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
            client.stream("GET", f"/v2/test/img/blobs/{digest}") as response,
        ):
            assert response.status_code == 200
            for piece in response.iter_bytes():
                received += piece
        assert 0 < len(received) < 5000  # headers count towards the 5000 bytes
        assert data.startswith(bytes(received))
        # The fault was one-shot: the next download is whole.
        again = client.get(f"/v2/test/img/blobs/{digest}")
        assert again.status_code == 200 and sha256(again.content) == digest
    assert proxy.faults_injected == 1 and proxy.fault_log[0].startswith("reset after 5000 bytes")


def test_proxy_drop_every(registry: RegistryServer, fault_proxy_factory: FaultProxyFactory) -> None:
    proxy = fault_proxy_factory(registry.host)
    proxy.drop_every(3)
    outcomes: list[int | str] = []
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        for _ in range(6):
            try:
                outcomes.append(client.get("/v2/").status_code)
            except httpx.RemoteProtocolError:
                outcomes.append("dropped")
    assert outcomes == [200, 200, "dropped", 200, 200, "dropped"]
    assert proxy.faults_injected == 2
    proxy.clear()
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert [client.get("/v2/").status_code for _ in range(3)] == [200, 200, 200]


def test_proxy_stall_and_rate_limit(registry: RegistryServer, fault_proxy_factory: FaultProxyFactory) -> None:
    proxy = fault_proxy_factory(registry.host)
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        proxy.stall(0.6)
        started = time.monotonic()
        assert client.get("/v2/").status_code == 200
        assert time.monotonic() - started >= 0.6

        proxy.stall(3)
        with pytest.raises(httpx.ReadTimeout):
            client.get("/v2/", timeout=httpx.Timeout(5, read=0.3))
        started = time.monotonic()
        assert client.get("/v2/").status_code == 200
        assert time.monotonic() - started < 0.5

        data = hashlib.shake_256(b"rate").digest(60_000)
        digest = push_blob(client, "test/img", data)  # uploads go through the proxy too
        proxy.rate_limit(200_000)
        started = time.monotonic()
        assert client.get(f"/v2/test/img/blobs/{digest}").content == data
        assert time.monotonic() - started >= 0.25
        proxy.clear()
        started = time.monotonic()
        assert client.get(f"/v2/test/img/blobs/{digest}").content == data
        assert time.monotonic() - started < 0.25


def test_proxy_tcp_mode_passes_tls_through(
    tls_registry: RegistryServer, fault_proxy_factory: FaultProxyFactory, oci_image: OciImage
) -> None:
    reg = tls_registry
    proxy = fault_proxy_factory(reg.host, mode="tcp", scheme="https")
    assert reg.cert_dir is not None
    # The server certificate names 127.0.0.1, so it verifies through the proxy too.
    skopeo_copy(oci_image.ref, f"{proxy.host}/test/img:v1", dest_tls_verify=True, cert_dir=reg.cert_dir)
    assert (
        skopeo_digest(f"{reg.host}/test/img:v1", tls_verify=True, cert_dir=reg.cert_dir) == oci_image.digest
    )
    assert proxy.requests == []  # not HTTP-aware in tcp mode

    with httpx.Client(base_url=proxy.url, verify=reg.ssl_context(), timeout=5) as client:
        assert client.get("/v2/").status_code == 200
    with httpx.Client(base_url=proxy.url, verify=reg.ssl_context(), timeout=5) as client:
        proxy.reset_after(100)  # cuts the TLS handshake
        with pytest.raises(httpx.HTTPError):
            client.get("/v2/")
        proxy.drop_every(1)
        with pytest.raises(httpx.HTTPError):
            client.get("/v2/")
        proxy.clear()
        proxy.stall(0.5)
    with httpx.Client(base_url=proxy.url, verify=reg.ssl_context(), timeout=5) as client:
        started = time.monotonic()
        assert client.get("/v2/").status_code == 200
        assert time.monotonic() - started >= 0.5
    assert proxy.faults_injected == 3


def test_proxy_answers_502_when_upstream_is_down(
    registry: RegistryServer, fault_proxy_factory: FaultProxyFactory
) -> None:
    proxy = fault_proxy_factory(registry.host)
    registry.stop()
    with httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert client.get("/v2/").status_code == 502
        registry.start()
        assert client.get("/v2/").status_code == 200


def test_proxy_stop_is_bounded(registry: RegistryServer) -> None:
    proxy = FaultProxy(registry.host).start()
    proxy.stall(30)
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    stalled = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    stalled.sendall(b"GET /v2/ HTTP/1.1\r\nHost: " + proxy.host.encode() + b"\r\n\r\n")
    time.sleep(0.2)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    assert stalled.recv(100) == b""  # closed without an answer
    idle.close()
    stalled.close()
    assert not port_is_open(proxy.port)
