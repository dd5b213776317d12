"""Start and stop Debian's ``docker-registry`` (distribution 2.8) on loopback for tests.

:func:`start_registry` writes a config (JSON, which is valid YAML), runs ``docker-registry serve``,
reads the real port from the ``listening on 127.0.0.1:N`` log line and waits until ``GET /v2/``
answers. The returned :class:`RegistryServer` can be stopped and started again on the same port and
storage; upload sessions survive a restart because ``http.secret`` is fixed.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import httpx
import trustme

from .tokenserver import TokenServer

__all__ = [
    "REGISTRY_BINARY",
    "RegistryError",
    "RegistryServer",
    "registry_available",
    "start_registry",
]

REGISTRY_BINARY = "docker-registry"
HTTP_SECRET = "airgap-test-harness-fixed-secret"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_LISTEN_RE = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")

AuthMode = Literal["none", "htpasswd", "token"]

# Safety net: registries still running when the interpreter exits are killed.
_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


class RegistryError(RuntimeError):
    """The registry could not be started (the message carries the tail of its log)."""


def registry_available() -> bool:
    return shutil.which(REGISTRY_BINARY) is not None


def _log_tail(path: Path, start: int = 0, limit: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return data[-limit:].decode("utf-8", "replace")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class RegistryServer:
    """A running (or stopped) ``docker-registry`` process and everything needed to talk to it."""

    host: str  # "127.0.0.1:PORT"
    port: int
    scheme: str  # "http" or "https"
    storage: Path
    config_path: Path
    log: Path
    workdir: Path
    auth: AuthMode = "none"
    username: str | None = None
    password: str | None = None
    ca_cert: Path | None = None  # PEM of the test CA (TLS only)
    cert_dir: Path | None = None  # directory with ``ca.crt`` for skopeo ``--cert-dir`` (TLS only)
    ca: trustme.CA | None = None
    token_server: TokenServer | None = None
    config: dict[str, Any] = field(default_factory=dict)
    owns_token_server: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def ref(self, name: str) -> str:
        """``host/name`` for image references, e.g. ``reg.ref("test/img:v1")``."""
        return f"{self.host}/{name}"

    @property
    def creds(self) -> str | None:
        """``user:password`` for skopeo ``--creds`` (None without auth)."""
        if self.username is None or self.password is None:
            return None
        return f"{self.username}:{self.password}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ssl_context(self) -> ssl.SSLContext | bool:
        """``verify=`` value for httpx: a context trusting the test CA, or True for plain HTTP."""
        if self.ca_cert is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with ``base_url`` set and the test CA trusted (caller closes it)."""
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("verify", self.ssl_context())
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(**kwargs)

    # ----------------------------------------------------------------- lifecycle
    def start(self, timeout: float = START_TIMEOUT) -> RegistryServer:
        """Start the process on ``self.port`` (0 on first start: pick one) with the same storage."""
        if self.running:
            return self
        config = copy.deepcopy(self.config)
        config["http"]["addr"] = f"127.0.0.1:{self.port}"
        self.config_path.write_text(json.dumps(config, indent=2))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        for proxy_var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(proxy_var, None)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        cmd = [REGISTRY_BINARY, "serve", str(self.config_path)]
        # If the test process dies (SIGKILL by a CI timeout), take the registry with it. The death
        # signal follows the *thread* that forked, so only use it from the main thread.
        if shutil.which("setpriv") and threading.current_thread() is threading.main_thread():
            cmd = ["setpriv", "--pdeathsig", "KILL", *cmd]
        with self.log.open("ab") as log_fh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        self.process = proc
        with _live_lock:
            _live.add(proc)
        try:
            port = self._wait_for_port(proc, offset, timeout)
            if self.port and port != self.port:
                raise RegistryError(f"registry listens on {port}, expected {self.port}")
            self.port = port
            self.host = f"127.0.0.1:{port}"
            self._wait_until_ready(proc, offset, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the registry process (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        proc, self.process = self.process, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
        finally:
            with _live_lock:
                _live.discard(proc)

    def restart(self, timeout: float = START_TIMEOUT) -> RegistryServer:
        """Stop and start again on the same port and storage."""
        self.stop()
        return self.start(timeout=timeout)

    def close(self) -> None:
        """Stop the registry and the token server it started (if any)."""
        self.stop()
        if self.owns_token_server and self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_text(self) -> str:
        return _log_tail(self.log, limit=1 << 20)

    # ----------------------------------------------------------------- internals
    def _wait_for_port(self, proc: subprocess.Popen[bytes], offset: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.log.open("rb") as fh:
                    fh.seek(offset)
                    match = _LISTEN_RE.search(fh.read())
            except OSError:
                match = None
            if match:
                return int(match.group(1))
            if proc.poll() is not None:
                raise RegistryError(
                    f"docker-registry exited with {proc.returncode} before listening; "
                    f"log {self.log}:\n{_log_tail(self.log, offset)}"
                )
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"docker-registry did not log 'listening on' within {timeout:.0f}s; "
                    f"log {self.log}:\n{_log_tail(self.log, offset)}"
                )
            time.sleep(0.02)

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], offset: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | str | None = None
        with httpx.Client(verify=self.ssl_context(), timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    response = client.get(f"{self.url}/v2/")
                    if response.status_code in (200, 401):
                        return
                    last_error = f"GET /v2/ answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last_error = exc
                time.sleep(0.05)
        raise RegistryError(
            f"registry at {self.url} not ready ({last_error!r}); "
            f"log {self.log}:\n{_log_tail(self.log, offset)}"
        )


def start_registry(
    workdir: Path,
    *,
    auth: AuthMode = "none",
    tls: bool = False,
    ca: trustme.CA | None = None,
    username: str = "alice",
    password: str = "s3cret-pass",
    token_server: TokenServer | None = None,
    anonymous_pull: bool = False,
    port: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> RegistryServer:
    """Start a registry in a fresh subdirectory of ``workdir``.

    ``auth="token"`` without ``token_server`` starts a :class:`TokenServer` (stopped by
    :meth:`RegistryServer.close`) with the single user ``username``/``password``.
    ``anonymous_pull`` (token auth only) lets anonymous clients pull.
    ``extra_config`` is deep-merged into the generated config.
    """
    if auth not in ("none", "htpasswd", "token"):
        raise ValueError(f"unknown auth mode {auth!r}")
    if anonymous_pull and auth != "token":
        raise ValueError(
            "anonymous_pull needs auth='token' (distribution's htpasswd has no anonymous access)"
        )
    if not registry_available():
        raise RegistryError(f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)")

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
    storage = root / "storage"
    storage.mkdir()

    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": HTTP_SECRET,
        },
    }

    scheme = "http"
    ca_cert: Path | None = None
    cert_dir: Path | None = None
    if tls:
        if ca is None:
            ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = root / "server.crt", root / "server.key"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_file))
        ca_cert = root / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_cert))
        cert_dir = root / "certs.d"
        cert_dir.mkdir()
        ca.cert_pem.write_to_path(str(cert_dir / "ca.crt"))
        config["http"]["tls"] = {"certificate": str(cert_file), "key": str(key_file)}
        scheme = "https"

    owns_token_server = False
    user: str | None = None
    secret: str | None = None
    if auth == "htpasswd":
        htpasswd = root / "htpasswd"
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{username}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
        user, secret = username, password
    elif auth == "token":
        if token_server is None:
            token_server = TokenServer(
                root / "token", users={username: password}, anonymous_pull=anonymous_pull
            )
            owns_token_server = True
        elif anonymous_pull:
            token_server.anonymous_pull = True
        token_server.start()
        config["auth"] = {
            "token": {
                "realm": token_server.realm,
                "service": token_server.service,
                "issuer": token_server.issuer,
                "rootcertbundle": str(token_server.cert_path),
            }
        }
        user, secret = username, password

    if extra_config:
        config = _deep_merge(config, extra_config)
    storage = Path(config["storage"]["filesystem"]["rootdirectory"])

    server = RegistryServer(
        host=f"127.0.0.1:{port}",
        port=port,
        scheme=scheme,
        storage=storage,
        config_path=root / "config.yml",
        log=root / "registry.log",
        workdir=root,
        auth=auth,
        username=user,
        password=secret,
        ca_cert=ca_cert,
        cert_dir=cert_dir,
        ca=ca,
        token_server=token_server,
        config=config,
        owns_token_server=owns_token_server,
    )
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
