"""A Docker registry token server (``auth.token`` realm) for tests, on loopback only.

Implements the two halves of the Docker token protocol that clients use:

* ``GET /token?service=..&scope=..&scope=..`` with optional Basic credentials;
* ``POST /token`` with an OAuth2 form (``grant_type=password`` or ``grant_type=refresh_token``).

Tokens are ES256 (default) or RS256 JWTs signed with ``cryptography``. The header carries ``kid`` =
the libtrust fingerprint of the signing key, and the key's self-signed certificate is written to
:attr:`TokenServer.cert_path` for the registry's ``rootcertbundle``.

Passwords are never logged nor recorded: :attr:`TokenServer.requests` holds only the method, the
requested scopes and the authenticated user name.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = ["GrantPolicy", "TokenRequest", "TokenServer", "default_policy", "libtrust_key_id"]

# (user or None for anonymous, scope type, scope name, requested actions, server) -> granted actions
GrantPolicy = Callable[[str | None, str, str, list[str], "TokenServer"], list[str]]


class TokenRequest(NamedTuple):
    """One request the token server answered (whatever its outcome)."""

    method: str  # "GET" or "POST"
    scopes: tuple[str, ...]  # e.g. ("repository:test/img:pull,push",)
    user: str | None  # authenticated user; None for anonymous or failed authentication


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """The libtrust fingerprint distribution uses as JWT ``kid``.

    base32 of the first 30 bytes of sha256 of the DER SubjectPublicKeyInfo, in groups of 4 joined by ':'.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def default_policy(
    user: str | None, scope_type: str, name: str, actions: list[str], server: TokenServer
) -> list[str]:
    """Authenticated users get everything they ask for; anonymous ones get pull if allowed."""
    if user is not None:
        return list(actions)
    if server.anonymous_pull and scope_type == "repository" and "pull" in actions:
        return ["pull"]
    return []


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:name:pull,push`` -> ("repository", "name", ["pull", "push"]); None if malformed."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    scope_type, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
    return scope_type, name, [a for a in actions.split(",") if a]


