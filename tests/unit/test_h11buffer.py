"""The lean h11 receive buffer: h11 must parse exactly as with its own buffer, whatever the reads."""

from __future__ import annotations

import h11
import h11._connection
import pytest
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

import airgap.registry.session  # noqa: F401 - installs the lean buffer
from airgap.registry.h11buffer import LeanReceiveBuffer, applicable


def _response(kind: str, body: bytes) -> bytes:
    if kind == "length":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    if kind == "chunked":
        out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(body), 7):
            piece = body[i:i + 7]
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        return out + b"0\r\nX-Trailer: 1\r\n\r\n"
    return b"HTTP/1.0 200 OK\r\n\r\n" + body  # ends at close


def _events(buffer: type, kind: str, bodies: list[bytes], cuts: list[int]) -> list[tuple[str, bytes]]:
    """Parse ``len(bodies)`` responses (keep-alive: one after the other) arriving in reads cut at ``cuts``."""
    saved = h11._connection.ReceiveBuffer  # type: ignore[attr-defined]
    h11._connection.ReceiveBuffer = buffer  # type: ignore[attr-defined]
    try:
        conn = h11.Connection(h11.CLIENT)
    finally:
        h11._connection.ReceiveBuffer = saved  # type: ignore[attr-defined]
    wire = b"".join(_response(kind, b) for b in bodies)
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    out: list[tuple[str, bytes]] = []
    n = 0
    while len([e for e in out if e[0] == "EndOfMessage"]) < len(bodies):
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(reads[n] if n < len(reads) else b"")
                n += 1
                continue
            if isinstance(event, h11.Data):
                out.append(("Data", bytes(event.data)))
            elif isinstance(event, h11.Response):
                out.append(("Response", repr(event).encode()))
            elif isinstance(event, h11.EndOfMessage):
                out.append(("EndOfMessage", repr(event.headers).encode()))
                break
            else:
                out.append((type(event).__name__, b""))
                break
        if kind == "close" or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            break
        conn.start_next_cycle()
    return out


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["length", "chunked", "close"]),
       bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=3),
       cuts=st.lists(st.integers(min_value=1, max_value=2000), max_size=12))
def test_same_events_as_h11s_own_buffer(kind: str, bodies: list[bytes], cuts: list[int]) -> None:
    if kind == "close":
        bodies = bodies[:1]
    total = sum(len(_response(kind, b)) for b in bodies)
    cuts = sorted({c for c in cuts if c < total})
    assert _events(LeanReceiveBuffer, kind, bodies, cuts) == _events(ReceiveBuffer, kind, bodies, cuts)


def test_installed_and_a_whole_read_is_passed_through_uncopied() -> None:
    assert applicable()
    assert h11._connection.ReceiveBuffer is LeanReceiveBuffer  # type: ignore[attr-defined]
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Response)
    piece = bytes(range(4)) * 1  # a read that is all body
    conn.receive_data(piece)
    event = conn.next_event()
    assert isinstance(event, h11.Data) and event.data is piece  # the same object: no copy was made
    conn.receive_data(b"tail")
    event = conn.next_event()
    assert isinstance(event, h11.Data) and event.data == b"tail"
    assert isinstance(conn.next_event(), h11.EndOfMessage)


def test_a_read_longer_than_the_body_keeps_the_rest() -> None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Response)
    conn.receive_data(b"bodyHTTP/1.1 204 No Content\r\n\r\n")
    event = conn.next_event()
    assert isinstance(event, h11.Data) and bytes(event.data) == b"body"
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert conn.trailing_data == (b"HTTP/1.1 204 No Content\r\n\r\n", False)


@pytest.mark.parametrize("data", [bytearray(b"abc"), memoryview(b"abc")])
def test_other_buffer_types_take_h11s_own_path(data: bytearray | memoryview) -> None:
    buf = LeanReceiveBuffer()
    buf += data
    assert len(buf) == 3 and bytes(buf) == b"abc"
    assert bytes(buf.maybe_extract_at_most(2)) == b"ab"
    assert bytes(buf.maybe_extract_at_most(5)) == b"c"
    assert not buf
