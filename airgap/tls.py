"""The system's TLS trust store, loaded once per process, and ahead of need.

``ssl.create_default_context()`` makes OpenSSL parse the whole CA bundle: about 30 ms on the 2-core test
VM, on every command that talks to a registry (a loopback registry is tried with HTTPS first, so even
a plain-HTTP one needs it). OpenSSL does that parsing without Python's lock, so :func:`prepare` starts it
on a helper thread while the CLI is still loading the rest of airgap, and :func:`system_context` then
finds it done. The context is shared by every session without a CA of its own, and never changed: a
session that adds CAs (``--ca-cert``, ``certs.d``) builds its own.

The trust store depends on ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``; a context is kept per value of both,
so a change of them (in tests, or by a library user) is seen.
"""

from __future__ import annotations

import os
import ssl
import threading

_Key = tuple[str | None, str | None]

_lock = threading.Lock()
_contexts: dict[_Key, ssl.SSLContext] = {}
_loading: dict[_Key, threading.Thread] = {}


def _key() -> _Key:
    return os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")


def _load(key: _Key) -> None:
    ctx = ssl.create_default_context()
    with _lock:
        _contexts.setdefault(key, ctx)
        _loading.pop(key, None)


def prepare() -> None:
    """Start loading the system context on a helper thread, unless it is loaded or loading already."""
    key = _key()
    with _lock:
        if key in _contexts or key in _loading:
            return
        thread = _loading[key] = threading.Thread(target=_load, args=(key,), name="airgap-tls", daemon=True)
    thread.start()


def system_context() -> ssl.SSLContext:
    """The default verifying context (system CAs, hostname checks) for the current environment. Shared:
    callers must not add CAs to it."""
    key = _key()
    with _lock:
        ctx = _contexts.get(key)
        thread = _loading.get(key)
    if ctx is not None:
        return ctx
    if thread is not None:
        thread.join()
        with _lock:
            ctx = _contexts.get(key)
        if ctx is not None:
            return ctx
    ctx = ssl.create_default_context()  # not prepared, or its thread failed: load it here (errors surface)
    with _lock:
        return _contexts.setdefault(key, ctx)
