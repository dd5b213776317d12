"""The registry edge: the only package that speaks HTTP."""

from airgap.registry.client import RegistryClient, UploadPolicy
from airgap.registry.credentials import Credential, Keychain, store_credentials
from airgap.registry.pool import Registries
from airgap.registry.session import RegistryOptions, RetryPolicy, Session

__all__ = [
    "Credential",
    "Keychain",
    "Registries",
    "RegistryClient",
    "RegistryOptions",
    "RetryPolicy",
    "Session",
    "UploadPolicy",
    "store_credentials",
]
