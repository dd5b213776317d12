"""Shared fixtures: real registries, a token server and fault proxies, all on 127.0.0.1.

Every fixture stops what it started, also when the test fails. Fixtures that need
``docker-registry`` or ``skopeo`` skip the test with a clear message when one is missing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import (
    FaultProxy,
    OciImage,
    RegistryServer,
    TokenServer,
    make_oci_layout,
    missing_tools,
    start_registry,
)

RegistryFactory = Callable[..., RegistryServer]
FaultProxyFactory = Callable[..., FaultProxy]


def require_tools() -> None:
    """Skip the current test when docker-registry or skopeo is not installed."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"needs {' and '.join(missing)} on PATH (Debian: `apt-get install docker-registry skopeo`, "
            "or `make sysdeps`)"
        )


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[RegistryFactory]:
    """``make(**kwargs) -> RegistryServer``: forwards to ``start_registry(tmp_path/'registries', ...)``.
    Every registry (and token server it started) is stopped at teardown."""
    require_tools()
    servers: list[RegistryServer] = []
    workdir = tmp_path / "registries"

    def make(**kwargs: Any) -> RegistryServer:
        server = start_registry(workdir, **kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.close()


@pytest.fixture
def registry(registry_factory: RegistryFactory) -> RegistryServer:
    """A plain-HTTP registry without auth."""
    return registry_factory()


@pytest.fixture
def registry2(registry_factory: RegistryFactory) -> RegistryServer:
    """A second, independent plain-HTTP registry without auth."""
    return registry_factory()


@pytest.fixture
def htpasswd_registry(registry_factory: RegistryFactory) -> RegistryServer:
    """Plain HTTP with Basic auth (htpasswd): ``alice`` / ``s3cret-pass``."""
    return registry_factory(auth="htpasswd")


@pytest.fixture
def tls_registry(registry_factory: RegistryFactory) -> RegistryServer:
    """HTTPS with a certificate from a fresh test CA: ``ca_cert`` (PEM) and ``cert_dir`` (for skopeo)."""
    return registry_factory(tls=True)


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    """A running token server with the user ``alice`` / ``s3cret-pass`` (not attached to a registry)."""
    server = TokenServer(tmp_path / "tokenserver", users={"alice": "s3cret-pass"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_registry(registry_factory: RegistryFactory) -> RegistryServer:
    """Plain HTTP with token auth; ``.token_server`` is its TokenServer (user ``alice`` / ``s3cret-pass``)."""
    return registry_factory(auth="token")


@pytest.fixture
def fault_proxy_factory() -> Iterator[FaultProxyFactory]:
    """``make(upstream_host, **kwargs) -> FaultProxy`` (started); all are stopped at teardown."""
    proxies: list[FaultProxy] = []

    def make(upstream_host: str, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(upstream_host, **kwargs).start()
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in reversed(proxies):
            proxy.stop()


@pytest.fixture
def oci_image(tmp_path: Path) -> OciImage:
    """A one-layer OCI image in an OCI layout under ``tmp_path``, tagged ``v1``."""
    return make_oci_layout(tmp_path / "oci-layout", tag="v1", seed=tmp_path.name)


# --------------------------------------------------------------------------- airgap itself

AIRGAP = [sys.executable, "-m", "airgap.cli"]


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``airgap ARGS`` in the background (text pipes); killed and reaped if still running when the block ends."""
    proc = subprocess.Popen(AIRGAP + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@dataclass
class Run:
    """The result of one ``airgap`` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def airgap_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment with its own empty docker config and a fast retry backoff."""
    env = dict(os.environ)
    env.update({
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "AIRGAP_RETRY_BASE_DELAY": "0.05",
    })
    env.pop("REGISTRY_AUTH_FILE", None)
    for key in ("DOCKER_CONFIG", "HOME", "XDG_RUNTIME_DIR", "AIRGAP_RETRY_BASE_DELAY"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return env


RunAirgap = Callable[..., Run]


@pytest.fixture
def run_airgap(airgap_env: dict[str, str]) -> RunAirgap:
    """``run_airgap(*args, input=None, env=None, timeout=300) -> Run``: the real CLI in a subprocess."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> Run:
        proc = subprocess.run(AIRGAP + list(args), input=input, capture_output=True, text=True,
                              env={**airgap_env, **(env or {})}, timeout=timeout, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture(scope="session")
def demo_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """The demo images (large layer 2 MiB) in an OCI layout, built once per test session."""
    from scripts.demo_images import build_demo_layout

    path = tmp_path_factory.mktemp("demo") / "layout"
    return path, build_demo_layout(path, large_layer_size=2 * 1024 * 1024)


@pytest.fixture
def demo_registry(registry_factory: RegistryFactory, demo_layout: tuple[Path, list[Any]]) -> RegistryServer:
    """A plain registry holding every demo image, pushed with airgap's own client."""
    from scripts.push_layout import push_layout

    server = registry_factory()
    push_layout(demo_layout[0], server.host)
    return server
