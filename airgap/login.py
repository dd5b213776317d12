"""``login``: check credentials against a registry, then store them where the lookups find them first (see
:func:`~airgap.registry.credentials.store_credentials`)."""

from __future__ import annotations

from pathlib import Path

from airgap.errors import AuthError
from airgap.model.reference import parse_host
from airgap.registry.credentials import Credential, Keychain, StoredCredentials, store_credentials
from airgap.registry.session import RegistryOptions, Session, check_login


def login(registry: str, credential: Credential, *, options: RegistryOptions | None = None,
          config_path: Path | None = None) -> StoredCredentials:
    """Returns where the credentials were stored."""
    host = parse_host(registry)
    keychain = Keychain(explicit={host: credential}, use_files=False)
    session = Session(host, options=options, keychain=keychain)
    try:
        check_login(session)
    except AuthError as exc:
        if exc.status not in (401, 403):
            raise
        # refused (by the registry or its token service): logging in again is what failed, not the way out
        raise AuthError(f"{host} refused the credentials of user {credential.username!r} ({exc.status})",
                        hint="check the user name and password", registry=host, method=exc.method, url=exc.url,
                        status=exc.status, codes=exc.codes) from None
    finally:
        session.close()
    return store_credentials(host, credential, config_path)
