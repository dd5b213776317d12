"""Where credentials come from: explicit options, docker's config.json, credential helpers and
containers' auth.json; and storing them after ``airgap login``.

Secrets never reach a log: :class:`Credential` hides them from ``repr``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap.atomic import write_atomic
from airgap.errors import AirgapError, InvalidInput
from airgap.model.reference import DOCKER_HUB, parse_host

log = logging.getLogger(__name__)

HUB_CONFIG_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


class CredentialError(AirgapError):
    exit_code = 2


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def containers_auth_paths() -> list[Path]:
    paths: list[Path] = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime) / "containers" / "auth.json")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(config_home) / "containers" / "auth.json")
    return paths


def _config_key_host(key: str) -> str | None:
    try:
        return parse_host(key.split("/v1/")[0] if "/v1/" in key else key)
    except InvalidInput:
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CredentialError(f"cannot read credentials file {path}: {exc}",
                              hint="fix the file, or move it away") from None
    return obj if isinstance(obj, dict) else {}


def _exact_keys(host: str) -> set[str]:
    """The ``auths`` keys that name ``host`` as logins write them (``host[:port]``; Docker Hub's docker key too)."""
    return {host, HUB_CONFIG_KEY} if host == DOCKER_HUB else {host}


def _from_auths(auths: Any, host: str, path: Path) -> Credential | None:
    if not isinstance(auths, dict):
        return None
    exact = _exact_keys(host)
    # an exact key first (what a login writes), then other spellings of the host (https://host, http://host/v2/)
    keys = sorted((k for k in auths if _config_key_host(k) == host), key=lambda k: k not in exact)
    for key in keys:
        entry = auths[key]
        if not isinstance(entry, dict):
            continue
        token = entry.get("identitytoken") or ""
        user, password = entry.get("username") or "", entry.get("password") or ""
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise CredentialError(f"the 'auth' entry for {host} in {path} is not base64 of user:password",
                                      hint=f"run `airgap login {host}` again") from None
        cred = Credential(user, password, token)
        if not cred.empty:
            return cred
    return None


def _call_helper(name: str, action: str, payload: bytes, host: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``docker-credential-<name> <action>`` with ``payload`` on its standard input."""
    try:
        return subprocess.run([f"docker-credential-{name}", action], input=payload, capture_output=True, timeout=60,
                              check=False)
    except FileNotFoundError:
        raise CredentialError(f"credential helper docker-credential-{name} (configured for {host}) is not installed",
                              hint="install it, or remove it from your docker config.json") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"credential helper docker-credential-{name} did not answer within 60 s") from None
    except OSError as exc:  # not executable, not a program
        raise CredentialError(f"cannot run credential helper docker-credential-{name} (configured for {host}): "
                              f"{exc.strerror or exc}",
                              hint="fix its installation, or remove it from your docker config.json") from None


def run_helper(name: str, host: str) -> Credential | None:
    """Ask ``docker-credential-<name>`` for ``host``'s credentials."""
    server = HUB_CONFIG_KEY if host == DOCKER_HUB else host
    proc = _call_helper(name, "get", server.encode(), host)
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout + proc.stderr:
            return None
        raise CredentialError(f"credential helper docker-credential-{name} failed for {host}",
                              hint="check the helper's own configuration")
    try:
        obj = json.loads(proc.stdout)
        user, secret = str(obj.get("Username", "")), str(obj.get("Secret", ""))
    except (ValueError, AttributeError):
        raise CredentialError(f"credential helper docker-credential-{name} gave an unreadable answer") from None
    if user == "<token>":
        return Credential(identity_token=secret)
    return Credential(user, secret)


@dataclass
class Keychain:
    """Credentials by registry host: explicit ones first, then the config files and helpers.

    What the files and helpers say for a host is looked up once and kept for the life of the keychain (a run):
    every registry request asks for its host's credential, and a credential helper is a process to start (a
    7-image import ran one 125 times). Thread-safe: the threads of a run that ask for a host at once wait for
    one lookup."""

    explicit: dict[str, Credential] = field(default_factory=dict)
    use_files: bool = True
    options: dict[str, str] = field(default_factory=dict)
    """Host -> how the running command takes credentials for it besides `airgap login` (its options, named in the
    hints of errors: ``--dest-username USER ...``); a host without an entry has only `airgap login`."""
    _found: dict[str, Credential | CredentialError | None] = field(default_factory=dict, init=False, repr=False,
                                                                   compare=False)
    _host_locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def add(self, host: str, cred: Credential) -> None:
        host = parse_host(host)
        with self._lock:
            self.explicit[host] = cred
            self._found.pop(host, None)

    def how_to_give(self, host: str) -> str:
        """What to do to give credentials for ``host``, in the words of the running command."""
        option = self.options.get(parse_host(host))
        return f"run `airgap login {host} -u USER --password-stdin`" + (f", or pass {option}" if option else "")

    def lookup(self, host: str) -> Credential | None:
        host = parse_host(host)
        if host in self.explicit:
            return self.explicit[host]
        if not self.use_files:
            return None
        with self._lock:
            lock = self._host_locks.setdefault(host, threading.Lock())
        with lock:  # one lookup per host at a time; the others find its outcome
            with self._lock:
                known = host in self._found
                found = self._found.get(host)
            if not known:
                try:
                    found = self._from_files(host)
                except CredentialError as exc:
                    found = exc
                with self._lock:
                    self._found[host] = found
        if isinstance(found, CredentialError):  # a broken file or helper: said again, not looked up again
            raise CredentialError(found.message, hint=found.hint)
        return found

    def _from_files(self, host: str) -> Credential | None:
        auth_file = os.environ.get("REGISTRY_AUTH_FILE")
        if auth_file:
            cred = _from_auths(_read_json(Path(auth_file)).get("auths"), host, Path(auth_file))
            if cred:
                return cred
        path = docker_config_path()
        config = _read_json(path)
        helpers = config.get("credHelpers")
        if isinstance(helpers, dict):
            for key, helper in helpers.items():
                if _config_key_host(key) == host and isinstance(helper, str):
                    return run_helper(helper, host)
        cred = _from_auths(config.get("auths"), host, path)
        if cred:
            return cred
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            cred = run_helper(store, host)
            if cred:
                return cred
        for p in containers_auth_paths():
            cred = _from_auths(_read_json(p).get("auths"), host, p)
            if cred:
                return cred
        return None


@dataclass(frozen=True)
class StoredCredentials:
    """Where :func:`store_credentials` put them: a file, or the credential helper that file names."""

    path: Path
    helper: str | None = None
    chosen_by: str = ""  # the environment variable that named the file, if one did

    def __str__(self) -> str:
        where = f"{self.path} ({self.chosen_by})" if self.chosen_by else str(self.path)
        return f"docker-credential-{self.helper} (named in {where})" if self.helper else where


def store_credentials(host: str, cred: Credential, path: Path | None = None) -> StoredCredentials:
    """Store credentials where the lookups find them first, as ``podman login`` / ``skopeo login`` and ``docker login``
    do: in ``$REGISTRY_AUTH_FILE`` when it is set (containers' auth.json format), else via docker's configured
    helper, else in docker's config.json. Files are written 0600."""
    host = parse_host(host)
    auth_file = os.environ.get("REGISTRY_AUTH_FILE") if path is None else None
    if auth_file:
        # what `podman login` writes there; docker's helpers belong to docker's config.json, not to this file
        return _store_in_file(Path(auth_file), host, host, cred, helpers=False, chosen_by="REGISTRY_AUTH_FILE")
    key = HUB_CONFIG_KEY if host == DOCKER_HUB else host
    return _store_in_file(path or docker_config_path(), host, key, cred, helpers=True)


def _store_in_file(path: Path, host: str, key: str, cred: Credential, *, helpers: bool,
                   chosen_by: str = "") -> StoredCredentials:
    config = _read_json(path)
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise CredentialError(f"the 'auths' entry of {path} is not a JSON object", hint="fix or remove it")
    for old in [k for k in auths if _config_key_host(k) == host]:
        del auths[old]  # other spellings of the host (https://host, http://host/v2/): the new login replaces them
    helper = None
    if helpers:
        named = config.get("credHelpers")
        if isinstance(named, dict):
            helper = next((h for k, h in named.items() if _config_key_host(k) == host), None)
        helper = helper or config.get("credsStore") or None
    if isinstance(helper, str):
        payload = json.dumps({"ServerURL": key, "Username": cred.username, "Secret": cred.password})
        proc = _call_helper(helper, "store", payload.encode(), host)
        if proc.returncode != 0:
            raise CredentialError(f"credential helper docker-credential-{helper} could not store the credentials")
        auths[key] = {}
    else:
        helper = None
        auth = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        auths[key] = {"auth": auth}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, (json.dumps(config, indent="\t") + "\n").encode(), mode=0o600)
    return StoredCredentials(path, helper, chosen_by)
