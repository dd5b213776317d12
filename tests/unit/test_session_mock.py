"""Registry session edge cases that the real registry does not produce, on httpx's MockTransport."""

import httpx
import pytest

from airgap.errors import AuthError, ConnectionFailed, DigestMismatch, RegistryError
from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor
from airgap.registry import Credential, Keychain, RegistryClient, RegistryOptions, RetryPolicy, Session

FAST = RegistryOptions(retry=RetryPolicy(tries=3, base_delay=0.001, max_delay=0.01))
BLOB = b"blob-content" * 100
DESC = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))


def client_for(handler: object, cred: Credential | None = None) -> RegistryClient:
    kc = Keychain(use_files=False)
    if cred:
        kc.add("reg.example", cred)
    return RegistryClient(Session("reg.example", options=FAST, keychain=kc,
                                  transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]


def test_redirect_to_other_host_drops_authorization() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.url.host, req.headers.get("authorization")))
        if req.url.path == "/v2/":
            if "authorization" not in req.headers:
                return httpx.Response(401, headers={"www-authenticate": 'Basic realm="r"'})
            return httpx.Response(200)
        if req.url.host == "reg.example":
            return httpx.Response(307, headers={"location": "https://storage.example/bucket/blob?sig=1"})
        return httpx.Response(200, content=iter([BLOB]))

    client = client_for(handler, Credential("u", "p"))
    with client.blob_reader("repo", DESC)(0) as chunks:
        assert b"".join(chunks) == BLOB
    blob_requests = [s for s in seen if s[0] == "storage.example"]
    assert blob_requests == [("storage.example", None)]
    assert any(h == "reg.example" and a and a.startswith("Basic ") for h, a in seen)


def test_same_host_redirect_keeps_authorization() -> None:
    seen: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(401 if "authorization" not in req.headers else 200,
                                  headers={"www-authenticate": 'Basic realm="r"'})
        if req.url.path.startswith("/v2/repo/blobs/"):
            return httpx.Response(307, headers={"location": "/storage/x"})
        seen.append(req.headers.get("authorization"))
        return httpx.Response(200, content=iter([BLOB]))

    with client_for(handler, Credential("u", "p")).blob_reader("repo", DESC)(0) as chunks:
        assert b"".join(chunks) == BLOB
    assert seen and seen[0] is not None


def test_bearer_token_cached_and_scoped() -> None:
    tokens: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.example":
            tokens.append(str(req.url.params.get_list("scope")))
            assert req.headers["authorization"].startswith("Basic ")
            return httpx.Response(200, json={"token": "T1", "expires_in": 300})
        if req.headers.get("authorization") != "Bearer T1":
            return httpx.Response(401, headers={"www-authenticate":
                                                'Bearer realm="https://auth.example/token",service="reg"'})
        if req.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=iter([BLOB]))

    client = client_for(handler, Credential("u", "p"))
    for _ in range(3):
        assert client.has_blob("repo", DESC.digest)
    assert tokens == ["['repository:repo:pull']"]


def test_wrong_credentials_token_service() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.example":
            return httpx.Response(401)
        return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/t"'})

    with pytest.raises(AuthError, match="refused user 'u'"):
        client_for(handler, Credential("u", "wrong")).has_blob("repo", DESC.digest)


def test_download_resumes_with_range_and_verifies() -> None:
    calls: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        rng = req.headers.get("range")
        calls.append(rng)
        if rng is None:
            # claim the full length but send only part of it: the client sees the connection end early
            return httpx.Response(200, content=iter([BLOB[:500]]))
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        return httpx.Response(206, content=iter([BLOB[start:]]),
                              headers={"content-range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"})

    with client_for(handler).blob_reader("repo", DESC)(0) as chunks:
        assert b"".join(chunks) == BLOB
    assert calls == [None, "bytes=500-"]


def test_corrupt_blob_detected() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(200, content=iter([b"X" + BLOB[1:]]))

    with pytest.raises(DigestMismatch), client_for(handler).blob_reader("repo", DESC)(0) as chunks:
        b"".join(chunks)


def test_retries_exhausted_is_connection_failed() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        raise httpx.ConnectError("boom")

    with pytest.raises(ConnectionFailed, match="after 3 tries"):
        client_for(handler).has_blob("repo", DESC.digest)


def test_referrers_api_answers_and_absence() -> None:
    subject = Digest.of(b"subject")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(Digest.of(b"sig")), "size": 3,
         "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}]}

    def with_api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        assert req.url.path == f"/v2/repo/referrers/{subject}"
        return httpx.Response(200, json=index, headers={"content-type": "application/vnd.oci.image.index.v1+json"})

    def without_api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(404, text="404 page not found\n")  # distribution 2.8's unknown route

    found = client_for(with_api).referrers("repo", subject)
    assert found is not None and [str(d.digest) for d in found] == [str(Digest.of(b"sig"))]
    assert found[0].artifact_type == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert client_for(without_api).referrers("repo", subject) is None


