"""Deltas: what a bundle leaves out because the disconnected side already holds it, and inventories.

Pure data and validation, no files or HTTP. An *inventory* lists what a registry holds (images and blob
digests); a *delta bundle* records, inside its signed manifest, the blobs it relies on and where they
came from (the ``base`` list: earlier bundles or inventories). See docs/bundle-format.md section 7.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airgap.errors import InvalidInput
from airgap.model.digest import Digest
from airgap.model.manifest import MEDIA_TYPE
from airgap.model.reference import _COMPONENT, _TAG

INVENTORY_FORMAT = "airgap-inventory"
INVENTORY_VERSION = 1
MAX_INVENTORY_BYTES = 256 * 1024 * 1024
MAX_BASES = 1000
MAX_HINTS = 1000  # relies_on[].repositories: hints, so a writer keeps the first ones (a base layer in every repo)
MAX_ITEMS = 2_000_000
MAX_SIZE = 1 << 50
BASE_KINDS = ("bundle", "inventory")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


class InventoryError(InvalidInput):
    default_hint = "take the inventory again with `airgap inventory` on the disconnected side"


def check_repository(value: object, where: str, error: type[InvalidInput] = InvalidInput) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or not all(
            _COMPONENT.match(c) for c in value.split("/")):
        raise error(f"{where}: {value!r} is not a valid repository name")
    return value


# --------------------------------------------------------------------------- delta bundles


@dataclass(frozen=True)
class Base:
    """Where relied-on blobs were delivered or seen: an earlier bundle, or an inventory of the target."""

    kind: str  # "bundle" | "inventory"
    id: str  # the bundle_id or inventory_id
    created: str = ""
    registry: str = ""  # inventories: the registry[/prefix] they describe

    def describe(self) -> str:
        if self.kind == "bundle":
            return f"bundle {self.id}" + (f" (created {self.created})" if self.created else "")
        return f"the inventory {self.id} of {self.registry}" + (f" (taken {self.created})" if self.created else "")

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "id": self.id, "created": self.created}
        if self.kind == "inventory":
            d["registry"] = self.registry
        return d


@dataclass(frozen=True)
class ReliedBlob:
    """A blob that images of a delta bundle need but the bundle does not carry."""

    digest: Digest
    size: int
    media_type: str
    base: int  # index into the manifest's ``base`` list
    repositories: tuple[str, ...] = ()  # where it is known to be, relative to the import prefix (hints)

    def to_json(self) -> dict[str, Any]:
        return {"digest": str(self.digest), "size": self.size, "media_type": self.media_type, "base": self.base,
                "repositories": list(self.repositories)}


def parse_delta(o: dict[str, Any], stored: set[Digest], error: type[InvalidInput]
                ) -> tuple[tuple[Base, ...], tuple[ReliedBlob, ...]]:
    """The ``base`` and ``relies_on`` members of a bundle manifest (both absent in a full bundle)."""
    raw_bases = o.get("base", [])
    raw_relied = o.get("relies_on", [])
    if not isinstance(raw_bases, list) or len(raw_bases) > MAX_BASES:
        raise error("manifest.json: base is not a list of at most 1000 entries")
    if not isinstance(raw_relied, list) or len(raw_relied) > MAX_ITEMS:
        raise error("manifest.json: relies_on is not a list")
    if bool(raw_bases) != bool(raw_relied):
        raise error("manifest.json: base and relies_on must be given together")
    bases: list[Base] = []
    for n, b in enumerate(raw_bases):
        where = f"manifest.json: base[{n}]"
        if not isinstance(b, dict) or b.get("kind") not in BASE_KINDS:
            raise error(f"{where}.kind is not one of {', '.join(BASE_KINDS)}")
        ident, created, registry = b.get("id"), b.get("created", ""), b.get("registry", "")
        if not isinstance(ident, str) or not _ID.match(ident):
            raise error(f"{where}.id is not a bundle or inventory id")
        if not isinstance(created, str) or len(created) > 64 or not isinstance(registry, str) or len(registry) > 512:
            raise error(f"{where} is malformed")
        bases.append(Base(b["kind"], ident, created, registry))
    relied: list[ReliedBlob] = []
    seen: set[Digest] = set()
    for n, r in enumerate(raw_relied):
        where = f"manifest.json: relies_on[{n}]"
        if not isinstance(r, dict):
            raise error(f"{where} is not an object")
        try:
            digest = Digest.parse(r.get("digest"))  # type: ignore[arg-type]
        except (InvalidInput, TypeError, AttributeError):
            raise error(f"{where}.digest is not a digest") from None
        if digest in stored or digest in seen:
            raise error(f"{where}: {digest} is listed twice or also stored in the bundle")
        seen.add(digest)
        size, base, mt = r.get("size"), r.get("base"), r.get("media_type")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            raise error(f"{where}.size is not a size")
        if not isinstance(base, int) or isinstance(base, bool) or not 0 <= base < len(bases):
            raise error(f"{where}.base does not name an entry of base")
        if not isinstance(mt, str) or not MEDIA_TYPE.fullmatch(mt):
            raise error(f"{where}.media_type is malformed")
        repos = r.get("repositories", [])
        if not isinstance(repos, list) or len(repos) > MAX_HINTS:
            raise error(f"{where}.repositories is not a list of at most {MAX_HINTS} repositories")
        relied.append(ReliedBlob(digest, size, mt, base, tuple(check_repository(x, where, error) for x in repos)))
    return tuple(bases), tuple(relied)


# --------------------------------------------------------------------------- inventories


@dataclass(frozen=True)
class InventoryImage:
    repository: str  # relative to the inventory's prefix
    tag: str | None
    digest: Digest
    media_type: str


@dataclass(frozen=True)
class InventoryBlob:
    digest: Digest
    size: int
    repositories: tuple[str, ...]  # relative to the inventory's prefix


@dataclass(frozen=True)
class Inventory:
    """What a registry (under a prefix) holds: image references with digests, and every blob they use."""

    inventory_id: str
    created: str
    tool: str
    registry: str  # host[:port]
    prefix: str  # "" or "a/b"
    images: tuple[InventoryImage, ...] = ()
    blobs: tuple[InventoryBlob, ...] = ()
    manifests: tuple[Digest, ...] = field(default=())  # every manifest digest seen (indexes and children)

    @property
    def where(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry

    def base(self) -> Base:
        return Base("inventory", self.inventory_id, self.created, self.where)

    def to_json(self) -> bytes:
        obj = {
            "format": INVENTORY_FORMAT, "version": INVENTORY_VERSION, "inventory_id": self.inventory_id,
            "created": self.created, "tool": self.tool, "registry": self.registry, "prefix": self.prefix,
            "images": [{"repository": i.repository, "tag": i.tag, "digest": str(i.digest), "media_type": i.media_type}
                       for i in self.images],
            "manifests": [str(d) for d in self.manifests],
            "blobs": [{"digest": str(b.digest), "size": b.size, "repositories": list(b.repositories)}
                      for b in self.blobs],
        }
        return (json.dumps(obj, indent=1) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, source: str = "the inventory") -> Inventory:
        if len(data) > MAX_INVENTORY_BYTES:
            raise InventoryError(f"{source} is larger than {MAX_INVENTORY_BYTES} bytes")
        def once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # as a bundle manifest: one meaning for all
            out = dict(pairs)
            if len(out) != len(pairs):
                raise InventoryError(f"{source} has a key twice in one object")
            return out

        try:
            o = json.loads(data.decode("utf-8"), object_pairs_hook=once)  # UTF-8 only, as a bundle manifest
        except UnicodeDecodeError:
            raise InventoryError(f"{source} is not UTF-8 text") from None
        except InventoryError:
            raise
        except (ValueError, RecursionError) as exc:
            raise InventoryError(f"{source} is not valid JSON ({str(exc)[:80]})") from None
        if not isinstance(o, dict) or o.get("format") != INVENTORY_FORMAT:
            raise InventoryError(f"{source} is not an airgap inventory",
                                 hint="pass a file written by `airgap inventory`")
        if o.get("version") != INVENTORY_VERSION:
            raise InventoryError(f"{source} has unsupported version {o.get('version')!r}",
                                 hint="read it with the airgap version that wrote it, or a newer one")
        strings = {}
        for k in ("inventory_id", "created", "tool", "registry", "prefix"):
            v = o.get(k)
            if not isinstance(v, str) or len(v) > 512:
                raise InventoryError(f"{source}: {k} is missing or malformed")
            strings[k] = v
        if not _ID.match(strings["inventory_id"]):
            raise InventoryError(f"{source}: inventory_id is malformed")
        if strings["prefix"]:
            check_repository(strings["prefix"], f"{source}: prefix", InventoryError)
        images: list[InventoryImage] = []
        for n, i in enumerate(_items(o, "images", source)):
            where = f"{source}: images[{n}]"
            tag = i.get("tag")
            if tag is not None and (not isinstance(tag, str) or not _TAG.match(tag)):
                raise InventoryError(f"{where}.tag is not a valid tag")
            mt = i.get("media_type")
            if not isinstance(mt, str) or not MEDIA_TYPE.fullmatch(mt):
                raise InventoryError(f"{where}.media_type is malformed")
            images.append(InventoryImage(check_repository(i.get("repository"), where, InventoryError), tag,
                                         _digest(i.get("digest"), where), mt))
        blobs: list[InventoryBlob] = []
        for n, b in enumerate(_items(o, "blobs", source)):
            where = f"{source}: blobs[{n}]"
            size = b.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
                raise InventoryError(f"{where}.size is not a size")
            repos = b.get("repositories")
            if not isinstance(repos, list) or len(repos) > 100_000:
                raise InventoryError(f"{where}.repositories is not a list")
            blobs.append(InventoryBlob(_digest(b.get("digest"), where), size,
                                       tuple(check_repository(r, where, InventoryError) for r in repos)))
        raw_manifests = o.get("manifests", [])
        if not isinstance(raw_manifests, list) or len(raw_manifests) > MAX_ITEMS:
            raise InventoryError(f"{source}: manifests is not a list")
        manifests = tuple(_digest(d, f"{source}: manifests") for d in raw_manifests)
        return cls(strings["inventory_id"], strings["created"], strings["tool"], strings["registry"],
                   strings["prefix"], tuple(images), tuple(blobs), manifests)


def _items(o: dict[str, Any], key: str, source: str) -> Iterable[dict[str, Any]]:
    raw = o.get(key)
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS or not all(isinstance(x, dict) for x in raw):
        raise InventoryError(f"{source}: {key} is not a list of objects")
    return raw


def _digest(value: object, where: str) -> Digest:
    try:
        return Digest.parse(value)  # type: ignore[arg-type]
    except (InvalidInput, TypeError, AttributeError):
        raise InventoryError(f"{where}: {value!r} is not a digest") from None
