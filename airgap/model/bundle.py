"""The bundle manifest (``manifest.json``): what a bundle holds and where each piece lies in its stream.

Pure data and validation: no files. The reader treats every manifest as untrusted input, also a
signed one: names, sizes, counts and offsets are checked here before anything touches a file.
See docs/bundle-format.md for the specification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airgap.errors import InvalidInput
from airgap.model.delta import _ID, Base, ReliedBlob, parse_delta
from airgap.model.digest import Digest
from airgap.model.manifest import MEDIA_TYPE
from airgap.model.reference import _COMPONENT, _TAG

if TYPE_CHECKING:
    from airgap.model.parity import Parity

FORMAT = "airgap-bundle"
VERSION = 1
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_CHUNKS = 1_000_000
MAX_BLOBS = 1_000_000
MAX_IMAGES = 100_000
MAX_REFERRERS = 1_000_000
MAX_SIZE = 1 << 50  # 1 PiB
MAX_SEGMENT = 256 * 1024 * 1024
CHUNK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
FILES = ("oci-layout", "index.json")
RESERVED: tuple[str, ...] = ()  # format features that this version refuses to read


class ManifestError(InvalidInput):
    exit_code = 6
    default_hint = "the bundle's manifest.json is malformed; do not use this bundle, export it again"


def check_chunk_name(name: object) -> str:
    """A chunk name is a plain file name: no separators, no '..', no NUL, not hidden."""
    if not isinstance(name, str) or not CHUNK_NAME.match(name) or name in (".", ".."):
        raise ManifestError(f"manifest.json names an unsafe chunk file {name!r}",
                            hint="chunk names must be plain file names; the bundle is corrupt or hostile, "
                                 "do not use it")
    return name


def frame_count(size: int, segment: int) -> int:
    return max(1, -(-size // segment))


@dataclass(frozen=True)
class Chunk:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Span:
    """Where a tar member lies in the (compressed) stream: its first frame's offset and each frame's length."""

    offset: int
    frames: tuple[int, ...]

    @property
    def length(self) -> int:
        return sum(self.frames)

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class StoredBlob:
    digest: Digest
    size: int
    media_type: str
    span: Span


@dataclass(frozen=True)
class StoredFile:
    path: str
    size: int
    span: Span


@dataclass(frozen=True)
class BundleImage:
    registry: str  # the source registry host, "" for images from an OCI layout
    repository: str
    tag: str | None
    digest: Digest
    media_type: str
    platforms: tuple[str, ...] = ()
    source_digest: Digest | None = None  # the original index digest when a platform subset was taken
    manifests: tuple[Digest, ...] = ()  # push order: children first, the image's own manifest last
    blobs: tuple[Digest, ...] = ()  # configs and layers

    @property
    def reference(self) -> str:
        name = f"{self.registry}/{self.repository}" if self.registry else self.repository
        return name + (f":{self.tag}" if self.tag else f"@{self.digest}")

    def digests(self) -> tuple[Digest, ...]:
        return self.blobs + self.manifests


@dataclass(frozen=True)
class BundleReferrer:
    """A signature, SBOM, attestation or other artifact whose ``subject`` is a manifest of an image
    (or of another referrer) in ``repository``."""

    repository: str
    subject: Digest
    digest: Digest
    media_type: str
    artifact_type: str | None
    tag: str | None  # the cosign-style tag (``sha256-<hex>.sig``) it was found under, else None
    manifests: tuple[Digest, ...] = ()  # push order: children first, the referrer's own manifest last
    blobs: tuple[Digest, ...] = ()

    def digests(self) -> tuple[Digest, ...]:
        return self.blobs + self.manifests


def attached_referrers(image: BundleImage, referrers: Sequence[BundleReferrer]) -> list[BundleReferrer]:
    """The referrers attached to ``image``: subject one of its manifests, or (transitively) another of them."""
    subjects = set(image.manifests)
    out: list[BundleReferrer] = []
    pending = [r for r in referrers if r.repository == image.repository]
    grew = True
    while grew:
        grew = False
        for r in pending:
            if r not in out and r.subject in subjects:
                out.append(r)
                subjects.add(r.digest)
                grew = True
    return out


@dataclass(frozen=True)
class BundleManifest:
    bundle_id: str
    created: str
    tool: str
    key_id: str
    chunk_size: int
    segment_size: int
    stream_size: int
    chunks: tuple[Chunk, ...]
    files: tuple[StoredFile, ...]
    blobs: tuple[StoredBlob, ...]
    images: tuple[BundleImage, ...]
    compression_level: int = 3
    extensions: dict[str, Any] = field(default_factory=dict, compare=False)
    referrers: tuple[BundleReferrer, ...] = ()
    parity: Parity | None = None  # erasure-coded parity chunks (airgap.model.parity)
    bases: tuple[Base, ...] = ()  # a delta bundle: where the blobs it relies on were delivered or seen
    relies_on: tuple[ReliedBlob, ...] = ()  # blobs its images need that it does not carry (airgap.model.delta)

    # -- queries ------------------------------------------------------------------------------
    @property
    def is_delta(self) -> bool:
        return bool(self.relies_on)

    def relied(self, digest: Digest) -> ReliedBlob | None:
        if not self.relies_on:
            return None
        cache: dict[Digest, ReliedBlob] | None = self.__dict__.get("_relied_cache")
        if cache is None:
            cache = {r.digest: r for r in self.relies_on}
            object.__setattr__(self, "_relied_cache", cache)
        return cache.get(digest)

    def blob(self, digest: Digest) -> StoredBlob | None:
        return self._blob_index().get(digest)

    def _blob_index(self) -> dict[Digest, StoredBlob]:
        cache: dict[Digest, StoredBlob] | None = self.__dict__.get("_blob_cache")
        if cache is None:
            cache = {b.digest: b for b in self.blobs}
            object.__setattr__(self, "_blob_cache", cache)
        return cache

    def chunks_for(self, span: Span) -> range:
        """Indexes of the chunks a span touches."""
        if span.length == 0:
            return range(0)
        first = span.offset // self.chunk_size
        last = (span.end - 1) // self.chunk_size
        return range(first, last + 1)

    def referrers_of(self, image: BundleImage) -> list[BundleReferrer]:
        """The referrers attached to ``image``: subject one of its manifests, or (transitively) another of them."""
        return attached_referrers(image, self.referrers)

    def chunks_of_image(self, image: BundleImage) -> set[int]:
        out: set[int] = set()
        for d in image.digests() + tuple(d for r in self.referrers_of(image) for d in r.digests()):
            b = self.blob(d)
            if b is not None:
                out.update(self.chunks_for(b.span))
        return out

    def images_affected(self, chunk_indexes: set[int]) -> list[BundleImage]:
        return [img for img in self.images if self.chunks_of_image(img) & chunk_indexes]

    @property
    def unpacked_size(self) -> int:
        return sum(b.size for b in self.blobs)

    # -- serialisation ------------------------------------------------------------------------
    def to_json(self) -> bytes:
        def span(s: Span) -> dict[str, Any]:
            return {"offset": s.offset, "frames": list(s.frames)}

        obj: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "bundle_id": self.bundle_id,
            "created": self.created,
            "tool": self.tool,
            "key_id": self.key_id,
            "stream": {"container": "tar", "layout": "oci-image-layout", "compression": "zstd",
                       "compression_level": self.compression_level, "segment_size": self.segment_size,
                       "size": self.stream_size},
            "chunk_size": self.chunk_size,
            "chunks": [{"name": c.name, "size": c.size, "sha256": c.sha256} for c in self.chunks],
            **({"parity": self.parity.to_json()} if self.parity is not None else {}),
            "images": [{
                "registry": i.registry, "repository": i.repository, "tag": i.tag, "digest": str(i.digest),
                "media_type": i.media_type, "platforms": list(i.platforms),
                **({"source_digest": str(i.source_digest)} if i.source_digest else {}),
                "manifests": [str(d) for d in i.manifests], "blobs": [str(d) for d in i.blobs],
            } for i in self.images],
            "referrers": [{
                "repository": r.repository, "subject": str(r.subject), "digest": str(r.digest),
                "media_type": r.media_type, "artifact_type": r.artifact_type, "tag": r.tag,
                "manifests": [str(d) for d in r.manifests], "blobs": [str(d) for d in r.blobs],
            } for r in self.referrers],
            "blobs": [{"digest": str(b.digest), "size": b.size, "media_type": b.media_type, **span(b.span)}
                      for b in self.blobs],
            "files": [{"path": f.path, "size": f.size, **span(f.span)} for f in self.files],
            **({"base": [b.to_json() for b in self.bases],
                "relies_on": [r.to_json() for r in self.relies_on]} if self.relies_on else {}),
        }
        obj.update(self.extensions)
        return (json.dumps(obj, indent=1, ensure_ascii=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes) -> BundleManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest.json is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            text = data.decode("utf-8")  # not json.loads(bytes), which takes UTF-16 and UTF-32 too
        except UnicodeDecodeError:
            raise ManifestError("manifest.json is not UTF-8 text") from None
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicates)  # a byte-order mark is refused here
        except ManifestError:
            raise
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest.json is not valid JSON ({str(exc)[:80]})") from None
        return _Parser(obj).manifest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when a key appears twice: parsers differ on which one wins, so a signed manifest
    could say one thing to airgap and another to another reader."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"manifest.json has the key {key[:64]!r} twice in one object")
        out[key] = value
    return out


TOP_LEVEL = frozenset({"format", "version", "bundle_id", "created", "tool", "key_id", "stream", "chunk_size", "chunks",
                       "parity", "images", "referrers", "blobs", "files", "base", "relies_on"})
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_PLATFORM = re.compile(r"[^/\s]+/[^/\s]+(?:/[^/\s]+)?")


class _Parser:
    def __init__(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise ManifestError("manifest.json is not a JSON object")
        self.obj = obj

    @staticmethod
    def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        value = obj.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"manifest.json: {where}.{key} is missing or not a {getattr(kind, '__name__', kind)}")
        return value

    def _int(self, obj: dict[str, Any], key: str, where: str, lo: int = 0, hi: int = MAX_SIZE) -> int:
        value = self._get(obj, key, int, where)
        if not lo <= value <= hi:
            raise ManifestError(f"manifest.json: {where}.{key} = {value} is out of range")
        return int(value)

    def _list(self, obj: dict[str, Any], key: str, where: str, limit: int) -> list[Any]:
        value = self._get(obj, key, list, where)
        if len(value) > limit:
            raise ManifestError(f"manifest.json: {where}.{key} has more than {limit} entries")
        return list(value)

    def _digest(self, value: Any, where: str) -> Digest:
        if not isinstance(value, str):
            raise ManifestError(f"manifest.json: {where} is not a digest")
        try:
            d = Digest.parse(value)
        except InvalidInput:
            raise ManifestError(f"manifest.json: {where} is not a valid digest") from None
        if d.algorithm != "sha256":
            raise ManifestError(f"manifest.json: {where} is not a sha256 digest")
        return d

    def _span(self, obj: dict[str, Any], where: str, size: int, segment: int) -> Span:
        frames = self._list(obj, "frames", where, frame_count(size, segment))
        if len(frames) != frame_count(size, segment) or not all(
                isinstance(f, int) and not isinstance(f, bool) and 0 < f <= 2 * segment + 65536 for f in frames):
            raise ManifestError(f"manifest.json: {where}.frames do not fit its size")
        return Span(self._int(obj, "offset", where), tuple(frames))

    def manifest(self) -> BundleManifest:
        o = self.obj
        if o.get("format") != FORMAT:
            raise ManifestError("manifest.json is not an airgap bundle manifest (format field)")
        version = o.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
            raise ManifestError(f"manifest.json has format version {version!r}; this airgap reads version {VERSION}",
                                hint="use the airgap release that wrote the bundle, or a newer one")
        stream = self._get(o, "stream", dict, "manifest")
        if (stream.get("container"), stream.get("layout"), stream.get("compression")) != (
                "tar", "oci-image-layout", "zstd"):
            raise ManifestError("manifest.json: unsupported stream encoding")
        segment = self._int(stream, "segment_size", "stream", 4096, MAX_SEGMENT)
        stream_size = self._int(stream, "size", "stream")
        chunk_size = self._int(o, "chunk_size", "manifest", 1, MAX_SIZE)
        chunks: list[Chunk] = []
        names: set[str] = set()
        for n, c in enumerate(self._list(o, "chunks", "manifest", MAX_CHUNKS)):
            where = f"chunks[{n}]"
            if not isinstance(c, dict):
                raise ManifestError(f"manifest.json: {where} is not an object")
            name = check_chunk_name(c.get("name"))
            if name in names or name in ("manifest.json", "manifest.json.sig"):
                raise ManifestError(f"manifest.json: chunk name {name!r} is used twice or reserved")
            names.add(name)
            sha = self._get(c, "sha256", str, where)
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ManifestError(f"manifest.json: {where}.sha256 is not 64 hex digits")
            chunks.append(Chunk(name, self._int(c, "size", where, 1, chunk_size), sha))
        if any(c.size != chunk_size for c in chunks[:-1]) or sum(c.size for c in chunks) != stream_size:
            raise ManifestError("manifest.json: chunk sizes do not add up to the stream")
        blobs: list[StoredBlob] = []
        for n, b in enumerate(self._list(o, "blobs", "manifest", MAX_BLOBS)):
            where = f"blobs[{n}]"
            if not isinstance(b, dict):
                raise ManifestError(f"manifest.json: {where} is not an object")
            size = self._int(b, "size", where)
            mt = self._media_type(b, "media_type", where)
            blobs.append(StoredBlob(self._digest(b.get("digest"), f"{where}.digest"), size, mt,
                                    self._span(b, where, size, segment)))
        if len({b.digest for b in blobs}) != len(blobs):
            raise ManifestError("manifest.json lists a blob twice")
        files: list[StoredFile] = []
        for n, f in enumerate(self._list(o, "files", "manifest", len(FILES))):
            where = f"files[{n}]"
            if not isinstance(f, dict) or f.get("path") not in FILES:
                raise ManifestError(f"manifest.json: {where} is not one of {', '.join(FILES)}")
            size = self._int(f, "size", where, 0, 1 << 30)
            files.append(StoredFile(f["path"], size, self._span(f, where, size, segment)))
        spans = sorted([b.span for b in blobs] + [f.span for f in files], key=lambda s: s.offset)
        pos = 0
        for s in spans:
            if s.offset != pos:
                raise ManifestError("manifest.json: the blobs' places in the stream overlap or leave gaps")
            pos = s.end
        if pos != stream_size:
            raise ManifestError("manifest.json: the blobs do not fill the stream")
        images = [self._image(i, n) for n, i in enumerate(self._list(o, "images", "manifest", MAX_IMAGES))]
        referrers = [self._referrer(r, n) for n, r in enumerate(
            self._list(o, "referrers", "manifest", MAX_REFERRERS) if "referrers" in o else [])]
        stored = {b.digest for b in blobs}
        bases, relies_on = parse_delta(o, stored, ManifestError)
        available = stored | {r.digest for r in relies_on}
        for n, img in enumerate(images):
            if any(d not in stored for d in img.manifests) or any(d not in available for d in img.blobs):
                raise ManifestError(f"manifest.json: images[{n}] names content that is neither in the bundle's "
                                    "blobs nor in relies_on")
        self._check_referrers(referrers, images, stored, available)
        later = [k for k in RESERVED if o.get(k)] + sorted(k[:64] for k in o if k not in TOP_LEVEL)[:5]
        if later:  # section 6: a member this reader does not implement may change what the bundle means
            raise ManifestError(f"this bundle uses {', '.join(later)}, which this airgap does not implement",
                                hint="use a newer airgap to read it")
        extensions: dict[str, Any] = {}
        created = self._get(o, "created", str, "manifest")
        if not _CREATED.fullmatch(created):
            raise ManifestError("manifest.json: manifest.created is not a time written YYYY-MM-DDTHH:MM:SSZ")
        level = self._int(stream, "compression_level", "stream", -(1 << 17), 22) if "compression_level" in stream \
            else 3
        return BundleManifest(
            bundle_id=self._bundle_id(o),
            created=created,
            tool=self._get(o, "tool", str, "manifest")[:128],
            key_id=self._get(o, "key_id", str, "manifest")[:128],
            chunk_size=chunk_size, segment_size=segment, stream_size=stream_size,
            compression_level=level,
            chunks=tuple(chunks), files=tuple(files), blobs=tuple(blobs), images=tuple(images),
            extensions=extensions, referrers=tuple(referrers),
            parity=self._parity(o, chunks), bases=bases, relies_on=relies_on,
        )

    @staticmethod
    def _parity(o: dict[str, Any], chunks: list[Chunk]) -> Parity | None:
        from airgap.model.parity import parse_parity  # that module builds on this one

        return parse_parity(o["parity"], chunks) if "parity" in o else None

    def _media_type(self, obj: dict[str, Any], key: str, where: str) -> str:
        value = self._get(obj, key, str, where)
        if not MEDIA_TYPE.fullmatch(value):
            raise ManifestError(f"manifest.json: {where}.{key} has a control character or over 255 characters")
        return str(value)

    def _bundle_id(self, o: dict[str, Any]) -> str:
        value = self._get(o, "bundle_id", str, "manifest")
        if not _ID.match(value):
            raise ManifestError("manifest.json: manifest.bundle_id is not 1 to 128 characters of A-Za-z0-9._:- "
                                "(the first alphanumeric)")
        return str(value)

    def _repository(self, value: str, where: str) -> str:
        if len(value) > 255 or not all(_COMPONENT.match(c) for c in value.split("/")):
            raise ManifestError(f"manifest.json: {where}.repository is not a valid repository name")
        return value

    def _referrer(self, r: Any, n: int) -> BundleReferrer:
        where = f"referrers[{n}]"
        if not isinstance(r, dict):
            raise ManifestError(f"manifest.json: {where} is not an object")
        repository = self._repository(self._get(r, "repository", str, where), where)
        tag = r.get("tag")
        if tag is not None and (not isinstance(tag, str) or not _TAG.match(tag)):
            raise ManifestError(f"manifest.json: {where}.tag is not a valid tag")
        kind = self._media_type(r, "artifact_type", where) if r.get("artifact_type") is not None else None
        media_type = self._media_type(r, "media_type", where)
        digest = self._digest(r.get("digest"), f"{where}.digest")
        manifests = tuple(self._digest(d, f"{where}.manifests") for d in self._list(r, "manifests", where, MAX_BLOBS))
        if not manifests or manifests[-1] != digest:
            raise ManifestError(f"manifest.json: {where}.manifests does not end with the referrer's own digest")
        return BundleReferrer(
            repository=repository, subject=self._digest(r.get("subject"), f"{where}.subject"), digest=digest,
            media_type=media_type, artifact_type=kind, tag=tag, manifests=manifests,
            blobs=tuple(self._digest(d, f"{where}.blobs") for d in self._list(r, "blobs", where, MAX_BLOBS)),
        )

    @staticmethod
    def _check_referrers(referrers: list[BundleReferrer], images: list[BundleImage], stored: set[Digest],
                         available: set[Digest]) -> None:
        """Every referrer's content is in the stream, its subject is a manifest of an image of its repository
        or another referrer there, and a cosign-style tag names its subject."""
        known: dict[str, set[Digest]] = {}
        for img in images:
            known.setdefault(img.repository, set()).update(img.manifests)
        for r in referrers:
            known.setdefault(r.repository, set()).add(r.digest)
        keys: set[tuple[str, Digest, Digest, str | None]] = set()
        for n, r in enumerate(referrers):
            where = f"manifest.json: referrers[{n}]"
            if any(d not in stored for d in r.manifests) or any(d not in available for d in r.blobs):
                raise ManifestError(f"{where} names content that is not in the bundle's blobs")
            if r.subject not in known[r.repository] or r.subject == r.digest:
                raise ManifestError(f"{where}.subject is not a manifest of an image or referrer of {r.repository}")
            if r.tag is not None and not r.tag.startswith(f"{r.subject.algorithm}-{r.subject.hex}."):
                raise ManifestError(f"{where}.tag {r.tag} does not name its subject {r.subject}")
            key = (r.repository, r.subject, r.digest, r.tag)
            if key in keys:
                raise ManifestError(f"{where} is listed twice")
            keys.add(key)

    def _image(self, i: Any, n: int) -> BundleImage:
        where = f"images[{n}]"
        if not isinstance(i, dict):
            raise ManifestError(f"manifest.json: {where} is not an object")
        registry = self._get(i, "registry", str, where)
        repository = self._get(i, "repository", str, where)
        if len(registry) > 255 or (registry and not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", registry)):
            raise ManifestError(f"manifest.json: {where}.registry is not a host name")
        self._repository(repository, where)
        tag = i.get("tag")
        if tag is not None and (not isinstance(tag, str) or not _TAG.match(tag)):
            raise ManifestError(f"manifest.json: {where}.tag is not a valid tag")
        platforms = self._list(i, "platforms", where, 256)
        if not all(isinstance(p, str) and len(p) < 100 and _PLATFORM.fullmatch(p) for p in platforms):
            raise ManifestError(f"manifest.json: {where}.platforms is malformed")
        src = i.get("source_digest")
        return BundleImage(
            registry=registry, repository=repository, tag=tag,
            digest=self._digest(i.get("digest"), f"{where}.digest"),
            media_type=self._media_type(i, "media_type", where),
            platforms=tuple(platforms),
            source_digest=self._digest(src, f"{where}.source_digest") if src is not None else None,
            manifests=tuple(self._digest(d, f"{where}.manifests") for d in
                            self._list(i, "manifests", where, MAX_BLOBS)),
            blobs=tuple(self._digest(d, f"{where}.blobs") for d in self._list(i, "blobs", where, MAX_BLOBS)),
        )
