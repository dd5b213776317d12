"""Manifests and indexes: media types, descriptors, and what a manifest refers to. No I/O.

A :class:`Manifest` keeps the exact bytes it was parsed from; its digest is the sha256 of those bytes
and is never recomputed from a re-serialisation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from airgap.errors import InvalidInput, UnsupportedManifest
from airgap.model.digest import Digest
from airgap.model.platform import Platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where}: a descriptor is not a JSON object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise InvalidInput(f"{where}: a descriptor lacks mediaType or digest")
        if not MEDIA_TYPE.fullmatch(media_type):
            raise InvalidInput(f"{where}: descriptor {digest[:80]} has a mediaType with a control character (a line "
                               "break, NUL, ...) or over 255 characters, which a bundle cannot carry",
                               hint="fix the image's manifest at its source, or leave this image out")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: descriptor {digest} has an invalid size")
        ann = obj.get("annotations")
        return cls(
            media_type=media_type,
            digest=Digest.parse(digest),
            size=size,
            platform=Platform.from_json(obj.get("platform")),
            artifact_type=_artifact_type(obj.get("artifactType")),
            annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
        )


def sniff_media_type(data: bytes, declared: str | None) -> str:
    """The manifest's media type: the declared one (Content-Type) or its ``mediaType`` field."""
    try:
        obj = json.loads(data)
    except ValueError:
        obj = None
    inner = obj.get("mediaType") if isinstance(obj, dict) else None
    declared = (declared or "").split(";")[0].strip() or None
    if declared in MANIFEST_TYPES:
        return declared
    if isinstance(inner, str) and inner:
        return inner
    if isinstance(obj, dict):
        if obj.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1
        if "manifests" in obj:
            return OCI_INDEX
        if "config" in obj and "layers" in obj:
            return OCI_MANIFEST
    return declared or ""


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest or index, with the exact bytes it came from."""

    data: bytes = field(repr=False)
    media_type: str
    digest: Digest
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, platform: Platform | None = None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data), platform=platform)

    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers (for an image); nothing for an index."""
        return ((self.config,) if self.config else ()) + self.layers

    @classmethod
    def parse(cls, data: bytes, media_type: str | None = None, *, where: str = "manifest") -> Manifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"{where} is larger than {MAX_MANIFEST_BYTES} bytes")
        mt = sniff_media_type(data, media_type)
        if mt in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
            raise UnsupportedManifest(
                f"{where} is a Docker schema1 manifest",
                hint="schema1 is deprecated and its digest cannot be preserved; rebuild or re-push the image "
                "with a current client (docker, buildah, skopeo) first",
            )
        if mt not in MANIFEST_TYPES:
            raise UnsupportedManifest(
                f"{where} has unsupported media type {mt!r}",
                hint="airgap handles OCI manifests and indexes and Docker schema2 manifests and lists",
            )
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise InvalidInput(f"{where} is not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"{where} is not a JSON object")
        config = None
        layers: tuple[Descriptor, ...] = ()
        manifests: tuple[Descriptor, ...] = ()
        if mt in INDEX_TYPES:
            raw = obj.get("manifests")
            if not isinstance(raw, list):
                raise InvalidInput(f"{where}: an index without a manifests list")
            manifests = tuple(Descriptor.from_json(m, where) for m in raw)
        else:
            config = Descriptor.from_json(obj.get("config"), where)
            raw = obj.get("layers", [])
            if not isinstance(raw, list):
                raise InvalidInput(f"{where}: layers is not a list")
            layers = tuple(Descriptor.from_json(layer, where) for layer in raw)
        subject = Descriptor.from_json(obj["subject"], where) if obj.get("subject") is not None else None
        at = obj.get("artifactType")
        return cls(
            data=data,
            media_type=mt,
            digest=Digest.of(data),
            config=config,
            layers=layers,
            manifests=manifests,
            subject=subject,
            artifact_type=_artifact_type(at),
        )


def filter_index(index: Manifest, keep: list[Descriptor]) -> Manifest:
    """A new index holding only ``keep`` of ``index``'s entries, every other field as it was.

    The result's bytes (and so its digest) differ from the original; callers must say so.
    """
    if list(index.manifests) == keep:
        return index
    obj = json.loads(index.data)
    wanted = {str(d.digest) for d in keep}
    obj["manifests"] = [m for m in obj["manifests"] if m.get("digest") in wanted]
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Manifest.parse(data, index.media_type)


# -- referrers (OCI 1.1): signatures, SBOMs and attestations that name a manifest as their ``subject`` ------------

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
REFERRER_TAG = "dev.airgap.referrer.tag"  # in-process descriptor annotation: the cosign-style tag it was found under
COSIGN_TYPES = {  # the artifact type given to a cosign-style tag's manifest when it declares none
    ".sig": "application/vnd.dev.cosign.artifact.sig.v1+json",
    ".att": "application/vnd.dev.cosign.artifact.att.v1+json",
    ".sbom": "application/vnd.dev.cosign.artifact.sbom.v1+json",
}
SIGNATURE_TYPES = (
    "application/vnd.dev.cosign.artifact.sig.v1+json",
    "application/vnd.cncf.notary.signature",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
)


def fallback_tag(digest: Digest) -> str:
    """The referrers tag schema: ``sha256-<hex>`` names the index listing ``digest``'s referrers."""
    return f"{digest.algorithm}-{digest.hex}"


MEDIA_TYPE = re.compile(r"[^\x00-\x1f\x7f]{0,255}")
"""A descriptor's media type or artifact type as airgap carries it in bundle and inventory manifests: at most 255
characters, none of them a control character (a line break there would reach a terminal, a log line or a header).
Registries take empty and non-ASCII ones (distribution does), and bundles of earlier versions hold them: those
pass. The media types airgap sends in headers are its own fixed set (``MANIFEST_TYPES``)."""


def _artifact_type(value: Any) -> str | None:
    """``artifactType`` when it is one airgap carries; another is ignored (it only selects referrers)."""
    return value if isinstance(value, str) and MEDIA_TYPE.fullmatch(value) else None


_REFERRER_TAG_RE = re.compile(r"sha256-[0-9a-f]{64}(?:\.sig|\.att|\.sbom)?")


def is_referrer_tag(tag: str) -> bool:
    """A tag that names no image but the referrers of one: cosign's ``sha256-<hex>.sig`` (``.att``, ``.sbom``)
    or the referrers tag schema's index ``sha256-<hex>``."""
    return _REFERRER_TAG_RE.fullmatch(tag) is not None


def cosign_tags(digest: Digest) -> tuple[str, ...]:
    return tuple(fallback_tag(digest) + s for s in COSIGN_SUFFIXES)


def artifact_type_of(manifest: Manifest, cosign_tag: str | None = None) -> str | None:
    """``artifactType``, else (image manifests) the config's media type, as the referrers API reports it;
    a cosign-style tag whose manifest has a plain image config gets the cosign type of its suffix."""
    if manifest.artifact_type:
        return manifest.artifact_type
    plain = manifest.config is None or manifest.config.media_type in (
        "application/vnd.oci.image.config.v1+json", "application/vnd.oci.empty.v1+json")
    if cosign_tag is not None and plain:
        for suffix, kind in COSIGN_TYPES.items():
            if cosign_tag.endswith(suffix):
                return kind
    return manifest.config.media_type if manifest.config is not None else None


def referrer_entry(manifest: Manifest) -> dict[str, Any]:
    """The descriptor of a referrer as a referrers index lists it: with its artifactType and annotations."""
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(manifest.digest), "size": manifest.size}
    kind = artifact_type_of(manifest)
    if kind:
        entry["artifactType"] = kind
    obj = json.loads(manifest.data)
    ann = obj.get("annotations") if isinstance(obj, dict) else None
    if isinstance(ann, dict) and ann:
        entry["annotations"] = ann
    return entry
