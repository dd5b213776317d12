"""The shared system trust store: loaded once, ahead of need, per SSL_CERT_* environment, never changed."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from airgap import tls
from airgap.cli.main import cli
from airgap.errors import InvalidInput
from airgap.registry.session import RegistryOptions, Session


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "_contexts", {})
    monkeypatch.setattr(tls, "_loading", {})
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def test_one_verifying_context_per_process() -> None:
    ctx = tls.system_context()
    assert ctx is tls.system_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_prepared_ahead_on_a_helper_thread() -> None:
    tls.prepare()
    thread = tls._loading.get(tls._key())
    assert thread is not None or tls._key() in tls._contexts
    ctx = tls.system_context()
    assert tls._contexts[tls._key()] is ctx
    assert not tls._loading  # the helper is done and forgotten
    tls.prepare()  # loaded already: nothing is started again
    assert not tls._loading and tls.system_context() is ctx


def test_another_trust_store_gets_its_own_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tls.system_context()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    other = tls.system_context()
    assert other is not first
    assert other.cert_store_stats()["x509_ca"] == 0  # it read the (missing) file the environment names


def test_session_with_its_own_ca_does_not_touch_the_shared_context(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    shared = tls.system_context()
    before = shared.cert_store_stats()
    plain = Session("registry.example", options=RegistryOptions(certs_d=tmp_path / "no-certs.d"))
    own = Session("registry.example", options=RegistryOptions(ca_certs=(ca,), certs_d=tmp_path / "no-certs.d"))
    try:
        assert plain._ssl_context() is shared
        got = own._ssl_context()
        assert isinstance(got, ssl.SSLContext) and got is not shared
        assert got.cert_store_stats()["x509_ca"] == before["x509_ca"] + 1
        assert shared.cert_store_stats() == before
    finally:
        plain.close()
        own.close()


def test_registry_commands_start_loading_it_before_their_modules() -> None:
    result = CliRunner().invoke(cli, ["keygen", "--help"])
    assert result.exit_code == 0
    assert not tls._loading and not tls._contexts  # keygen talks to no registry
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0
    assert tls._loading or tls._contexts


@pytest.mark.parametrize("case", ["text", "der", "damaged-pem", "dangling-link", "directory"])
def test_a_certs_d_file_that_is_no_pem_certificate_is_named(case: str, tmp_path: Path) -> None:
    """A ``certs.d/HOST/*.crt`` that holds no PEM certificate, or cannot be read: an InvalidInput (exit 2) naming
    the file and the registry, not OpenSSL's SSLError (an internal error, exit 70)."""
    host_dir = tmp_path / "certs.d" / "registry.example:5000"
    host_dir.mkdir(parents=True)
    bad = host_dir / "ca.crt"
    if case == "text":
        bad.write_text("hello\n")
    elif case == "der":
        cert = x509.load_pem_x509_certificate(trustme.CA().cert_pem.bytes())
        bad.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    elif case == "damaged-pem":
        bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    elif case == "dangling-link":
        bad.symlink_to(tmp_path / "gone.crt")
    else:
        bad.mkdir()
    options = RegistryOptions(certs_d=tmp_path / "certs.d")
    with pytest.raises(InvalidInput) as info:
        Session("registry.example:5000", options=options)
    text = str(info.value)
    assert info.value.exit_code == 2
    assert str(bad) in text and "registry.example:5000" in text and "_ssl.c" not in text, text
    if case in ("dangling-link", "directory"):
        assert text.startswith(f"cannot read CA certificate {bad}"), text
    else:
        assert f"{bad} (for registry registry.example:5000) is not a PEM certificate" in text, text
