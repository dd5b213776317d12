"""One registry host: TLS and scheme, authentication, retries, redirects and error mapping.

Every request to a registry goes through :meth:`Session.request`. It owns the only httpx client
for the host (one connection pool, bounded by ``max_connections``).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from airgap import __version__, tls
from airgap.errors import (
    AuthError,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RegistryError,
    TLSError,
)
from airgap.model.reference import api_host
from airgap.registry import h11buffer
from airgap.registry.auth import Challenge, Token, TokenCache, basic_header, merge_scopes, parse_challenge
from airgap.registry.credentials import Credential, Keychain

# httpcore reads a response body 64 KiB per socket read, each going through h11's parser in Python: for
# gigabytes of blobs that is tens of thousands of round trips through Python. 1 MiB reads (a read returns
# what the socket holds, up to that) cut the CPU time of a GET of the bench's 640 MiB layer with its digest
# check from 0.91 s (64 KiB) and 0.75 s (256 KiB) to 0.64 s. Memory per connection stays small (one read of
# at most 1 MiB at a time: the bench export's peak RSS grew by ~4 MiB). Kept only where httpcore still has
# the attribute.
_READ_SIZE = 1024 * 1024
try:
    from httpcore._sync.http11 import HTTP11Connection

    if getattr(HTTP11Connection, "READ_NUM_BYTES", _READ_SIZE) < _READ_SIZE:
        HTTP11Connection.READ_NUM_BYTES = _READ_SIZE
except ImportError:  # pragma: no cover - another httpcore layout: keep its default
    pass
h11buffer.install()  # and no copies of a body in h11 (see the module)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
USER_AGENT = f"airgap/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: trust, insecure hosts, timeouts, retries and concurrency."""

    ca_certs: tuple[Path, ...] = ()
    insecure: frozenset[str] = frozenset()
    timeout: float = 120.0
    max_connections: int = 6
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    certs_d: Path = Path("/etc/docker/certs.d")


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.index("]")]
    elif name.count(":") == 1:
        name = name.split(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def redact(url: str | httpx.URL) -> str:
    """A URL fit for messages and logs: no user info, no query values."""
    u = httpx.URL(str(url))
    text = f"{u.scheme}://{u.host}{':' + str(u.port) if u.port else ''}{u.path}"
    if u.query:
        text += "?" + "&".join(f"{k}=…" for k in u.params)
    return text


_SSL_NOISE = re.compile(r"^\[[^\]]*\]|\(_ssl\.c:\d+\)$")  # OpenSSL's "[LIB: CODE]" prefix and source position


def _cert_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


MAX_ANSWER = 16 * 1024 * 1024
"""The most an answer that is read whole may hold (manifests are refused above 4 MiB anyway; tag lists, catalogs,
tokens and errors are far smaller). Blobs are streamed, never read whole."""

NO_SPACE = "no space left on the registry's storage"


def _no_space(detail: object) -> bool:
    """Whether an error's ``detail`` says the registry's disk is full: distribution's filesystem driver puts the
    errno there (``{"Enclosed": {"Op": "write", "Err": 28}}``), others the text."""
    if isinstance(detail, dict):
        return detail.get("Err") == errno.ENOSPC or any(_no_space(v) for v in detail.values())
    if isinstance(detail, list):
        return any(_no_space(v) for v in detail)
    return isinstance(detail, str) and "no space left" in detail.lower()


def storage_full(resp: httpx.Response) -> bool:
    """A 5xx whose body says the registry's disk is full: retrying in a few seconds will not mend it."""
    return resp.status_code >= 500 and "no space left" in registry_errors(resp)[1].lower()


def _error_body(resp: httpx.Response, limit: int = 64 * 1024) -> bytes:
    """The first ``limit`` bytes of an answer's body, read once (a streamed error answer is read no further)."""
    try:
        return resp.content[:limit]
    except httpx.ResponseNotRead:
        pass
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    resp._content = b"".join(chunks)[:limit]  # what the next look at this answer finds
    return resp._content


def registry_errors(resp: httpx.Response) -> tuple[tuple[str, ...], str]:
    """The error codes and a short text from a registry's error answer (JSON or plain)."""
    body = _error_body(resp)
    try:
        obj = json.loads(body)
        errors = obj.get("errors") if isinstance(obj, dict) else None
        if isinstance(errors, list):
            codes = tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict))
            msgs = [str(e.get("message", "")) for e in errors if isinstance(e, dict) and e.get("message")]
            if any(_no_space(e.get("detail")) for e in errors if isinstance(e, dict)):
                msgs.append(NO_SPACE)
            return codes, "; ".join(msgs)
    except (ValueError, RecursionError):  # not JSON, or nested beyond reason
        pass
    text = body[:200].decode("utf-8", "replace").strip().splitlines()
    return (), text[0] if text else ""