def test_a_registry_without_referrers_api_is_asked_once() -> None:
    asked: list[str] = []

    def without_api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        asked.append(req.url.path)
        return httpx.Response(404, text="404 page not found\n")

    client = client_for(without_api)
    for n in range(3):
        assert client.referrers(f"repo{n}", Digest.of(b"subject %d" % n)) is None
    assert asked == [f"/v2/repo0/referrers/{Digest.of(b'subject 0')}"]


def test_an_unknown_repository_does_not_say_the_registry_lacks_the_referrers_api() -> None:
    subject = Digest.of(b"subject")

    def with_api(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        if req.url.path.startswith("/v2/gone/"):
            return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "unknown repository"}]})
        return httpx.Response(200, json={"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                         "manifests": []})

    client = client_for(with_api)
    assert client.referrers("gone", subject) is None
    assert client.referrers("repo", subject) == []  # asked, and the API answered


class _OneClient:
    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    def client(self, host: str) -> RegistryClient:
        return self._client


@pytest.mark.parametrize("listing", ["one page", "paged", "refused"])
def test_referrers_tags_are_looked_up_by_name_only_when_the_tag_list_cannot_say(listing: str) -> None:
    from airgap.model.manifest import fallback_tag
    from airgap.model.reference import Reference
    from airgap.registry.endpoints import RegistrySource

    subjects = [Digest.of(b"subject %d" % n) for n in range(3)]
    sig = fallback_tag(subjects[1]) + ".sig"
    sig_manifest = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                    b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'
                    + str(Digest.of(b"{}")).encode() + b'","size":2},"layers":[]}')
    asked: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        asked.append(f"{req.method} {req.url.path}")
        if req.url.path == "/v2/repo/tags/list":
            if listing == "refused":
                return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
            link = {"link": '</v2/repo/tags/list?n=1&last=1.0>; rel="next"'} if listing == "paged" else {}
            return httpx.Response(200, json={"name": "repo", "tags": ["1.0", sig]}, headers=link)
        if req.url.path in (f"/v2/repo/manifests/{sig}", f"/v2/repo/manifests/{Digest.of(sig_manifest)}"):
            return httpx.Response(200, content=b"" if req.method == "HEAD" else sig_manifest, headers={
                "content-type": "application/vnd.oci.image.manifest.v1+json",
                "docker-content-digest": str(Digest.of(sig_manifest)), "content-length": str(len(sig_manifest))})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    source = RegistrySource(_OneClient(client_for(handler)))  # type: ignore[arg-type]
    ref = Reference("reg.example", "repo", "1.0")
    found = [source.referrers(ref, s) for s in subjects]
    assert [[str(d.digest) for d in f] for f in found] == [[], [str(Digest.of(sig_manifest))], []]
    lookups = [a for a in asked if "/manifests/sha256-" in a]
    if listing == "one page":
        assert asked.count("GET /v2/repo/tags/list") == 1
        assert lookups == [f"HEAD /v2/repo/manifests/{sig}"]  # only the tag that exists
    else:
        assert len(lookups) == 3 * 4  # the fallback index and three cosign tags, for each subject


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_check_before_a_push_takes_500_for_absent_at_once(status: int) -> None:
    """distribution answers 500 for good for a link file a crash left empty: the check before a push takes it
    for "absent" (the push then writes the link again) without retrying; 502 and 503 (a proxy, a restart) are
    retried as always, and the plain check retries 500 too."""
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        seen.append(req.method)
        return httpx.Response(status)

    client = client_for(handler)
    if status == 500:
        assert client.has_blob("repo", DESC.digest, mend=True) is False
        assert client.head_manifest("repo", str(DESC.digest), mend=True) is None
        assert seen == ["HEAD", "HEAD"]
    else:
        with pytest.raises(RegistryError, match=f"{status}"):
            client.has_blob("repo", DESC.digest, mend=True)
        assert seen == ["HEAD"] * 3
    seen.clear()
    with pytest.raises(RegistryError, match=f"{status}"):
        client.has_blob("repo", DESC.digest)
    assert seen == ["HEAD"] * 3


def test_a_full_registry_disk_is_recognised_and_not_retried() -> None:
    """distribution's filesystem driver puts the errno in the error's detail; other registries the text."""
    from airgap.registry.session import registry_errors, storage_full

    enospc = (b'{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"DriverName":"filesystem",'
              b'"Enclosed":{"Op":"write","Path":"/var/lib/registry/x","Err":28}}}]}')
    assert registry_errors(httpx.Response(500, content=enospc)) == (
        ("UNKNOWN",), "unknown error; no space left on the registry's storage")
    assert storage_full(httpx.Response(500, content=enospc))
    assert storage_full(httpx.Response(507, content=b"write /data: no space left on device"))
    other = b'{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Enclosed":{"Err":5}}}]}'
    assert not storage_full(httpx.Response(500, content=other))
    assert not storage_full(httpx.Response(400, content=enospc))  # only a failure of the registry's own
    deep = b'{"errors":[{"detail":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}]}"
    assert registry_errors(httpx.Response(500, content=deep))[0] == ()  # read as text, not a crash


def test_an_endless_answer_is_cut_at_the_bound_not_read_into_memory() -> None:
    """A manifest, a tag list or an error answer is read whole; a broken or hostile server sending without end
    (or a decompression bomb) gets one clear error once the bound is passed."""
    from airgap.registry import session as session_module

    sent: list[int] = []

    def endless() -> object:
        block = b"x" * (1024 * 1024)
        while True:
            sent.append(len(block))
            yield block

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        if req.method == "HEAD":  # declares the size of a blob it has no body of
            return httpx.Response(200, headers={"content-length": str(1 << 40)})
        if req.url.path.endswith("/blobs/" + str(DESC.digest)):
            return httpx.Response(500, content=endless())  # a streamed request's error answer
        return httpx.Response(200, content=endless())

    client = client_for(handler)
    with pytest.raises(RegistryError, match="is larger than 16 MiB"):
        client.get_manifest("repo", "endless")
    assert sum(sent) <= session_module.MAX_ANSWER + (1 << 20)
    sent.clear()
    assert client.has_blob("repo", DESC.digest)  # a large Content-Length without a body is no answer to cut
    sent.clear()
    with pytest.raises(RegistryError), client.blob_reader("repo", DESC)(0) as chunks:
        b"".join(chunks)
    assert sum(sent) <= 2 * (1 << 20) * FAST.retry.tries  # each error answer read only to its first 64 KiB


_MANIFEST = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
             b'"application/vnd.oci.image.config.v1+json","digest":"' + str(DESC.digest).encode() + b'","size":'
             + str(DESC.size).encode() + b'},"layers":[]}')
