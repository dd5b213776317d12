"""``copy``: registry to registry, every platform by default, digests preserved."""

from __future__ import annotations

from dataclasses import dataclass, fields

from airgap.errors import DigestMismatch
from airgap.model.digest import Digest
from airgap.model.manifest import Manifest
from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.registry.endpoints import RegistrySink, RegistrySource, check_servable, index_referrers
from airgap.registry.pool import Registries
from airgap.transfer.engine import TransferResult, transfer
from airgap.transfer.events import Progress, ignore
from airgap.transfer.plan import ImageRequest, PlannedImage, ReferrerOptions, plan_image


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


@dataclass
class CopyResult(TransferResult):
    referrers: int = 0  # referrer manifests copied (or already there)
    referrer_indexes: int = 0  # fallback tag indexes (sha256-<hex>) written on a target without the referrers API


def copy(registries: Registries, src: str, dst: str, *, platforms: tuple[Platform, ...] = (), jobs: int = 6,
         progress: Progress = ignore, referrers: ReferrerOptions | None = None) -> CopyResult:
    """Copy one image, then (by default) its signatures, SBOMs and attestations: each referrer after its
    subject, by digest (or under its cosign-style tag), and listed in the target's fallback tag index when
    the target has no referrers API."""
    request = copy_request(src, dst, platforms)
    source, sink = RegistrySource(registries), RegistrySink(registries)
    planned = plan_image(source, request, referrers or ReferrerOptions())
    named = Reference.parse(dst, default_tag=None).digest
    if named is not None and planned.root.digest != named:  # before anything is pushed
        raise DigestMismatch(f"{src} is {planned.root.digest}, not {named} as the destination {dst} names",
                             hint="leave the digest off the destination, or copy the image of that digest")
    moved = transfer(source, sink, [request], jobs=jobs, progress=progress, planned=[planned])
    result = CopyResult(**{f.name: getattr(moved, f.name) for f in fields(TransferResult)})
    if planned.referrers:
        _copy_referrers(registries, source, sink, planned, result, jobs)
    host, repo = planned.request.target.host, planned.request.target.repository
    pushed = {(host, m.digest): repo for m in planned.manifests}
    pushed.update({(host, m.digest): repo for r in planned.referrers for m in r.manifests})
    check_servable(registries, pushed, jobs)
    return result


def _copy_referrers(registries: Registries, source: RegistrySource, sink: RegistrySink, image: PlannedImage,
                    result: CopyResult, jobs: int) -> None:
    src, dst = image.request.source, image.request.target
    level: dict[Digest, int] = {m.digest: 0 for m in image.manifests}
    for r in image.referrers:  # planned subjects first
        level[r.root.digest] = min(level.get(r.root.digest, 99), level.get(r.subject, 0) + 1)
    fallback: dict[tuple[str, str, Digest], list[Manifest]] = {}
    for lv in sorted({level[r.root.digest] for r in image.referrers}):
        batch = [r for r in image.referrers if level[r.root.digest] == lv]
        plans = [PlannedImage(
            request=ImageRequest(src.with_tag(None).with_digest(r.root.digest),
                                 dst.with_digest(None).with_tag(r.tag) if r.tag else dst.with_tag(None)
                                 .with_digest(r.root.digest)),
            root=r.root, source_digest=str(r.root.digest), manifests=list(r.manifests), blobs=list(r.blobs))
            for r in batch]
        moved = transfer(source, sink, [p.request for p in plans], jobs=jobs, planned=plans)
        result.uploaded += moved.uploaded
        result.mounted += moved.mounted
        result.skipped += moved.skipped
        result.bytes_uploaded += moved.bytes_uploaded
        result.referrers += len(batch)
        for r in batch:
            if r.tag is None:
                fallback.setdefault((dst.host, dst.repository, r.subject), []).append(r.root)
    result.referrer_indexes += index_referrers(registries, fallback)
