"""Test harness: real registries (docker-registry), a token server, a fault-injecting proxy, skopeo."""

from .faultproxy import FaultProxy
from .registry import RegistryError, RegistryServer, registry_available, start_registry
from .skopeo import (
    OciImage,
    SkopeoError,
    make_oci_layout,
    missing_tools,
    skopeo_copy,
    skopeo_digest,
    skopeo_inspect_raw,
)
from .tokenserver import TokenRequest, TokenServer, libtrust_key_id

__all__ = [
    "FaultProxy",
    "OciImage",
    "RegistryError",
    "RegistryServer",
    "SkopeoError",
    "TokenRequest",
    "TokenServer",
    "libtrust_key_id",
    "make_oci_layout",
    "missing_tools",
    "registry_available",
    "skopeo_copy",
    "skopeo_digest",
    "skopeo_inspect_raw",
    "start_registry",
]
