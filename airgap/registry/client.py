"""The registry API: manifests, blobs (streamed, resumed), uploads, mounts, tags and the catalog."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from airgap.errors import ConnectionFailed, DigestMismatch, InvalidInput, NotFound, RegistryError
from airgap.model.digest import Digest
from airgap.model.manifest import (
    ACCEPT,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    Manifest,
    fallback_tag,
    referrer_entry,
)
from airgap.registry.auth import repo_scope
from airgap.registry.session import Session, redact, registry_errors, storage_full
from airgap.streams import BlobOpener, ReadAgain, take, verified

log = logging.getLogger(__name__)

# What a check before a push takes for "absent", so that the push goes ahead: distribution answers 500 for
# good when it was stopped while writing a repository's link to a blob or manifest (the file is left empty),
# and only a push of the same content writes the link again. Pushing content that is in fact there does no
# harm; a registry that is failing for another reason fails the push too, which says so.
MENDED_BY_A_PUSH = (500,)
# Seconds between tries of a manifest PUT refused for a blob the repository holds (see put_manifest), and of
# a manifest that cannot be served right after its push (see endpoints.check_servable): another client
# writing the same link or manifest at the same moment.
SETTLE_PAUSES = (0.2, 0.5, 1.0)


@dataclass(frozen=True)
class UploadPolicy:
    monolithic_max: int = 32 * 1024 * 1024
    chunk_size: int = 64 * 1024 * 1024


class UploadSessions(Protocol):
    """Remembers open upload sessions across processes (the import journal implements it)."""

    def get(self, repository: str, digest: str) -> tuple[str, int] | None: ...

    def put(self, repository: str, digest: str, location: str, offset: int) -> None: ...

    def drop(self, repository: str, digest: str) -> None: ...


class RegistryClient:
    """Distribution API calls against one registry, through its :class:`Session`."""

    def __init__(self, session: Session, *, upload: UploadPolicy | None = None) -> None:
        self.session = session
        self.host = session.host
        self.upload = upload or UploadPolicy()
        self._no_referrers_api = False  # the registry said it has none: not asked again for each manifest
        self._listed: dict[str, frozenset[str]] = {}  # repository -> its tags, as list_tags read them in this run

    # -- manifests ----------------------------------------------------------------------------
    def get_manifest(self, repository: str, identifier: str) -> Manifest:
        """Fetch a manifest with its exact bytes; verify its digest."""
        resp = self.session.request(
            "GET", f"/v2/{repository}/manifests/{identifier}", scopes=(repo_scope(repository, "pull"),),
            headers={"Accept": ACCEPT}, repository=repository, what=f"get manifest {identifier} of",
        )
        data = resp.content
        where = f"manifest {self.host}/{repository}@{identifier}"
        if len(data) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{where} is larger than {MAX_MANIFEST_BYTES} bytes", registry=self.host)
        manifest = Manifest.parse(data, resp.headers.get("content-type"), where=where)
        if identifier.startswith("sha256:") and str(manifest.digest) != identifier:
            raise DigestMismatch(f"{where}: the registry sent content with digest {manifest.digest}")
        header = resp.headers.get("docker-content-digest")
        if header and header.startswith("sha256:") and header != str(manifest.digest):
            raise DigestMismatch(f"{where}: content has digest {manifest.digest} but the registry says {header}")
        return manifest

    def head_manifest(self, repository: str, identifier: str, *, mend: bool = False) -> Digest | None:
        """The digest a tag or digest points at, or None when it does not exist. With ``mend`` (before a
        push), an answer of 500 counts as "does not exist" and is not retried: see :data:`MENDED_BY_A_PUSH`."""
        resp = self._check(repository, f"manifests/{identifier}", "manifest", mend, headers={"Accept": ACCEPT})
        if resp.status_code != 200:
            return None
        header = resp.headers.get("docker-content-digest")
        if header:
            return Digest.parse(header)
        return Digest.parse(identifier) if identifier.startswith("sha256:") else None

    def put_manifest(self, repository: str, manifest: Manifest, tag: str | None = None) -> str | None:
        """Push a manifest's exact bytes under its digest, or under ``tag``. Returns the registry's
        ``OCI-Subject`` header (set by registries that indexed the manifest's subject), if any."""
        ident = tag or str(manifest.digest)
        for pause in (*SETTLE_PAUSES, None):
            resp = self.session.request(
                "PUT", f"/v2/{repository}/manifests/{ident}", scopes=(repo_scope(repository, "pull,push"),),
                headers={"Content-Type": manifest.media_type}, content=manifest.data, ok=(200, 201, 202, 400, 409),
                repository=repository, what=f"push manifest {ident} to",
            )
            if resp.status_code != 400:
                break
            if pause is None or "MANIFEST_BLOB_UNKNOWN" not in registry_errors(resp)[0]:
                raise self.session.error(resp, what=f"push manifest {ident} to", repository=repository)
            # distribution writes a blob's link file in place: while another client pushes the same blob into the
            # repository, it can read the link empty and refuse a manifest whose blobs it holds. It settles.
            resp.close()
            time.sleep(pause)
        if resp.status_code == 409 and self.head_manifest(repository, ident) != manifest.digest:
            raise self.session.error(resp, what=f"push manifest {ident} to", repository=repository)
        got = resp.headers.get("docker-content-digest")
        if got and got != str(manifest.digest):
            raise DigestMismatch(
                f"{self.host}/{repository}: the registry stored manifest {ident} as {got}, expected "
                f"{manifest.digest}", hint="the registry rewrote the manifest; it cannot keep digests")
        subject: str | None = resp.headers.get("oci-subject")
        return subject

    # -- referrers (OCI 1.1) ------------------------------------------------------------------
    def referrers(self, repository: str, digest: Digest) -> list[Descriptor] | None:
        """``GET /v2/<repo>/referrers/<digest>``: the referrers' descriptors, or None when the registry has no
        referrers API (404, 405, 400, or an answer that is not an OCI index: distribution 2.8 says 404).

        A registry with the API answers every subject of an existing repository with an index (empty when
        nothing refers to it), so once it has said it has none, that holds for the rest of the run and it is
        not asked again; but not when it only said that the repository is unknown (NAME_UNKNOWN)."""
        if self._no_referrers_api:
            return None
        resp = self.session.request(
            "GET", f"/v2/{repository}/referrers/{digest}", scopes=(repo_scope(repository, "pull"),),
            headers={"Accept": OCI_INDEX}, ok=(200, 400, 404, 405), repository=repository,
            what=f"list referrers of {digest.short} in",
        )
        found = self._referrers(resp, repository, digest)
        if found is None and not (resp.status_code == 404 and "NAME_UNKNOWN" in registry_errors(resp)[0]):
            self._no_referrers_api = True
        return found

    def _referrers(self, resp: httpx.Response, repository: str, digest: Digest) -> list[Descriptor] | None:
        if resp.status_code != 200 or len(resp.content) > MAX_MANIFEST_BYTES:
            return None
        try:
            obj = json.loads(resp.content)
            if not isinstance(obj, dict) or not isinstance(obj.get("manifests"), list) or obj.get(
                    "mediaType", OCI_INDEX) != OCI_INDEX:
                return None
            return [Descriptor.from_json(d, f"referrers of {digest} in {self.host}/{repository}")
                    for d in obj["manifests"]]
        except (ValueError, InvalidInput):
            return None

    def fallback_referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """The referrers listed by the tag schema's index ``sha256-<hex>`` (empty when there is none)."""
        index = self._fallback_index(repository, digest)
        return list(index.manifests) if index is not None else []

    def _fallback_index(self, repository: str, digest: Digest) -> Manifest | None:
        tag = fallback_tag(digest)
        try:
            index = self.get_manifest(repository, tag)
        except NotFound:
            return None
        if index.media_type != OCI_INDEX:
            raise RegistryError(f"{self.host}/{repository}:{tag} has media type {index.media_type}, not the OCI "
                                f"index of the referrers of {digest}", registry=self.host,
                                hint="that tag is reserved for the referrers tag schema; remove or rename it")
        return index

    def push_referrer(self, repository: str, manifest: Manifest) -> bool:
        """Push a manifest that has a ``subject`` by digest (exact bytes). True when the registry says it
        indexed the subject itself (``OCI-Subject``); callers should still check with :meth:`referrers`
        (ECR sends the header without a referrers API)."""
        indexed = self.put_manifest(repository, manifest)
        return manifest.subject is not None and indexed == str(manifest.subject.digest)

    def add_fallback_referrers(self, repository: str, subject: Digest, referrers: list[Manifest], *,
                               tries: int = 8) -> bool:
        """Make the tag schema's index ``sha256-<subject hex>`` list ``referrers`` (read, merge by digest, write,
        re-read to check; again when another writer won the race). Entries already there are kept as they are.
        False when every referrer was listed already (nothing written)."""
        tag = fallback_tag(subject)
        wanted = {str(m.digest): m for m in referrers}
        wrote = False
        for attempt in range(1, tries + 1):
            current = self._fallback_index(repository, subject)
            entries: list[Any] = []
            if current is not None:
                entries = list(json.loads(current.data).get("manifests", []))
            have = {e.get("digest") for e in entries if isinstance(e, dict)}
            missing = [m for d, m in wanted.items() if d not in have]
            if not missing:
                return wrote
            entries.extend(referrer_entry(m) for m in missing)
            data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                              separators=(",", ":")).encode()
            self.put_manifest(repository, Manifest.parse(data, OCI_INDEX), tag)
            wrote = True
            time.sleep(random.uniform(0.0, 0.05 * attempt))  # let a concurrent writer's PUT land before we look
            log.debug("%s/%s:%s: %d referrer(s) added, checking", self.host, repository, tag, len(missing))
        raise RegistryError(f"{self.host}/{repository}:{tag}: the referrers index kept losing entries to other "
                            f"writers ({tries} tries)", registry=self.host, repository=repository, retryable=True,
                            hint="another tool is rewriting it at the same time; run the import again")

    # -- blobs --------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: Digest, *, mend: bool = False) -> bool:
        """Whether ``repository`` holds the blob. With ``mend`` (before a push), an answer of 500 counts as
        "not held" and is not retried: see :data:`MENDED_BY_A_PUSH`."""
        return self._check(repository, f"blobs/{digest}", "blob", mend).status_code == 200

    def _check(self, repository: str, path: str, kind: str, mend: bool,
               headers: dict[str, str] | None = None) -> httpx.Response:
        """HEAD ``/v2/REPOSITORY/PATH``: 200 or 404, and with ``mend`` also an unretried 500."""
        resp = self.session.request(
            "HEAD", f"/v2/{repository}/{path}", scopes=(repo_scope(repository, "pull"),), headers=headers,
            ok=(200, 404, *MENDED_BY_A_PUSH) if mend else (200, 404), final=MENDED_BY_A_PUSH if mend else (),
            repository=repository, what=f"check {kind} in",
        )
        if resp.status_code in MENDED_BY_A_PUSH:
            log.debug("%s/%s: the check of %s answered %d; pushing it again", self.host, repository, path,
                      resp.status_code)
        return resp

    def open_blob(self, repository: str, desc: Descriptor, offset: int = 0) -> Iterator[bytes]:
        """Stream a blob from ``offset``; reconnect with ``Range`` after a dropped connection.

        Only size is checked here; wrap it in :func:`airgap.streams.verified` for the digest.
        """
        path = f"/v2/{repository}/blobs/{desc.digest}"
        pos = offset
        tries = self.session.options.retry.tries
        failures = 0
        while pos < desc.size or (desc.size == 0 and pos == 0 and failures == 0):
            headers = {"Range": f"bytes={pos}-"} if pos else {}
            resp = self.session.request("GET", path, scopes=(repo_scope(repository, "pull"),), headers=headers,
                                        stream=True, ok=(200, 206), repository=repository,
                                        what=f"download blob {desc.digest.short} from")
            try:
                skip = 0
                if pos and resp.status_code == 200:
                    skip = pos  # the server ignored Range: drop what we already have
                elif resp.status_code == 206:
                    start = resp.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
                    if start != str(pos):
                        raise RegistryError(f"{self.host}/{repository}: blob {desc.digest.short} resumed at "
                                            f"byte {start} instead of {pos}", registry=self.host)
                progressed = False
                # no chunk_size: httpx would hold up to that many received bytes back and lose them on a reset
                for chunk in resp.iter_raw():
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    pos += len(chunk)
                    progressed = True
                    yield chunk
                if desc.size == 0:
                    return
                if pos < desc.size:
                    raise httpx.RemoteProtocolError("the registry closed the blob stream early")
            except httpx.TransportError as exc:
                failures = 0 if progressed else failures + 1
                if failures >= tries:
                    raise ConnectionFailed(
                        f"{self.host}/{repository}: download of blob {desc.digest.short} failed at byte {pos} "
                        f"after {failures} tries ({type(exc).__name__})", registry=self.host,
                        repository=repository, retryable=True) from exc
                log.debug("blob %s: %s at byte %d, resuming", desc.digest.short, type(exc).__name__, pos)
            finally:
                resp.close()

    def blob_reader(self, repository: str, desc: Descriptor) -> BlobOpener:
        """A :data:`BlobOpener` over this registry's copy of a blob."""
        from contextlib import contextmanager

        @contextmanager
        def opener(offset: int) -> Iterator[Iterator[bytes]]:
            it = self.open_blob(repository, desc, offset)
            try:
                yield verified(it, desc.digest, desc.size, f"blob {desc.digest} from {self.host}/{repository}",
                               offset=offset)
            finally:
                it.close()  # type: ignore[attr-defined]

        return opener

    def mount_blob(self, repository: str, digest: Digest, from_repository: str) -> str | None:
        """Try a cross-repository mount. True mounted, else the upload location the registry opened."""
        resp = self.session.request(
            "POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={from_repository}",
            scopes=(repo_scope(repository, "pull,push"), repo_scope(from_repository, "pull")),
            ok=(201, 202), repository=repository, what="mount a blob into",
        )
        if resp.status_code == 201:
            return None
        return self._location(resp)

    def _location(self, resp: httpx.Response) -> str:
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryError(f"{self.host}: the registry opened an upload without a Location", registry=self.host,
                                hint="the registry is not speaking the distribution API; tell its admin")
        return str(resp.request.url.join(loc))

    def start_upload(self, repository: str) -> str:
        resp = self.session.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scopes=(repo_scope(repository, "pull,push"),),
            headers={"Content-Length": "0"}, content=b"", ok=(202,), repository=repository,
            what="start an upload to",
        )
        return self._location(resp)

    def upload_offset(self, repository: str, location: str) -> int | None:
        """How many bytes an upload session holds, or None when the session is gone."""
        try:
            resp = self.session.request("GET", location, scopes=(repo_scope(repository, "pull,push"),),
                                        ok=(204, 200, 404), repository=repository, what="check an upload to")
        except RegistryError:
            return None
        rng = resp.headers.get("range")
        if resp.status_code == 404 or not rng:
            return None if resp.status_code == 404 else 0
        try:
            end = int(rng.removeprefix("bytes=").split("-")[1])
        except (IndexError, ValueError):
            return None
        # an empty session says "0-0" too (distribution), so "0-0" cannot be trusted to mean one byte
        return end + 1 if end > 0 else 0

    def push_blob(self, repository: str, desc: Descriptor, opener: BlobOpener, *,
                  mount_from: tuple[str, ...] = (), sessions: UploadSessions | None = None,
                  stopping: threading.Event | None = None) -> str:
        """Make ``desc`` exist in ``repository``. Returns "skipped", "mounted" or "uploaded".

        With ``sessions``, an upload session left by an earlier, interrupted process is continued from the
        registry's offset, and every accepted chunk is recorded there. Once ``stopping`` is set, an upload
        finishes the PATCH in flight and raises :class:`UploadStopped` instead of sending the next one.
        """
        if self.has_blob(repository, desc.digest, mend=True):
            if sessions is not None:
                sessions.drop(repository, str(desc.digest))
            return "skipped"
        if sessions is not None:
            earlier = sessions.get(repository, str(desc.digest))
            if earlier is not None:
                held = self.upload_offset(repository, earlier[0])
                if held is not None and 0 < held <= desc.size:
                    log.debug("blob %s: continuing an earlier upload at byte %d", desc.digest.short, held)
                    self.upload_blob(repository, desc, opener, location=earlier[0], offset=held, sessions=sessions,
                                     stopping=stopping)
                    return "uploaded"
                sessions.drop(repository, str(desc.digest))
        location: str | None = None
        for src in mount_from:
            if src == repository:
                continue
            try:
                location = self.mount_blob(repository, desc.digest, src)
            except RegistryError as exc:
                if exc.status not in (401, 403):
                    raise
                # the credentials may not read the repository to mount from (a hint from an earlier import, a
                # delta's): upload, as without the hint
                log.debug("blob %s: no mount from %s (%s); uploading", desc.digest.short, src, exc.status)
                continue
            if location is None:
                return "mounted"
            break
        self.upload_blob(repository, desc, opener, location=location, sessions=sessions, stopping=stopping)
        return "uploaded"

    def upload_blob(self, repository: str, desc: Descriptor, opener: BlobOpener, *,
                    location: str | None = None, offset: int = 0, sessions: UploadSessions | None = None,
                    stopping: threading.Event | None = None) -> None:
        """Upload a blob: one streamed PUT when small, PATCH chunks when large, resuming after failures."""
        tries = self.session.options.retry.tries
        failures = 0
        refused = False  # the registry refused a continued session's content once
        while True:
            if location is None:
                location, offset = self.start_upload(repository), 0
            newest = [location]  # the Location of the last accepted chunk (distribution's carries the offset)
            try:
                if desc.size <= self.upload.monolithic_max and offset == 0:
                    self._put_final(repository, desc, location, opener, desc.size)
                else:
                    self._patch_chunks(repository, desc, newest, opener, offset, sessions, stopping)
                    try:
                        self._put_final(repository, desc, newest[0], None, 0)
                    except RegistryError as exc:
                        if offset == 0 or refused or exc.status != 400 or "DIGEST_INVALID" not in exc.codes:
                            raise
                        # what this attempt sent is the blob's (its digest was checked as it went), so the bytes the
                        # session held before it are not (an earlier run's, read from a chunk found damaged and
                        # replaced since): the blob goes again, once, from a new session
                        if sessions is not None:
                            sessions.drop(repository, str(desc.digest))
                        log.debug("blob %s: the registry refused the continued session's content (%s); uploading "
                                  "it again", desc.digest.short, exc)
                        refused, location, offset = True, None, 0
                        continue
                if sessions is not None:
                    sessions.drop(repository, str(desc.digest))
                return
            except ReadAgain as exc:
                # what was sent is not the good content: a new session, from the start (each time, the source has
                # replaced a damaged copy it read from with a good one: this ends)
                log.debug("blob %s: %s; uploading it again", desc.digest.short, exc)
                if sessions is not None:  # nor may a later run continue that session
                    sessions.drop(repository, str(desc.digest))
                location, offset = None, 0
                continue
            except (ConnectionFailed, httpx.TransportError, _Retry) as exc:
                if stopping is not None and stopping.is_set():
                    raise UploadStopped(f"upload of blob {desc.digest.short} to {self.host}/{repository}") from exc
                location = newest[0]
                failures += 1
                if failures >= tries:
                    if isinstance(exc, ConnectionFailed) and exc.registry != self.host:
                        raise  # the source failed, and says so
                    cause = exc.__cause__ if isinstance(exc, ConnectionFailed) and exc.__cause__ else exc
                    why = f"{type(cause).__name__}: {cause}" if isinstance(cause, httpx.TransportError) else cause
                    raise ConnectionFailed(
                        f"{self.host}/{repository}: upload of blob {desc.digest.short} failed after {failures} "
                        f"tries ({why})", registry=self.host, repository=repository, retryable=True) from exc
                time.sleep(self.session.options.retry.delay(failures))
                if self.has_blob(repository, desc.digest, mend=True):
                    return  # the registry stored it, only its answer was lost
                held = self.upload_offset(repository, location)
                if held is None or held == 0 or held > desc.size:
                    location, offset = None, 0
                else:
                    offset = held
                log.debug("blob %s: upload interrupted (%s), resuming at %s", desc.digest.short,
                          type(exc).__name__, offset if location else "a new session")

    def _patch_chunks(self, repository: str, desc: Descriptor, newest: list[str], opener: BlobOpener,
                      offset: int, sessions: UploadSessions | None = None,
                      stopping: threading.Event | None = None) -> None:
        """PATCH from ``offset`` to the end; ``newest[0]`` is kept at the latest Location, also on failure."""
        location = newest[0]
        with opener(offset) as source:
            buffer: list[bytes] = []
            it = iter(source)
            while offset < desc.size:
                if stopping is not None and stopping.is_set():
                    raise UploadStopped(f"upload of blob {desc.digest.short} to {self.host}/{repository}")
                n = min(self.upload.chunk_size, desc.size - offset)
                resp = self._send_upload("PATCH", repository, location, take(it, n, buffer), n, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + n - 1}",
                }, ok=(202, 201, 204))
                location = newest[0] = self._location(resp)
                offset += n
                if sessions is not None:
                    sessions.put(repository, str(desc.digest), location, offset)
            for _ in it:  # drain so the source verifies digest and size
                pass

    def _put_final(self, repository: str, desc: Descriptor, location: str, opener: BlobOpener | None,
                   size: int) -> None:
        url = httpx.URL(location).copy_add_param("digest", str(desc.digest))
        if opener is None:
            self._send_upload("PUT", repository, str(url), b"", 0, headers={}, ok=(201, 204))
            return
        with opener(0) as source:
            self._send_upload("PUT", repository, str(url), source, size,
                              headers={"Content-Type": "application/octet-stream"}, ok=(201, 204))

    def _send_upload(self, method: str, repository: str, url: str, body: Iterator[bytes] | bytes, size: int,
                     *, headers: dict[str, str], ok: tuple[int, ...]) -> httpx.Response:
        hdrs = {**headers, "Content-Length": str(size)}
        try:
            resp = self.session.request(method, url, scopes=(repo_scope(repository, "pull,push"),), headers=hdrs,
                                        content=body, ok=ok + (401, 408, 416, 429, 500, 502, 503, 504, 404),
                                        repository=repository, what="upload a blob to", retry=False)
        except ConnectionFailed:
            raise
        if resp.status_code in ok:
            return resp
        if self.session.token_refused(resp):  # a token that died early: a new one, and the upload resumes
            resp.close()
            raise _Retry(f"{method} {redact(url)} answered 401: the registry refused the token; getting a new one")
        if resp.status_code == 404 or (resp.status_code >= 408 and not storage_full(resp)):
            codes, text = registry_errors(resp)
            detail = " ".join(c for c in codes if c) or resp.reason_phrase
            suffix = f" ({text})" if text else ""
            raise _Retry(f"{method} {redact(url)} answered {resp.status_code} {detail}{suffix}")
        raise self.session.error(resp, what="upload a blob to", repository=repository)

    # -- tags and catalog ---------------------------------------------------------------------
    def _paged(self, path: str, key: str, scopes: tuple[str, ...], repository: str, what: str) -> list[str]:
        out: list[str] = []
        url: str | None = path
        while url:
            resp = self.session.request("GET", url, scopes=scopes, repository=repository, what=what)
            try:
                items = resp.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}: {what} gave an unreadable answer", registry=self.host) from None
            out.extend(str(i) for i in items)
            link = resp.headers.get("link", "")
            url = link.split(";")[0].strip().strip("<>") if 'rel="next"' in link else None
            if url:
                url = str(resp.request.url.join(url))
        return out

    def tags_in_one_page(self, repository: str, page: int = 1000) -> frozenset[str] | None:
        """Every tag of ``repository`` when the registry lists them in one answer of at most ``page``;
        None when it pages them, refuses to list them, or answers something unreadable. A list that
        :meth:`list_tags` read in this run already is not read again."""
        listed = self._listed.get(repository)
        if listed is not None:
            return listed
        try:
            resp = self.session.request("GET", f"/v2/{repository}/tags/list?n={page}",
                                        scopes=(repo_scope(repository, "pull"),), repository=repository,
                                        what="list tags of")
        except ConnectionFailed:
            raise
        except RegistryError:  # some registries want a permission beyond pull to list tags
            return None
        if 'rel="next"' in resp.headers.get("link", ""):
            return None
        try:
            tags = resp.json().get("tags") or []
        except (ValueError, AttributeError):
            return None
        if not isinstance(tags, list):
            return None
        return frozenset(str(t) for t in tags)

    def list_tags(self, repository: str) -> list[str]:
        try:
            tags = self._paged(f"/v2/{repository}/tags/list", "tags", (repo_scope(repository, "pull"),),
                               repository, "list tags of")
        except NotFound:
            tags = []
        self._listed[repository] = frozenset(tags)
        return tags

    def catalog(self) -> list[str]:
        return self._paged("/v2/_catalog", "repositories", ("registry:catalog:*",), "", "list repositories of")


class UploadStopped(Exception):
    """The run is stopping (Ctrl-C): the upload sent no further PATCH after the one in flight, so that its
    session stays continuable. distribution refuses, and drops, a session whose data a cut PATCH left
    longer than the offset it last acknowledged."""


class _Retry(Exception):
    """An upload step failed in a way worth retrying from the server's offset or a new session."""
