"""A loopback TCP proxy that injects network and HTTP faults, for resilience tests.

Two modes:

``mode="http"`` (default, for plain-HTTP upstreams)
    Every client connection carries one request: the proxy reads the request head and its body
    (``Content-Length`` or ``Transfer-Encoding: chunked``), forwards it on a fresh upstream
    connection with ``Connection: close`` (the ``Host`` header is kept, so the registry's
    ``Location`` headers point back at the proxy), relays the answer until the upstream closes, then
    closes the client connection. HTTP faults (:meth:`~FaultProxy.http_error`,
    :meth:`~FaultProxy.drop_every`) and per-request network faults work here. A connection that
    starts with a TLS handshake is relayed untouched and no fault applies to it (skopeo probes
    ``https`` first even with ``--tls-verify=false``).

``mode="tcp"`` (for TLS upstreams)
    Bytes are relayed untouched. :meth:`~FaultProxy.reset_after`, :meth:`~FaultProxy.stall` and
    :meth:`~FaultProxy.drop_every` count connections instead of requests;
    :meth:`~FaultProxy.http_error` is refused.

Faults are one-shot or counted, may be set while the proxy runs, and are consumed atomically.
In http mode, ``http_error`` and ``drop_every`` answer without reaching the upstream, while
``stall`` and ``reset_after`` act on the *answer*: the upstream has already processed the request
(``reset_after(0)`` is "the request was applied but the answer was lost").
``reset_after`` counts the upstream's response bytes *including* the status line and headers.
Every socket has a timeout and :meth:`~FaultProxy.stop` interrupts every wait, so nothing hangs.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import re
import select
import socket
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal

__all__ = ["FaultProxy", "ProxyProtocolError"]

_CHUNK = 64 * 1024
_HEAD_LIMIT = 64 * 1024
MAX_DROPS_PER_REQUEST = 2  # drop_every: how often one request line may be dropped
_SESSION = re.compile(r"/uploads/[^/?&\s]+")
_STATE = re.compile(r"[?&]_state=[^&\s]*")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection"}
_ERROR_CODES = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED", 403: "DENIED", 503: "UNAVAILABLE"}


class ProxyProtocolError(Exception):
    """The client sent something the proxy cannot frame."""


@dataclass
class _Fault:
    kind: Literal["reset", "stall", "error"]
    remaining: int
    pattern: re.Pattern[str] | None
    n_bytes: int = 0
    seconds: float = 0.0
    status: int = 0
    retry_after: str | None = None


class _Reader:
    """Buffered reads from a socket: lines, heads and exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, delim: bytes, limit: int) -> bytes | None:
        """Bytes up to and including ``delim``; None on a clean EOF before any byte."""
        start = 0
        while True:
            idx = self.buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise ProxyProtocolError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill():
                if self.buf:
                    raise ProxyProtocolError("connection closed mid-message")
                return None

    def read_line(self) -> bytes:
        line = self.read_until(b"\n", _HEAD_LIMIT)
        if line is None:
            raise ProxyProtocolError("connection closed mid-body")
        return line

    def iter_exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buf and not self._fill():
                raise ProxyProtocolError(f"connection closed with {n} body bytes missing")
            take = min(n, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            n -= take
            yield piece


def _parse_upstream(upstream: str) -> tuple[str, int]:
    host, sep, port = upstream.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream must be host:port, got {upstream!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _hard_reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes still in the kernel send queue (Linux TIOCOUTQ); 0 when unknown."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])
    except (OSError, ValueError):
        return 0


class FaultProxy:
    """Proxy ``127.0.0.1:<ephemeral>`` -> ``upstream`` with injectable faults."""

    def __init__(
        self,
        upstream: str,
        *,
        mode: Literal["http", "tcp"] = "http",
        timeout: float = 30.0,
        scheme: str = "http",
    ) -> None:
        if mode not in ("http", "tcp"):
            raise ValueError(f"mode must be 'http' or 'tcp', got {mode!r}")
        self.upstream = upstream
        self._upstream_addr = _parse_upstream(upstream)
        self.mode: Literal["http", "tcp"] = mode
        self.timeout = timeout
        self.scheme = scheme

        # Counters (read freely; appended under the lock).
        self.connections = 0
        self.requests: list[str] = []
        self.faults_injected = 0
        self.fault_log: list[str] = []  # one description per injected fault

        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._rate: float | None = None
        self._drop_every = 0
        self._drop_pattern: re.Pattern[str] | None = None
        self._drop_counter = 0
        self._dropped: Counter[str] = Counter()

        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._port = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(128)
        listener.settimeout(0.2)
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"faultproxy-{self._port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection; join all threads."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, to use in image references instead of the upstream's host."""
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    # ----------------------------------------------------------------- faults
    @staticmethod
    def _compile(match: str | None) -> re.Pattern[str] | None:
        return re.compile(match) if match is not None else None

    def reset_after(self, n_bytes: int, times: int = 1, *, match: str | None = None) -> None:
        """Cut the next ``times`` responses (tcp mode: connections) with a TCP RST after relaying
        ``n_bytes`` of the upstream's answer. ``match``: regex searched in the request line (http mode)."""
        self._add(_Fault("reset", times, self._compile(match), n_bytes=n_bytes))

    def stall(self, seconds: float, times: int = 1, *, match: str | None = None) -> None:
        """Hold the next ``times`` responses (tcp mode: connections) for ``seconds`` before relaying."""
        self._add(_Fault("stall", times, self._compile(match), seconds=seconds))

    def http_error(
        self,
        status: int,
        times: int = 1,
        retry_after: float | str | None = None,
        *,
        match: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (matching ``match``) with ``status`` and a JSON error,
        without reaching the upstream. ``retry_after`` becomes a ``Retry-After`` header."""
        if self.mode != "http":
            raise RuntimeError("http_error needs mode='http'")
        if retry_after is not None and not isinstance(retry_after, str):
            retry_after = f"{retry_after:g}"
        self._add(_Fault("error", times, self._compile(match), status=status, retry_after=retry_after))

    def drop_every(self, n: int, *, match: str | None = None) -> None:
        """Close every ``n``-th request's connection (tcp mode: every n-th connection) without an
        answer; counting starts now. ``n=0`` disables. With ``n > 1`` one request line is dropped at
        most ``MAX_DROPS_PER_REQUEST`` times (flakiness, not an outage)."""
        with self._lock:
            self._drop_every = n
            self._drop_pattern = self._compile(match)
            self._drop_counter = 0
            self._dropped.clear()

    def rate_limit(self, bytes_per_second: float | None) -> None:
        """Throttle both directions of every connection; None or 0 removes the limit."""
        with self._lock:
            self._rate = float(bytes_per_second) if bytes_per_second else None

    def clear(self) -> None:
        """Remove every pending fault and the rate limit (counters are kept)."""
        with self._lock:
            self._faults.clear()
            self._rate = None
            self._drop_every = 0
            self._drop_pattern = None
            self._drop_counter = 0
            self._dropped.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.connections = 0
            self.requests.clear()
            self.faults_injected = 0
            self.fault_log.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def _take(self, kind: str, line: str | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind != kind or fault.remaining <= 0:
                    continue
                if fault.pattern is not None and (line is None or not fault.pattern.search(line)):
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _take_drop(self, line: str | None) -> bool:
        with self._lock:
            if self._drop_every <= 0:
                return False
            if self._drop_pattern is not None and (line is None or not self._drop_pattern.search(line)):
                return False
            self._drop_counter += 1
            if self._drop_counter % self._drop_every:
                return False
            # The count is global: with a multiple of n clients taking turns, one client's retries could
            # land on every n-th slot until its tries run out. A flaky network (n > 1) drops a request now
            # and then, not the same one forever: one request line is dropped at most MAX_DROPS_PER_REQUEST
            # times. n = 1 is an outage: everything that matches is dropped. An upload's line names its session
            # (uuid, distribution's _state), which each retry opens anew: counted as one line, per blob.
            if line is not None and self._drop_every > 1:
                key = _STATE.sub("", _SESSION.sub("/uploads/*", line))
                if self._dropped[key] >= MAX_DROPS_PER_REQUEST:
                    return False
                self._dropped[key] += 1
            return True

    def _injected(self, what: str) -> None:
        with self._lock:
            self.faults_injected += 1
            self.fault_log.append(what)

    # ----------------------------------------------------------------- plumbing
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack_close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stopping.is_set() and listener is not None:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(self.timeout)
            with self._lock:
                self.connections += 1
            self._track(client)
            self._spawn(functools.partial(self._handle, client), f"faultproxy-conn-{self._port}")

    def _connect_upstream(self) -> socket.socket:
        sock = socket.create_connection(self._upstream_addr, timeout=min(self.timeout, 10.0))
        sock.settimeout(self.timeout)
        self._track(sock)
        return sock

    def _send(self, sock: socket.socket, data: bytes) -> None:
        """sendall, throttled by the current rate limit."""
        view = memoryview(data)
        while view:
            rate = self._rate
            if rate is None:
                sock.sendall(view)
                return
            piece = view[: max(1, min(len(view), int(rate / 20) or 1))]
            sock.sendall(piece)
            view = view[len(piece) :]
            if self._stopping.wait(len(piece) / rate):
                raise OSError("proxy stopping")

    def _handle(self, client: socket.socket) -> None:
        try:
            if self.mode == "tcp":
                self._handle_tcp(client)
                return
            try:
                first = client.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if not first:
                return
            if first == b"\x16":  # TLS ClientHello: pass through, no faults
                self._relay_raw(client, None, None)
            else:
                self._handle_http(client)
        except (OSError, ProxyProtocolError):
            pass
        finally:
            self._untrack_close(client)

    # ----------------------------------------------------------------- tcp mode
    def _handle_tcp(self, client: socket.socket) -> None:
        if self._take_drop(None):
            self._injected("drop connection")
            return
        stall = self._take("stall", None)
        reset = self._take("reset", None)
        self._relay_raw(client, stall, reset)

    def _relay_raw(self, client: socket.socket, stall: _Fault | None, reset: _Fault | None) -> None:
        try:
            upstream = self._connect_upstream()
        except OSError:
            return
        try:
            pump = self._spawn(lambda: self._pump(client, upstream), f"faultproxy-up-{self._port}")
            self._relay_response(upstream, client, stall, reset, "connection")
            pump.join(self.timeout)
        finally:
            self._untrack_close(upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """client -> upstream until EOF, then half-close."""
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                self._send(dst, data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _relay_response(
        self,
        upstream: socket.socket,
        client: socket.socket,
        stall: _Fault | None,
        reset: _Fault | None,
        unit: str,
    ) -> bool:
        """upstream -> client until EOF, applying stall/reset. Returns False if the client was reset."""
        if stall is not None:
            self._injected(f"stall {stall.seconds}s ({unit})")
            if self._stopping.wait(stall.seconds):
                return True
        budget = reset.n_bytes if reset is not None else None
        if budget is not None and budget <= 0:
            return self._reset_client(client, upstream, reset, unit)
        while True:
            try:
                data = upstream.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                break
            if budget is not None and len(data) >= budget:
                self._send(client, data[:budget])
                return self._reset_client(client, upstream, reset, unit)
            self._send(client, data)
            if budget is not None:
                budget -= len(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        return True

    def _reset_client(
        self, client: socket.socket, upstream: socket.socket, reset: _Fault | None, unit: str
    ) -> bool:
        n = reset.n_bytes if reset is not None else 0
        self._injected(f"reset after {n} bytes ({unit})")
        # Let the bytes already relayed reach the client before the RST discards the send queue.
        deadline = time.monotonic() + 2.0
        while _unsent_bytes(client) > 0 and time.monotonic() < deadline and not self._stopping.is_set():
            time.sleep(0.005)
        with self._lock:
            self._sockets.discard(client)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD)
        _hard_reset(client)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
        return False

    # ----------------------------------------------------------------- http mode
    def _handle_http(self, client: socket.socket) -> None:
        reader = _Reader(client)
        head = reader.read_until(b"\r\n\r\n", _HEAD_LIMIT)
        if head is None:
            return
        lines = head[:-4].split(b"\r\n")
        request_line = lines[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            raise ProxyProtocolError(f"bad request line {request_line!r}")
        method, target, _version = parts
        line = f"{method} {target}"
        headers: list[tuple[bytes, bytes]] = []
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise ProxyProtocolError(f"bad header line {raw!r}")
            headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in headers}
        chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
        length = 0 if chunked else int(lower.get(b"content-length", b"0") or b"0")
        expect_continue = lower.get(b"expect", b"").lower() == b"100-continue"
        with self._lock:
            self.requests.append(line)

        def discard_body() -> None:
            self._copy_body(reader, None, chunked, length)

        if self._take_drop(line):
            self._injected(f"drop {line}")
            if not expect_continue:
                discard_body()
            self._lingering_close(client)
            return

        error = self._take("error", line)
        if error is not None:
            self._injected(f"http {error.status} for {line}")
            if not expect_continue:
                discard_body()
            self._send_error(client, method, error)
            self._lingering_close(client)
            return

        stall = self._take("stall", line)
        reset = self._take("reset", line)
        try:
            upstream = self._connect_upstream()
        except OSError as exc:
            if not expect_continue:
                discard_body()
            self._send_error(client, method, _Fault("error", 0, None, status=502), detail=str(exc))
            self._lingering_close(client)
            return
        try:
            out = [lines[0]]
            for name, value in headers:
                if name.lower() in _HOP_BY_HOP:
                    continue
                if name.lower() == b"expect" and expect_continue:
                    continue
                out.append(name + b": " + value)
            out.append(b"Connection: close")
            upstream_ok = True
            try:
                self._send(upstream, b"\r\n".join(out) + b"\r\n\r\n")
            except OSError:
                upstream_ok = False
            if expect_continue and (chunked or length > 0):
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            # If the upstream stops reading the body (it may already have answered), the rest of the
            # body is read and dropped, and whatever the upstream said is relayed.
            self._copy_body(reader, upstream if upstream_ok else None, chunked, length)
            if self._relay_response(upstream, client, stall, reset, line):
                self._lingering_close(client)
        finally:
            self._untrack_close(upstream)

    def _copy_body(self, reader: _Reader, upstream: socket.socket | None, chunked: bool, length: int) -> bool:
        """Read one request body from the client, forwarding it while the upstream accepts it.

        Returns whether the upstream took all of it."""
        ok = upstream is not None

        def out(data: bytes) -> None:
            nonlocal ok
            if ok and upstream is not None:
                try:
                    self._send(upstream, data)
                except OSError:
                    ok = False

        if chunked:
            while True:
                size_line = reader.read_line()
                out(size_line)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise ProxyProtocolError(f"bad chunk size line {size_line!r}") from exc
                if size == 0:
                    while True:
                        trailer = reader.read_line()
                        out(trailer)
                        if trailer in (b"\r\n", b"\n"):
                            break
                    break
                for piece in reader.iter_exact(size + 2):
                    out(piece)
        else:
            for piece in reader.iter_exact(length):
                out(piece)
        return ok

    def _send_error(
        self, client: socket.socket, method: str, fault: _Fault, detail: str | None = None
    ) -> None:
        status = fault.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Injected"
        body = json.dumps(
            {
                "errors": [
                    {
                        "code": _ERROR_CODES.get(status, "UNKNOWN"),
                        "message": f"injected by FaultProxy: {status} {reason}",
                        "detail": detail,
                    }
                ]
            }
        ).encode()
        head = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Docker-Distribution-Api-Version: registry/2.0",
            "Connection: close",
        ]
        if fault.retry_after is not None:
            head.append(f"Retry-After: {fault.retry_after}")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if method != "HEAD":
            payload += body
        with contextlib.suppress(OSError):
            self._send(client, payload)

    def _lingering_close(self, client: socket.socket, linger: float = 1.0) -> None:
        """Half-close, then read (and drop) what the client still sends for a moment, so the
        answer is not destroyed by an RST caused by unread data."""
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + linger
        try:
            while not self._stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                readable, _, _ = select.select([client], [], [], min(remaining, 0.1))
                if readable and not client.recv(_CHUNK):
                    break
        except (OSError, ValueError):
            pass