class Session:
    """Talks to one registry host. Thread-safe."""

    def __init__(
        self,
        host: str,
        *,
        options: RegistryOptions | None = None,
        keychain: Keychain | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host
        self.api = api_host(host)
        self.options = options or RegistryOptions()
        self.keychain = keychain or Keychain()
        self.insecure = host in self.options.insecure or self.api in self.options.insecure
        self._transport = transport
        self._client = self._make_client()
        self._base: str | None = None
        self._ping_error: RegistryError | None = None
        self._challenge: Challenge | None = None
        self._tokens = TokenCache()
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        certs_d = self.options.certs_d / self.host
        extra = list(self.options.ca_certs) + (sorted(certs_d.glob("*.crt")) if certs_d.is_dir() else [])
        if not extra:
            return tls.system_context()  # shared, loaded once (see the module)
        ctx = ssl.create_default_context()
        for ca in extra:
            origin = "--ca-cert" if ca in self.options.ca_certs else f"for registry {self.host}"
            fix = "give" if ca in self.options.ca_certs else "replace it with"
            try:
                ctx.load_verify_locations(cafile=str(ca))
            except ssl.SSLError as exc:  # OpenSSL found no certificate in it (also a DER one), or a damaged one
                reason = ("no certificate found in it" if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND" else
                          f"OpenSSL cannot read it ({_SSL_NOISE.sub('', str(exc)).strip() or exc.reason})")
                raise InvalidInput(
                    f"CA certificate {ca} ({origin}) is not a PEM certificate: {reason}",
                    hint=f"{fix} the registry's CA certificate in PEM form (a DER one converts with "
                         f"`openssl x509 -inform der -in {ca} -out {ca}.pem`)") from None
            except OSError as exc:  # gone since the option was checked, a dangling link or a directory in certs.d
                raise InvalidInput(f"cannot read CA certificate {ca} ({origin}): {exc.strerror or exc}",
                                   hint="check the path" if ca in self.options.ca_certs else
                                   "fix or remove it") from None
        return ctx

    def _make_client(self) -> httpx.Client:
        n = self.options.max_connections
        return httpx.Client(
            verify=self._ssl_context(),
            timeout=httpx.Timeout(self.options.timeout, connect=15.0, pool=None),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
            transport=self._transport,
        )

    def close(self) -> None:
        self._client.close()

    @property
    def base_url(self) -> str:
        self._ensure_base()
        assert self._base is not None
        return self._base

    def _ensure_base(self) -> None:
        """Find the scheme (HTTPS, or HTTP for insecure and loopback hosts) and the auth challenge."""
        with self._lock:
            if self._base is not None:
                return
            if self._ping_error is not None:
                # already retried to exhaustion: threads that waited on the lock fail at once
                raise self._ping_error
            try:
                self._ping()
            except RegistryError as exc:
                self._ping_error = exc
                raise

    def _ping(self) -> None:
        schemes = ["https", "http"] if (self.insecure or is_loopback(self.api)) else ["https"]
        last: ConnectionFailed | None = None
        for i, scheme in enumerate(schemes):
            base = f"{scheme}://{self.api}"
            final = i == len(schemes) - 1
            try:
                resp = self._retrying(lambda b=base: self._client.get(f"{b}/v2/"), "GET", f"{base}/v2/",
                                      what="reach", tries=None if final else 1)
            except ConnectionFailed as exc:
                last = exc
                continue
            self._accept_ping(base, resp)
            return
        assert last is not None
        raise last

    def _accept_ping(self, base: str, resp: httpx.Response) -> None:
        if resp.status_code in RETRY_STATUSES:
            raise self.error(resp, what="reach")
        if resp.status_code == 401:
            self._challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
        elif resp.status_code != 200:
            raise RegistryError(
                f"{self.host} does not answer like a container registry (GET /v2/ gave {resp.status_code})",
                hint="check the registry host and port; a TLS registry may need https and --ca-cert",
                registry=self.host, status=resp.status_code)
        self._base = base
        log.debug("registry %s: %s, auth %s", self.host, base, self._challenge.scheme if self._challenge else "none")

    # -- authentication -----------------------------------------------------------------------
    def _credential(self) -> Credential | None:
        return self.keychain.lookup(self.host)

    def _authorization(self, scopes: tuple[str, ...], *, force: bool = False) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            cred = self._credential()
            return basic_header(cred.username, cred.password) if cred and not cred.empty else None
        if ch.scheme != "bearer":
            return None
        if not force:
            tok = self._tokens.get(scopes)
            if tok:
                return f"Bearer {tok.value}"
        with self._token_lock:
            if not force:
                tok = self._tokens.get(scopes)
                if tok:
                    return f"Bearer {tok.value}"
            tok = self._fetch_token(ch, scopes)
            self._tokens.put(scopes, tok)
            return f"Bearer {tok.value}"

    def _fetch_token(self, ch: Challenge, scopes: tuple[str, ...]) -> Token:
        realm = ch.realm
        if not realm:
            raise AuthError(f"{self.host} asks for a bearer token but names no realm", registry=self.host,
                            hint="the registry's auth configuration is broken; tell its admin")
        cred = self._credential()
        params: list[tuple[str, str | int | float | bool | None]] = [("service", ch.service)] if ch.service else []
        params += [("scope", s) for s in scopes]
        headers: dict[str, str] = {}
        if cred and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "service": ch.service, "client_id": "airgap", "scope": " ".join(scopes)}

            def send() -> httpx.Response:
                return self._client.post(realm, data=form)
        else:
            if cred and not cred.empty:
                headers["Authorization"] = basic_header(cred.username, cred.password)

            def send() -> httpx.Response:
                return self._client.get(realm, params=params, headers=headers)

        resp = self._retrying(send, "GET", realm, what="get a token from")
        if resp.status_code in (401, 403):
            # name the repository the token was for (the first scope is the request's own)
            repos = [s.split(":")[1] for s in scopes if s.startswith("repository:") and s.count(":") >= 2]
            repository = repos[0] if repos else ""
            who = f"user {cred.username!r}" if cred and cred.username else "anonymous access"
            subject = f"{self.host}/{repository}" if repository else self.host
            raise AuthError(f"{subject}: the token service refused {who} ({resp.status_code})",
                            hint=(f"check the user name and password, or run `airgap login {self.host} -u USER "
                                  "--password-stdin`"
                                  if cred and not cred.empty else
                                  f"the registry needs credentials: {self.keychain.how_to_give(self.host)}"),
                            registry=self.host, repository=repository, status=resp.status_code, method="GET",
                            url=redact(realm))
        if resp.status_code != 200:
            raise RegistryError(f"{self.host}: the token service answered {resp.status_code}",
                                registry=self.host, status=resp.status_code, url=redact(realm),
                                hint="run again later; if it persists, tell the registry's admin")
        try:
            obj = resp.json()
            value = obj.get("token") or obj.get("access_token")
            expires = float(obj.get("expires_in") or 60)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise AuthError(f"{self.host}: the token service gave no token", registry=self.host,
                            hint="tell the registry's admin")
        log.debug("registry %s: token for %s (expires in %ss)", self.host, " ".join(scopes) or "-", expires)
        return Token(value, time.monotonic() + expires, expires)

    # -- requests -----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(
        self,
        method: str,
        path_or_url: str | httpx.URL,
        *,
        scopes: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        stream: bool = False,
        ok: Iterable[int] = (200,),
        repository: str = "",
        what: str = "",
        retry: bool | None = None,
        final: Iterable[int] = (),
    ) -> httpx.Response:
        """Send a request with auth, retries and redirects; raise a mapped error unless the status is ok.
        A status in ``final`` is answered at once, not retried (the caller knows what to do with it)."""
        target = str(path_or_url)
        url = target if "://" in target else self.url(target)
        replayable = content is None or isinstance(content, bytes)
        do_retry = replayable if retry is None else retry
        base_headers = dict(headers or {})

        def once() -> httpx.Response:
            return self._send_authed(method, url, base_headers, content, scopes, stream, replayable)

        resp = self._retrying(once, method, url, what=what, repository=repository,
                              tries=None if do_retry else 1, final=frozenset(final))
        if resp.status_code not in set(ok):
            try:
                raise self.error(resp, what=what, repository=repository)
            finally:
                resp.close()  # a streamed answer too: its connection goes back (or away) now
        return resp

    def _retrying(self, send: Any, method: str, url: str, *, what: str, repository: str = "",
                  tries: int | None = None, final: frozenset[int] = frozenset()) -> httpx.Response:
        policy = self.options.retry
        limit = tries or policy.tries
        attempt = 0
        while True:
            attempt += 1
            try:
                resp: httpx.Response = send()
            except httpx.TransportError as exc:
                if _cert_error(exc):
                    mismatch = "mismatch" in str(exc) or "not valid for" in str(exc)
                    raise TLSError(f"{self.host}: TLS certificate verification failed ({exc})",
                                   registry=self.host, repository=repository, method=method, url=redact(url),
                                   hint=(f"the certificate is trusted but not issued for {self.host}: use a name "
                                         "it lists, or have it reissued for this one; --insecure-registry "
                                         f"{self.host} skips verification") if mismatch else None) from exc
                if attempt >= limit:
                    raise ConnectionFailed(
                        f"cannot {what or 'reach'} {self._subject(repository) or self.host + ' '}after {attempt} "
                        f"tries: {type(exc).__name__}: {exc or 'connection failed'}",
                        registry=self.host, repository=repository, method=method, url=redact(url),
                        retryable=True) from exc
                delay = policy.delay(attempt)
                log.debug("%s %s: %s, retry %d/%d in %.1fs", method, redact(url), type(exc).__name__,
                          attempt, limit - 1, delay)
                time.sleep(delay)
                continue
            if (resp.status_code in RETRY_STATUSES and resp.status_code not in final and attempt < limit
                    and not storage_full(resp)):
                delay = policy.delay(attempt, _retry_after(resp))
                log.debug("%s %s: %d, retry %d/%d in %.1fs", method, redact(url), resp.status_code,
                          attempt, limit - 1, delay)
                resp.close()
                time.sleep(delay)
                continue
            log.debug("%s %s -> %d", method, redact(url), resp.status_code)
            return resp

    def token_refused(self, resp: httpx.Response) -> bool:
        """A 401 to a request that cannot be replayed (a streamed upload), where the bearer token it carried is
        what the registry refused (expired before its time, revoked): the token is dropped, so that the next
        request fetches another, and True is returned (the caller then resumes the upload)."""
        if resp.status_code != 401 or self._challenge is None or self._challenge.scheme != "bearer":
            return False
        ch = parse_challenge(resp.headers.get("www-authenticate", ""))
        if ch is None or ch.scheme != "bearer" or ch.params.get("error") == "insufficient_scope":
            return False
        self._tokens.clear()  # a token granted for more scopes may serve these: none is trusted any more
        return True

    def _send_authed(self, method: str, url: str, headers: dict[str, str],
                     content: bytes | Iterable[bytes] | None, scopes: tuple[str, ...],
                     stream: bool, replayable: bool) -> httpx.Response:
        hdrs = dict(headers)
        auth = self._authorization(scopes)
        if auth:
            hdrs["Authorization"] = auth
        resp = self._send_following(method, url, hdrs, content, stream)
        if resp.status_code == 401 and replayable:
            ch = parse_challenge(resp.headers.get("www-authenticate", ""))
            if ch is not None and ch.scheme in ("bearer", "basic"):
                if self._challenge is None or ch.scheme != self._challenge.scheme or ch.realm:
                    self._challenge = Challenge(ch.scheme, {**ch.params, "scope": ""})
                want = merge_scopes(scopes, ch.scopes)
                self._tokens.drop(scopes)
                auth2 = self._authorization(want, force=True)
                if auth2 and auth2 != auth:
                    resp.close()
                    hdrs["Authorization"] = auth2
                    resp = self._send_following(method, url, hdrs, content, stream)
        return resp

    def _send_following(self, method: str, url: str, headers: dict[str, str],
                        content: bytes | Iterable[bytes] | None, stream: bool) -> httpx.Response:
        origin = httpx.URL(url)
        current = origin
        for _ in range(6):
            req = self._client.build_request(method, current, headers=headers, content=content)
            resp = self._client.send(req, stream=True)
            if resp.status_code not in REDIRECTS or "location" not in resp.headers:
                if not stream:
                    try:
                        self._read_bounded(resp)
                    finally:
                        resp.close()
                return resp
            resp.close()
            nxt = current.join(resp.headers["location"])
            if (nxt.scheme, nxt.host, nxt.port) != (origin.scheme, origin.host, origin.port):
                # never send credentials to another host
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method, content = "GET", None
            current = nxt
        raise RegistryError(f"{self.host}: too many redirects for {redact(origin)}", registry=self.host,
                            hint="the registry's storage redirect is misconfigured; tell its admin")

    def _read_bounded(self, resp: httpx.Response) -> None:
        """``resp.read()``, but at most :data:`MAX_ANSWER` bytes: an answer that is read whole (a manifest, a tag
        list, a token, an error) from a broken or hostile server must not take the memory with it."""
        size = 0  # what is read, not the Content-Length: a HEAD answer declares the size of what it has no body of
        chunks: list[bytes] = []
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER:
                break
            chunks.append(chunk)
        if size > MAX_ANSWER:
            raise RegistryError(
                f"{self.host}: the answer to {resp.request.method} {redact(resp.request.url)} is larger than "
                f"{MAX_ANSWER // (1024 * 1024)} MiB", registry=self.host,
                hint="whatever answered is not behaving as a registry; check the address, or tell its admin")
        resp._content = b"".join(chunks)  # what Response.read() sets (it has no bound)

    def _subject(self, repository: str) -> str:
        return f"{self.host}/{repository} " if repository else ""

    def error(self, resp: httpx.Response, *, what: str, repository: str = "") -> RegistryError:
        """Map an HTTP answer to the right error, naming registry and repository."""
        codes, text = registry_errors(resp)
        method = resp.request.method if resp.request else ""
        url = redact(resp.request.url) if resp.request else ""
        status = resp.status_code
        detail = f"{status} {' '.join(c for c in codes if c) or resp.reason_phrase}"
        if text:
            detail += f" ({text})"
        subject = f"{self.host}/{repository}" if repository else self.host
        msg = f"cannot {what or method} {subject}: {detail}"
        kw: dict[str, Any] = dict(registry=self.host, repository=repository, method=method, url=url,
                                  status=status, codes=codes)
        if status == 401:
            cred = self._credential()
            challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
            if challenge is not None and challenge.insufficient_scope and cred and not cred.empty:
                # the credentials were accepted; the token they got lacks this request's permission
                action = "push" if method in WRITES else "pull"
                who = f"user {cred.username!r}" if cred.username else "the identity token's user"
                where = f"{action} permission on {subject}" if repository else f"the permission to {what or method}"
                return PermissionDenied(msg, hint=f"{who} is authenticated but lacks {where}; ask the registry's admin "
                                                  f"to grant it, or use an account that has it", **kw)
            hint = ("the registry refused these credentials; check them or run `airgap login " + self.host + "`"
                    if cred and not cred.empty else
                    f"the registry needs credentials: {self.keychain.how_to_give(self.host)}")
            return AuthError(msg, hint=hint, **kw)
        if status == 403:
            return PermissionDenied(msg, **kw)
        if status == 404:
            return NotFound(msg, **kw)
        if status == 429:
            return RegistryError(msg, hint="the registry is rate-limiting; wait a while and run again",
                                 retryable=True, **kw)
        if status >= 500 and "no space left" in text.lower():
            return RegistryError(msg, hint="free space there (or tell its admin), then run the same command again: "
                                           "it resumes", **kw)
        if status >= 500:
            return RegistryError(msg, hint="the registry failed; run again later, or tell its admin",
                                 retryable=True, **kw)
        if status == 405 and method in WRITES:
            return RegistryError(msg, hint="the registry takes no pushes (read-only, or in maintenance mode); "
                                           "ask its admin to open it for writes, then run again", **kw)
        return RegistryError(msg, hint="the registry refused the request (its answer is in parentheses); "
                                       "check the image and the registry's logs", **kw)


def check_login(session: Session) -> None:
    """Prove that the session's credentials are accepted (raise AuthError otherwise)."""
    session._ensure_base()
    ch = session._challenge
    if ch is None:
        return
    if ch.scheme == "bearer":
        session._authorization((), force=True)
        return
    session.request("GET", "/v2/", what="log in to")