_BLOB_UNKNOWN = {"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]}


@pytest.fixture
def no_settle_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airgap.registry.client.SETTLE_PAUSES", (0.001, 0.001, 0.001))


@pytest.mark.parametrize("refusals, pushed", [(1, True), (3, True), (4, False)])
def test_manifest_refused_for_a_blob_link_being_written_is_pushed_again(no_settle_pauses: None, refusals: int,
                                                                        pushed: bool) -> None:
    """distribution reads a blob link that another client is writing as empty, and refuses the manifest
    (MANIFEST_BLOB_UNKNOWN) though the repository holds the blob: the PUT is tried again a few times."""
    from airgap.model.manifest import Manifest

    manifest = Manifest.parse(_MANIFEST)
    puts: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        assert req.method == "PUT" and req.content == _MANIFEST
        puts.append(1)
        if len(puts) <= refusals:
            return httpx.Response(400, json=_BLOB_UNKNOWN)
        return httpx.Response(201, headers={"docker-content-digest": str(manifest.digest)})

    client = client_for(handler)
    if pushed:
        client.put_manifest("repo", manifest, "v1")
        assert len(puts) == refusals + 1
    else:
        with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN|blob unknown"):
            client.put_manifest("repo", manifest, "v1")
        assert len(puts) == 4


def test_manifest_refused_for_another_reason_is_not_pushed_again(no_settle_pauses: None) -> None:
    from airgap.model.manifest import Manifest

    puts: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        puts.append(1)
        return httpx.Response(400, json={"errors": [{"code": "MANIFEST_INVALID", "message": "manifest invalid"}]})

    with pytest.raises(RegistryError, match="MANIFEST_INVALID|manifest invalid"):
        client_for(handler).put_manifest("repo", Manifest.parse(_MANIFEST), "v1")
    assert len(puts) == 1


def test_a_tag_list_read_in_the_run_is_not_read_again_for_the_referrer_tags() -> None:
    """--repository lists the tags; the cosign-style tag lookup needs the same list (one GET, not two, per
    repository: 800 of an export's 6,457 requests at 800 repositories)."""
    lists: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200)
        lists.append(req.url.path)
        return httpx.Response(200, json={"name": "team/app", "tags": ["v1", "sha256-" + "a" * 64 + ".sig"]})

    client = client_for(handler)
    assert client.list_tags("team/app") == ["v1", "sha256-" + "a" * 64 + ".sig"]
    assert client.tags_in_one_page("team/app") == frozenset({"v1", "sha256-" + "a" * 64 + ".sig"})
    assert lists == ["/v2/team/app/tags/list"]
    assert client.tags_in_one_page("team/web") is not None and len(lists) == 2  # another repository: read
