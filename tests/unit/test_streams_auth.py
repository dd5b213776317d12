import pytest

from airgap.errors import DigestMismatch
from airgap.model.digest import Digest
from airgap.registry.auth import merge_scopes, parse_challenge
from airgap.registry.session import is_loopback, redact
from airgap.streams import take, verified


def test_verified_ok_and_failures() -> None:
    data = b"x" * 1000
    d = Digest.of(data)
    assert b"".join(verified([data[:10], data[10:]], d, 1000, "blob")) == data
    with pytest.raises(DigestMismatch, match="ended after"):
        list(verified([data[:10]], d, 1000, "blob"))
    with pytest.raises(DigestMismatch, match="longer"):
        list(verified([data, b"y"], d, 1000, "blob"))
    with pytest.raises(DigestMismatch, match="digest"):
        list(verified([b"y" * 1000], d, 1000, "blob"))
    # from an offset only the size can be checked
    assert b"".join(verified([data[500:]], d, 1000, "blob", offset=500)) == data[500:]


def test_take() -> None:
    it = iter([b"abc", b"defg", b"h"])
    buf: list[bytes] = []
    assert b"".join(take(it, 5, buf)) == b"abcde"
    assert b"".join(take(it, 2, buf)) == b"fg"
    assert b"".join(take(it, 10, buf)) == b"h"


def test_challenge() -> None:
    ch = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                         'scope="repository:a:pull,push repository:b:pull",error="insufficient_scope"')
    assert ch is not None and ch.scheme == "bearer" and ch.realm == "https://auth.example/token"
    assert ch.service == "reg" and ch.scopes == ("repository:a:pull,push", "repository:b:pull")
    assert ch.insufficient_scope
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("") is None


def test_merge_scopes() -> None:
    assert merge_scopes(("repository:a:pull",), ("repository:a:push", "repository:b:pull")) == (
        "repository:a:pull,push", "repository:b:pull")


def test_loopback_and_redact() -> None:
    assert is_loopback("localhost:5000") and is_loopback("127.0.0.2") and is_loopback("[::1]:5000")
    assert not is_loopback("reg.example.com") and not is_loopback("10.0.0.1:5000")
    assert redact("https://u:p@h:5000/v2/x/blobs/uploads/abc?_state=secret&digest=sha256:1") == \
        "https://h:5000/v2/x/blobs/uploads/abc?_state=…&digest=…"
