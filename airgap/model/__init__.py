"""The model: digests, references, platforms, descriptors and manifests. No I/O here."""

from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.platform import Platform
from airgap.model.reference import Reference

__all__ = ["Descriptor", "Digest", "Manifest", "Platform", "Reference"]
