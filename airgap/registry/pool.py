"""Sessions and clients by registry host, sharing options and credentials."""

from __future__ import annotations

import threading

from airgap.registry.client import RegistryClient, UploadPolicy
from airgap.registry.credentials import Keychain
from airgap.registry.session import RegistryOptions, Session


class Registries:
    """One :class:`RegistryClient` per host, created on first use. Close it when done."""

    def __init__(self, options: RegistryOptions | None = None, keychain: Keychain | None = None,
                 upload: UploadPolicy | None = None) -> None:
        self.options = options or RegistryOptions()
        self.keychain = keychain or Keychain()
        self.upload = upload
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def client(self, host: str) -> RegistryClient:
        with self._lock:
            c = self._clients.get(host)
            if c is None:
                c = RegistryClient(Session(host, options=self.options, keychain=self.keychain), upload=self.upload)
                self._clients[host] = c
            return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.session.close()
            self._clients.clear()

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