class TokenServer:
    """Threaded token server on ``127.0.0.1:<ephemeral>``.

    Attributes are read on every request, so tests may change ``users``, ``anonymous_pull``,
    ``expires_in`` or ``token_ttl`` while it runs.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool = False,
        expires_in: int = 300,
        token_ttl: float | None = None,
        issuer: str = "test-issuer",
        service: str = "test-registry",
        algorithm: Literal["ES256", "RS256"] = "ES256",
        policy: GrantPolicy | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, str] = dict(users if users is not None else {"alice": "s3cret-pass"})
        self.anonymous_pull = anonymous_pull
        # Advertised in the JSON answer.
        self.expires_in = expires_in
        # Real JWT lifetime (``exp - iat``); defaults to ``expires_in``. Negative mints expired tokens.
        # Note distribution 2.8 allows 60 s of clock-skew leeway on ``exp``/``nbf``.
        self.token_ttl = token_ttl
        self.issuer = issuer
        self.service = service
        self.algorithm: Literal["ES256", "RS256"] = algorithm
        self.policy: GrantPolicy = policy if policy is not None else default_policy
        self.requests: list[TokenRequest] = []
        self.issued: list[dict[str, Any]] = []  # claims of every token issued, newest last
        self.minted: list[str] = []  # every token issued (tests check that none leaks into logs), newest last
        self._lock = threading.Lock()
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> user

        self._key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if algorithm == "ES256":
            self._key = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "RS256":
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:  # pragma: no cover - guarded by the Literal type
            raise ValueError(f"unsupported algorithm {algorithm!r}")
        self.kid = libtrust_key_id(self._key.public_key())
        self.cert_path = self.workdir / "token-signer.pem"
        self.cert_path.write_bytes(self._self_signed_cert().public_bytes(serialization.Encoding.PEM))

        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> TokenServer:
        if self._httpd is not None:
            return self
        server = self

        class Handler(_Handler):
            token_server = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="token-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40000``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        """The token endpoint (``auth.token.realm``)."""
        return f"{self.url}/token"

    # ----------------------------------------------------------------- helpers for tests
    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.issued.clear()

    def issue_token(self, user: str | None, scopes: Sequence[str]) -> str:
        """Mint a token directly (bypassing HTTP and the request log)."""
        token, _ = self._mint(user, scopes)
        return token

    # ----------------------------------------------------------------- internals
    def _self_signed_cert(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _mint(self, user: str | None, scopes: Sequence[str]) -> tuple[str, dict[str, Any]]:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            scope_type, name, actions = parsed
            granted = self.policy(user, scope_type, name, actions, self)
            access.append({"type": scope_type, "name": name, "actions": granted})
        now = int(time.time())
        ttl = self.token_ttl if self.token_ttl is not None else self.expires_in
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,  # a string: distribution 2.8 rejects a list
            "exp": int(now + ttl),
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        header = {"typ": "JWT", "alg": self.algorithm, "kid": self.kid}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        token = signing_input + "." + _b64url(self._sign(signing_input.encode("ascii")))
        with self._lock:
            self.issued.append(claims)
            self.minted.append(token)
        return token, claims

    def _record(self, method: str, scopes: Sequence[str], user: str | None) -> None:
        with self._lock:
            self.requests.append(TokenRequest(method, tuple(scopes), user))

    def _check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())

    def _new_refresh_token(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._refresh_tokens[token] = user
        return token

    def _user_for_refresh_token(self, token: str) -> str | None:
        with self._lock:
            return self._refresh_tokens.get(token)


def _split_scopes(values: list[str]) -> list[str]:
    # Clients send several ``scope`` parameters; some send one, space-separated.
    return [s for value in values for s in value.split(" ") if s]


class _Handler(BaseHTTPRequestHandler):
    token_server: TokenServer
    protocol_version = "HTTP/1.1"
    server_version = "test-token-server/1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        # Never log: a request line is harmless but headers may carry credentials.
        return

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _unauthorized(self, message: str) -> None:
        self._send_json(
            401,
            {"errors": [{"code": "UNAUTHORIZED", "message": message}]},
            {"WWW-Authenticate": 'Basic realm="test-token-server"'},
        )

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ("", "")
        username, _, password = decoded.partition(":")
        return username, password

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        ts = self.token_server
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        query = parse_qs(parts.query, keep_blank_values=True)
        scopes = _split_scopes(query.get("scope", []))
        creds = self._basic_credentials()
        user: str | None = None
        if creds is not None:
            if not ts._check_password(*creds):
                ts._record("GET", scopes, None)
                self._unauthorized("invalid username or password")
                return
            user = creds[0]
        ts._record("GET", scopes, user)
        token, claims = ts._mint(user, scopes)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": ts.expires_in,
            "issued_at": dt.datetime.fromtimestamp(claims["iat"], dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if user is not None and query.get("offline_token", [""])[0].lower() == "true":
            body["refresh_token"] = ts._new_refresh_token(user)
        self._send_json(200, body)

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        ts = self.token_server
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if parts.path.rstrip("/") != "/token":
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

        def field(name: str) -> str:
            return form.get(name, [""])[0]

        scopes = _split_scopes(form.get("scope", []))
        grant_type = field("grant_type")
        user: str | None
        if grant_type == "password":
            username, password = field("username"), field("password")
            if not ts._check_password(username, password):
                ts._record("POST", scopes, None)
                self._send_json(401, {"error": "invalid_grant", "error_description": "bad credentials"})
                return
            user = username
        elif grant_type == "refresh_token":
            user = ts._user_for_refresh_token(field("refresh_token"))
            if user is None or user not in ts.users:
                ts._record("POST", scopes, None)
                self._send_json(401, {"error": "invalid_grant", "error_description": "unknown refresh token"})
                return
        else:
            ts._record("POST", scopes, None)
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        ts._record("POST", scopes, user)
        token, claims = ts._mint(user, scopes)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "scope": " ".join(scopes),
            "expires_in": ts.expires_in,
            "issued_at": dt.datetime.fromtimestamp(claims["iat"], dt.UTC).isoformat().replace("+00:00", "Z"),
        }
        if grant_type == "refresh_token":
            body["refresh_token"] = field("refresh_token")
        elif field("access_type") == "offline":
            body["refresh_token"] = ts._new_refresh_token(user)
        self._send_json(200, body)
