"""``inventory``: what a (disconnected) registry holds, in a small file carried back across the gap.

The export side reads it with ``--exclude-inventory`` to leave out every blob the target already has.
Walks the catalog (or the repositories named), every tag and every manifest below it; manifests whose
type airgap does not handle (schema1) are skipped with a notice, since their blobs cannot be relied on.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from airgap import __version__
from airgap.atomic import write_atomic
from airgap.errors import AuthError, InvalidInput, NotFound, PermissionDenied, RegistryError, UnsupportedManifest
from airgap.model.delta import (
    MAX_INVENTORY_BYTES,
    Inventory,
    InventoryBlob,
    InventoryError,
    InventoryImage,
    check_repository,
)
from airgap.model.digest import Digest
from airgap.model.manifest import Manifest, is_referrer_tag
from airgap.registry.client import RegistryClient
from airgap.signing import PrivateKey, PublicKey, SignatureError, sign, verify
from airgap.workers import worker_pool

MAX_DEPTH = 4


@dataclass
class InventoryResult:
    inventory: Inventory
    notices: list[str] = field(default_factory=list)


def take_inventory(client: RegistryClient, prefix: str = "", repositories: Sequence[str] = (), *, jobs: int = 6,
                   on_repository: Callable[[str], None] | None = None) -> InventoryResult:
    """List the images and blobs of every repository under ``prefix`` (or of ``repositories``, relative to it)."""
    if prefix:
        check_repository(prefix, "prefix")
    notices: list[str] = []
    if repositories:
        names = [f"{prefix}/{r}" if prefix else r for r in (check_repository(r, "--repo") for r in repositories)]
    else:
        try:
            names = client.catalog()
        except AuthError:
            raise  # no credentials, or refused ones: --repo would meet the same 401
        except (PermissionDenied, NotFound) as exc:
            raise InvalidInput(f"{client.host} does not let us list its repositories ({exc.message})",
                               hint="name the repositories to take with --repo NAME (repeatable)") from None
        except RegistryError as exc:
            if exc.status in (401, 403, 404, 405):
                raise InvalidInput(f"{client.host} does not let us list its repositories ({exc.message})",
                                   hint="name the repositories to take with --repo NAME (repeatable)") from None
            raise
        names = [n for n in names if not prefix or n.startswith(prefix + "/")]
        if not names:  # a fresh registry, or a mistyped prefix: said, since a delta against it leaves nothing out
            notices.append(f"{client.host}{'/' + prefix if prefix else ''} holds no repository: the inventory is "
                           "empty, and an export against it leaves nothing out")
    lock = threading.Lock()
    images: list[InventoryImage] = []
    blobs: dict[Digest, tuple[int, set[str]]] = {}
    manifests: set[Digest] = set()
    untagged: list[str] = []  # repositories named with --repo that hold no tag (a typo, most likely)

    def relative(name: str) -> str:
        return name[len(prefix) + 1:] if prefix else name

    def walk(repo: str) -> None:
        rel = relative(repo)
        if on_repository is not None:
            on_repository(repo)
        found: list[InventoryImage] = []
        seen: dict[Digest, Manifest] = {}
        repo_blobs: dict[Digest, int] = {}
        tags = client.list_tags(repo)
        if repositories and all(is_referrer_tag(t) for t in tags):  # none, or only those of signatures
            with lock:
                untagged.append(repo)
        for tag in sorted(tags):
            try:
                root = client.get_manifest(repo, tag)
            except UnsupportedManifest as exc:
                with lock:
                    notices.append(f"{client.host}/{repo}:{tag} skipped: {exc.message}")
                continue
            except NotFound:
                continue  # deleted while we walked
            found.append(InventoryImage(rel, tag, root.digest, root.media_type))
            _collect(client, repo, root, seen, repo_blobs, 0)
        with lock:
            images.extend(found)
            manifests.update(seen)
            for digest, size in repo_blobs.items():
                blobs.setdefault(digest, (size, set()))[1].add(rel)

    with worker_pool(jobs, "airgap-inventory") as pool:
        for future in [pool.submit(walk, n) for n in sorted(set(names))]:
            future.result()
    if untagged:
        raise NotFound(f"{client.host}: no repository {', '.join(sorted(untagged))} with tagged images",
                       registry=client.host,
                       hint="check the --repo names (relative to the prefix): an inventory without them would make "
                            "the next delta carry their images whole")
    inventory = Inventory(
        inventory_id="i-" + uuid.uuid4().hex, created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tool=f"airgap {__version__}", registry=client.host, prefix=prefix,
        images=tuple(sorted(images, key=lambda i: (i.repository, i.tag or ""))),
        blobs=tuple(InventoryBlob(d, size, tuple(sorted(repos))) for d, (size, repos) in sorted(
            blobs.items(), key=lambda kv: str(kv[0]))),
        manifests=tuple(sorted(manifests, key=str)),
    )
    return InventoryResult(inventory, notices)


def _collect(client: RegistryClient, repo: str, manifest: Manifest, seen: dict[Digest, Manifest],
             blobs: dict[Digest, int], depth: int) -> None:
    if manifest.digest in seen or depth > MAX_DEPTH:
        return
    seen[manifest.digest] = manifest
    for desc in manifest.manifests:
        if desc.digest in seen:
            continue
        try:
            child = client.get_manifest(repo, str(desc.digest))
        except (NotFound, UnsupportedManifest):
            continue  # an index may name platforms the registry never received
        _collect(client, repo, child, seen, blobs, depth + 1)
    for blob in manifest.blobs():
        blobs[blob.digest] = blob.size


def write_inventory(inventory: Inventory, path: Path, key: PrivateKey | None = None) -> None:
    """Write the inventory (and, with ``key``, its detached signature ``PATH.sig``) atomically."""
    data = inventory.to_json()
    sig = path.with_name(path.name + ".sig")
    try:
        if key is not None:
            write_atomic(sig, sign(key, data))
        else:
            sig.unlink(missing_ok=True)  # an earlier inventory's: it would be taken for this one's, and not match
        write_atomic(path, data)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}",
                           hint="choose a directory you can write to") from None


STALE_DAYS = 7


def stale_note(inventory: Inventory, path: Path) -> str | None:
    """What to say of an inventory taken more than :data:`STALE_DAYS` ago: the target has likely received
    more since, which a delta made against it carries again."""
    try:
        taken = datetime.strptime(inventory.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    days = (datetime.now(UTC) - taken).days
    if days <= STALE_DAYS:
        return None
    return (f"the inventory {path} of {inventory.where} was taken {days} days ago: what the target got since then "
            "travels again; a fresh inventory makes a smaller delta")


def read_inventory(path: Path, trusted: Sequence[PublicKey] = ()) -> Inventory:
    """Read an inventory; with ``trusted`` keys its signature ``PATH.sig`` must be there and verify."""
    try:
        if path.stat().st_size > MAX_INVENTORY_BYTES:
            raise InventoryError(f"the inventory {path} is larger than {MAX_INVENTORY_BYTES >> 20} MiB",
                                 hint="check the path given to --exclude-inventory")
        data = path.read_bytes()
    except OSError as exc:
        raise InventoryError(f"cannot read the inventory {path}: {exc.strerror or exc}",
                             hint="check the path given to --exclude-inventory") from None
    if trusted:
        sig = path.with_name(path.name + ".sig")
        if not sig.is_file():  # a signature problem (exit 6), as a bundle's is
            raise SignatureError(f"the inventory {path} has no signature {sig.name}",
                                 hint="take it with `airgap inventory --key`, or drop --inventory-pubkey")
        try:
            verify(data, sig.read_bytes(), trusted, subject=str(path))
        except SignatureError as exc:
            raise type(exc)(exc.message, hint="take the inventory again on the disconnected side") from None
    return Inventory.parse(data, str(path))
