"""``copy``: registry to registry, every platform by default, digests preserved."""

from __future__ import annotations

from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.registry.endpoints import RegistrySink, RegistrySource
from airgap.registry.pool import Registries
from airgap.transfer.engine import TransferResult, transfer
from airgap.transfer.events import Progress, ignore
from airgap.transfer.plan import ImageRequest


def copy_request(src: str, dst: str, platforms: tuple[Platform, ...] = ()) -> ImageRequest:
    """``dst`` without a tag takes ``src``'s tag (or none, when ``src`` is by digest only)."""
    source = Reference.parse(src)
    target = Reference.parse(dst, default_tag=None)
    if target.tag is None and target.digest is None:
        target = target.with_tag(source.tag)
    if target.digest is not None and source.digest is not None and target.digest != source.digest:
        from airgap.errors import InvalidReference

        raise InvalidReference(f"destination digest {target.digest} differs from source digest {source.digest}",
                               hint="leave the digest off the destination")
    return ImageRequest(source=source, target=target.with_digest(None), platforms=platforms)


def copy(registries: Registries, src: str, dst: str, *, platforms: tuple[Platform, ...] = (), jobs: int = 6,
         progress: Progress = ignore) -> TransferResult:
    request = copy_request(src, dst, platforms)
    return transfer(RegistrySource(registries), RegistrySink(registries), [request], jobs=jobs, progress=progress)
