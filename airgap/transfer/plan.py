"""Planning: resolve requested images through a Source into manifests and blobs to move."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from airgap.errors import InvalidInput, NotFound
from airgap.inputs import counted
from airgap.model.digest import Digest
from airgap.model.manifest import REFERRER_TAG, SIGNATURE_TYPES, Descriptor, Manifest, artifact_type_of, filter_index
from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.transfer.endpoints import Source

MAX_DEPTH = 4
IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # read to learn a single-platform image's platform
REFERRER_LEVELS = 2  # referrers of the image's manifests, and referrers of those (a signature on an SBOM)


@dataclass(frozen=True)
class ReferrerOptions:
    """Which referrers planning collects: all by default, only ``types`` (artifact types) when given."""

    enabled: bool = True
    types: tuple[str, ...] = ()

    def wants(self, artifact_type: str | None) -> bool:
        return self.enabled and (not self.types or artifact_type in self.types)


NO_REFERRERS = ReferrerOptions(enabled=False)


@dataclass
class PlannedReferrer:
    """A manifest whose ``subject`` is one of the image's manifests (or another referrer of it)."""

    subject: Digest
    root: Manifest  # the referrer's own manifest, exact bytes
    artifact_type: str | None
    tag: str | None = None  # the cosign-style tag it was found under, else None (found by subject)
    manifests: list[Manifest] = field(default_factory=list)  # push order: children first, root last
    blobs: list[Descriptor] = field(default_factory=list)

    @property
    def is_signature(self) -> bool:
        return (self.tag is not None and self.tag.endswith(".sig")) or self.artifact_type in SIGNATURE_TYPES


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
    referrers: list[PlannedReferrer] = field(default_factory=list)  # subjects before their referrers
    cut_signed: bool = False  # the full index that a platform subset replaced had a signature

    @property
    def signed(self) -> bool:
        """Whether a signature artifact names the image's top manifest as its subject."""
        return any(r.is_signature and r.subject == self.root.digest for r in self.referrers)

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


def plan_image(source: Source, request: ImageRequest, referrers: ReferrerOptions = ReferrerOptions()) -> PlannedImage:
    """Fetch every manifest below ``request.source`` (filtered by platform) and list its blobs; with a source
    that lists referrers, also the referrers of each of those manifests (see :func:`plan_referrers`)."""
    ref = request.source
    root = source.get_manifest(ref, ref.identifier)
    if ref.digest is not None and root.digest != ref.digest:
        raise InvalidInput(f"{ref} resolved to {root.digest}")
    image = PlannedImage(request=request, root=root, source_digest=str(root.digest))
    if ref.digest is not None and ref.tag is not None:  # NAME:TAG@DIGEST: the digest decides; say if the tag differs
        try:
            tagged: Digest | None = source.get_manifest(ref, ref.tag).digest
        except NotFound:
            tagged = None
        if tagged != root.digest:
            image.notices.append(
                f"{ref}: the tag {ref.tag} names {tagged or 'nothing'} at the source, not {root.digest}; the digest "
                f"decides: {root.digest} is taken, and the tag {ref.tag} will name it where it is pushed")
    seen_blobs: set[str] = set()
    cut: list[Digest] = []  # indexes replaced by a platform subset: their referrers cannot come along

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
                cut.append(manifest.digest)
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
    if request.platforms and not root.is_index:
        have = _config_platform(source, ref, root)
        if have is not None and not any(p.matches(have) for p in request.platforms):
            want = ", ".join(str(p) for p in request.platforms)
            raise InvalidInput(f"{ref} is an image for {have} only, not for {want}",
                               hint="leave it out of the list, or ask for its platform too")
    if referrers.enabled:
        image.referrers = plan_referrers(source, ref, [m.digest for m in image.manifests], referrers)
        for digest in cut:
            left = plan_referrers(source, ref, [digest], referrers)  # and the referrers of those (a signed SBOM)
            if left:
                image.cut_signed = image.cut_signed or any(r.is_signature and r.subject == digest for r in left)
                kinds = ", ".join(sorted({r.artifact_type or r.root.media_type for r in left}))
                it, refers = ("it", "it refers") if len(left) == 1 else ("them", "they refer")
                image.notices.append(
                    f"{ref}: {counted(len(left), 'referrer')} of the full index {digest} left out ({kinds}): {refers} "
                    f"to the index that the platform subset replaces (or to such a referrer); take all platforms to "
                    f"keep {it}")
    return image


def _config_platform(source: Source, ref: Reference, manifest: Manifest) -> Platform | None:
    """The platform that a single-platform image's config names; None for an artifact (another config type),
    or a config that names none."""
    config = manifest.config
    if config is None or config.media_type not in IMAGE_CONFIGS or config.size > MAX_CONFIG_BYTES:
        return None
    with source.blob_opener(ref, config)(0) as chunks:
        data = b"".join(chunks)
    try:
        return Platform.from_json(json.loads(data))
    except (ValueError, RecursionError):
        return None


def _walk_artifact(source: Source, ref: Reference, manifest: Manifest, out: PlannedReferrer, depth: int = 0) -> None:
    """Every manifest and blob below a referrer (no platform filter: an artifact is taken whole)."""
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{ref}: referrer {out.root.digest} nests deeper than {MAX_DEPTH} levels")
    if manifest.is_index:
        for desc in manifest.manifests:
            child = source.get_manifest(ref, str(desc.digest))
            if child.digest != desc.digest or child.size != desc.size:
                raise InvalidInput(f"{ref}: manifest {desc.digest} does not match its index entry")
            _walk_artifact(source, ref, child, out, depth + 1)
    else:
        have = {b.digest for b in out.blobs}
        out.blobs.extend(b for b in manifest.blobs() if b.digest not in have)
    if manifest.digest not in {m.digest for m in out.manifests}:
        out.manifests.append(manifest)


def plan_referrers(source: Source, ref: Reference, subjects: list[Digest],
                   options: ReferrerOptions = ReferrerOptions()) -> list[PlannedReferrer]:
    """The referrers of ``subjects`` in ``ref``'s repository, and the referrers of those (one more level),
    each with its exact bytes, manifests and blobs. Empty when the source cannot list referrers."""
    lister = getattr(source, "referrers", None)
    if lister is None or not options.enabled:
        return []
    out: list[PlannedReferrer] = []
    seen: set[tuple[Digest, Digest, str | None]] = set()
    level = list(subjects)
    for _ in range(REFERRER_LEVELS):
        found: list[Digest] = []
        for subject in level:
            for desc in lister(ref, subject):
                tag = desc.annotations.get(REFERRER_TAG)
                key = (subject, desc.digest, tag)
                if key in seen or desc.digest in subjects:
                    continue
                seen.add(key)
                manifest = source.get_manifest(ref, str(desc.digest))
                kind = artifact_type_of(manifest, tag)
                if not options.wants(kind):
                    continue
                if tag is None and (manifest.subject is None or manifest.subject.digest != subject):
                    continue  # a stale entry of a fallback index: that manifest does not refer to the subject
                planned = PlannedReferrer(subject, manifest, kind, tag)
                _walk_artifact(source, ref, manifest, planned)
                out.append(planned)
                found.append(manifest.digest)
        level = list(dict.fromkeys(found))
    return out
