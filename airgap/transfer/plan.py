"""Planning: resolve requested images through a Source into manifests and blobs to move."""

from __future__ import annotations

from dataclasses import dataclass, field

from airgap.errors import InvalidInput
from airgap.model.manifest import Descriptor, Manifest, filter_index
from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.transfer.endpoints import Source

MAX_DEPTH = 4


@dataclass(frozen=True)
class ImageRequest:
    """Copy ``source`` to ``target`` (a name with a tag, or a name alone to push by digest only)."""

    source: Reference
    target: Reference
    platforms: tuple[Platform, ...] = ()


@dataclass
class PlannedImage:
    request: ImageRequest
    root: Manifest
    source_digest: str
    manifests: list[Manifest] = field(default_factory=list)  # push order: children first, root last
    blobs: list[Descriptor] = field(default_factory=list)
    platforms: list[Platform] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(d.size for d in self.blobs) + sum(m.size for m in self.manifests)


def _select(index: Manifest, platforms: tuple[Platform, ...], name: str) -> list[Descriptor]:
    if not platforms:
        return list(index.manifests)
    keep = [d for d in index.manifests
            if d.platform is None and d.media_type in ("application/vnd.oci.image.index.v1+json",
                                                       "application/vnd.docker.distribution.manifest.list.v2+json")
            or d.platform is not None and any(p.matches(d.platform) for p in platforms)]
    if not keep:
        have = ", ".join(sorted({str(d.platform) for d in index.manifests if d.platform})) or "none listed"
        want = ", ".join(str(p) for p in platforms)
        raise InvalidInput(f"{name} has no manifest for platform {want}", hint=f"it has: {have}")
    return keep


def plan_image(source: Source, request: ImageRequest) -> PlannedImage:
    """Fetch every manifest below ``request.source`` (filtered by platform) and list its blobs."""
    ref = request.source
    root = source.get_manifest(ref, ref.identifier)
    if ref.digest is not None and root.digest != ref.digest:
        raise InvalidInput(f"{ref} resolved to {root.digest}")
    image = PlannedImage(request=request, root=root, source_digest=str(root.digest))
    seen_blobs: set[str] = set()

    def walk(manifest: Manifest, depth: int, platform: Platform | None) -> Manifest:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{ref}: indexes nest deeper than {MAX_DEPTH} levels")
        if manifest.is_index:
            keep = _select(manifest, request.platforms, str(ref))
            for desc in keep:
                child = source.get_manifest(ref, str(desc.digest))
                if child.digest != desc.digest or child.size != desc.size:
                    raise InvalidInput(f"{ref}: manifest {desc.digest} does not match its index entry")
                walk(child, depth + 1, desc.platform)
            filtered = filter_index(manifest, keep)
            if filtered is not manifest:
                image.notices.append(
                    f"{ref}: only platforms {', '.join(str(d.platform) for d in keep)} kept; the index digest "
                    f"changes from {manifest.digest} to {filtered.digest}")
            manifest = filtered
        else:
            if platform is not None:
                image.platforms.append(platform)
            for blob in manifest.blobs():
                if str(blob.digest) not in seen_blobs:
                    seen_blobs.add(str(blob.digest))
                    image.blobs.append(blob)
        image.manifests.append(manifest)
        return manifest

    image.root = walk(root, 0, None)
    return image
