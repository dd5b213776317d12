"""``import``: a verified, resumable push of a bundle into a (disconnected) registry.

Trust first (the signature, before anything is parsed), digests always (chunks as they are read, every
blob before its upload is finalised), children before parents and tags last, and a journal so that a
rerun continues where an interrupted one stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airgap.bundle.files import BundleError
from airgap.bundle.reader import BundleReader, ChunkMissing
from airgap.bundle.source import BUNDLE_HOST, BundleSource
from airgap.errors import AirgapError, InvalidInput, InvalidReference, RegistryError
from airgap.inputs import counted
from airgap.journal import ImportJournal, KnownBlobs
from airgap.locking import exclusive
from airgap.model.bundle import BundleImage, BundleManifest, BundleReferrer
from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.reference import _COMPONENT, Reference, parse_host
from airgap.registry.endpoints import RegistrySink, check_servable, index_referrers
from airgap.registry.pool import Registries
from airgap.repair import Repairer
from airgap.streams import BlobOpener
from airgap.transfer.engine import FailedImage, TransferResult, transfer
from airgap.transfer.events import Event, ImageDone, Planned, Progress, ignore
from airgap.transfer.plan import NO_REFERRERS, ImageRequest, PlannedImage, plan_image
from airgap.workers import worker_pool


@dataclass(frozen=True)
class Target:
    host: str
    prefix: str  # "" or "a/b"

    @classmethod
    def parse(cls, text: str, option: str = "--to") -> Target:
        """``REGISTRY[:PORT][/PREFIX]`` as given to ``option``; an ``https://`` or ``http://`` in front is dropped,
        as by ``login`` (whether a registry speaks HTTP is --insecure's, or loopback's, to say)."""
        bare = text.strip()
        for scheme in ("https://", "http://"):
            if bare.lower().startswith(scheme):
                bare = bare[len(scheme):]
                break
        host, _, prefix = bare.strip("/").partition("/")
        try:
            host = parse_host(host)
        except InvalidInput:
            raise InvalidInput(f"invalid registry {text!r} for {option}",
                               hint=f"write {option} REGISTRY[:PORT][/PREFIX]") from None
        if prefix and not all(_COMPONENT.match(c) for c in prefix.split("/")):
            raise InvalidInput(f"invalid prefix {prefix!r} in {option} {text}",
                               hint="a prefix is lowercase path components joined by /")
        return cls(host, prefix)

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


@dataclass
class Mapped:
    image: BundleImage
    target: Reference  # host, repository and tag (or none) in the target registry

    @property
    def request(self) -> ImageRequest:
        source = Reference(BUNDLE_HOST, self.image.repository, None, self.image.digest)
        return ImageRequest(source, self.target)


def _host_component(host: str) -> str:
    comp = re.sub(r"[^a-z0-9._-]+", "-", host.lower()).strip("-._")
    return comp or "registry"


def _names(i: BundleImage) -> set[str]:
    """What ``--image`` may call an image: its reference, with or without its registry, tag or digest."""
    names = {i.repository, f"{i.repository}@{i.digest}", str(i.digest)}
    if i.tag:
        names.add(f"{i.repository}:{i.tag}")
    if i.registry:
        names |= {f"{i.registry}/{n}" for n in names if not n.startswith("sha256:")}
    return names


def map_images(manifest: BundleManifest, target: Target, selection: Sequence[str] = (), *,
               keep_source_host: bool = False) -> list[Mapped]:
    """``host/path:tag`` in the bundle becomes ``REGISTRY/PREFIX/path:tag``; clashes are refused."""
    images = list(manifest.images)
    if selection:
        chosen: list[BundleImage] = []
        for sel in selection:
            hits = [i for i in images if sel in _names(i)]
            if not hits:
                raise InvalidInput(f"the bundle has no image {sel!r}",
                                   hint="see `airgap inspect DIR` for the images it holds")
            chosen.extend(h for h in hits if h not in chosen)
        images = chosen
    out: list[Mapped] = []
    seen: dict[tuple[str, str | None], BundleImage] = {}
    for img in images:
        parts = [p for p in (target.prefix, _host_component(img.registry) if keep_source_host and img.registry
                             else "", img.repository) if p]
        repo = "/".join(parts)
        if len(target.host) + 1 + len(repo) > 255:
            raise InvalidReference(f"target name {target.host}/{repo} is too long", hint="use a shorter prefix")
        key = (repo, img.tag)
        other = seen.get(key)
        if other is not None and img.tag is not None and other.digest != img.digest:
            raise InvalidInput(
                f"{other.reference} and {img.reference} would both land on {target.host}/{repo}:{img.tag}",
                hint="pass --keep-source-host to keep each source registry as a path component, or --image to "
                     "import one of them")
        seen[key] = img
        out.append(Mapped(img, Reference(target.host, repo, img.tag, None if img.tag else img.digest)))
    return out


@dataclass
class ImportResult:
    manifest: BundleManifest
    target: Target
    images: list[Mapped]
    transfer: TransferResult | None = None
    seconds: float = 0.0
    already_done: bool = False
    referrers: int = 0  # referrer manifests pushed (or found there)
    referrer_indexes: int = 0  # fallback tag indexes (sha256-<hex>) written
    repaired: list[str] = field(default_factory=list)  # chunks rebuilt from parity on the way

    @property
    def failed(self) -> list[FailedImage]:
        return self.transfer.failed if self.transfer else []


def check_chunks_present(reader: BundleReader, mapped: list[Mapped], repairer: Repairer | None = None) -> None:
    """Refuse to start when a chunk that the chosen images need is not on any medium (and parity, when the
    bundle has some, cannot rebuild it)."""
    m = reader.manifest
    need: set[int] = set()
    for item in mapped:
        need |= m.chunks_of_image(item.image)
    missing = sorted(i for i in need if reader.path(m.chunks[i]) is None)
    if not missing:
        return
    lost = repairer.unrepairable(missing) if repairer is not None else []
    if repairer is not None and not lost:
        return  # rebuilt from parity when read
    names = ", ".join(m.chunks[i].name for i in missing[:10]) + (" …" if len(missing) > 10 else "")
    hit = [x for x in mapped if m.chunks_of_image(x.image) & set(missing)]
    ok = [x.image.reference for x in mapped if x not in hit]
    hint = "pass the directory of each medium with --media DIR"
    if ok:
        hint += "; these images have all their chunks and can be imported now with --image: " + ", ".join(ok)
    parity = "".join(f"; parity cannot rebuild them: {d.describe()}" for d in lost[:1])
    raise ChunkMissing(f"{counted(len(missing), 'chunk')} missing ({names}); needed by "
                       + ", ".join(x.image.reference for x in hit) + parity, hint=hint)


class DeltaBaseMissing(AirgapError):
    exit_code = 8
    default_hint = "import the base first, or export a full bundle (without --since/--exclude-inventory)"


def check_relied(registries: Registries, manifest: BundleManifest, target: Target, mapped: list[Mapped],
                 jobs: int = 6, known: KnownBlobs | None = None) -> dict[Digest, list[str]]:
    """A delta bundle: check (HEAD) that every blob it relies on for the chosen images is in the target, in the
    image's repository or in another one to mount it from. Returns each relied-on digest's holders; raises
    :class:`DeltaBaseMissing` before anything is pushed when some are nowhere.

    A bundle base's hints are repositories without their registry: imported with ``--keep-source-host``, the
    base's images landed below their registry's path component, which the hint lacks; then each of this bundle's
    registries is tried (a delta comes from the sources of its base), and the hint as it is. Last, ``known``: the
    repository an earlier import (of any bundle, same state directory) put the blob in."""
    if not manifest.is_delta:
        return {}
    need: dict[Digest, list[str]] = {}
    users: dict[Digest, list[str]] = {}
    for m in mapped:
        for d in list(m.image.blobs) + [d for r in manifest.referrers_of(m.image) for d in r.blobs]:
            if manifest.relied(d) is not None:
                repos = need.setdefault(d, [])
                if m.target.repository not in repos:
                    repos.append(m.target.repository)
                    users.setdefault(d, []).append(m.image.reference)
    client = registries.client(target.host)
    kept_hosts = any(m.target.repository != "/".join(p for p in (target.prefix, m.image.repository) if p)
                     for m in mapped)
    hosts = sorted({_host_component(i.registry) for i in manifest.images if i.registry}) if kept_hosts else []

    def holders(digest: Digest) -> list[str]:
        found = [repo for repo in need[digest] if client.has_blob(repo, digest)]
        if found:
            return found
        relied = manifest.relied(digest)
        assert relied is not None
        inventory = manifest.bases[relied.base].kind == "inventory"  # its hints are full repository paths
        for hint in relied.repositories:
            paths = [hint] if inventory else [*(f"{c}/{hint}" for c in hosts), hint]
            for path in paths:
                repo = path if inventory or not target.prefix else f"{target.prefix}/{path}"
                if repo not in need[digest] and client.has_blob(repo, digest):
                    return [repo]
        earlier = known.get(str(digest)) if known is not None else None
        if earlier is not None and earlier not in need[digest] and client.has_blob(earlier, digest):
            return [earlier]
        return []

    with worker_pool(jobs, "airgap-check") as pool:
        found = dict(zip(need, pool.map(holders, need), strict=True))
    missing = [d for d, repos in found.items() if not repos]
    if missing:
        bases = sorted({manifest.bases[r.base].describe() for d in missing if (r := manifest.relied(d)) is not None})
        images = sorted({u for d in missing for u in users[d]})
        shown = ", ".join(d.short for d in missing[:3]) + (" …" if len(missing) > 3 else "")
        size = sum(r.size for d in missing if (r := manifest.relied(d)) is not None)
        they = "it was" if len(missing) == 1 else "they were"
        raise DeltaBaseMissing(
            f"this delta bundle relies on {counted(len(missing), 'blob')} that {target} does not hold ({shown}; "
            f"{size} bytes, needed by {', '.join(images[:5])}{' …' if len(images) > 5 else ''}); {they} delivered "
            f"by {'; '.join(bases)}; nothing was pushed")
    return found


class JournaledSink(RegistrySink):
    """A registry sink that records each committed blob and its upload sessions in the journal. ``holders``
    (a delta's relied-on blobs) and ``known`` (where earlier imports into the registry put each blob): other
    repositories of the target to mount a blob from."""

    def __init__(self, registries: Registries, journal: ImportJournal,
                 holders: dict[Digest, list[str]] | None = None, known: KnownBlobs | None = None) -> None:
        super().__init__(registries, sessions=journal)
        self.journal = journal
        self.holders = holders or {}
        self.known = known

    def push_blob(self, target: Reference, desc: Descriptor, opener: BlobOpener, mount_from: tuple[str, ...]) -> str:
        hints = list(self.holders.get(desc.digest, ()))
        if target.repository in hints:
            outcome = "skipped"  # check_relied's HEAD found it there, in this run: not asked again
        else:
            earlier = self.known.get(str(desc.digest)) if self.known is not None else None
            if earlier is not None:
                hints.append(earlier)
            extra = tuple(dict.fromkeys(r for r in hints if r != target.repository and r not in mount_from))
            outcome = super().push_blob(target, desc, opener, mount_from + extra)
        self.journal.blob_committed(target.repository, str(desc.digest))
        if self.known is not None:
            self.known.add(str(desc.digest), target.repository)
        return outcome


def import_bundle(registries: Registries, reader: BundleReader, target: Target, mapped: list[Mapped],
                  journal: ImportJournal, *, jobs: int = 6, progress: Progress = ignore,
                  repairer: Repairer | None = None, known: KnownBlobs | None = None) -> ImportResult:
    """Push ``mapped`` images from the bundle. Images whose content is damaged are left out (and reported)
    while the others complete; a registry failure (auth, connection) stops the import. With a ``repairer``
    (also given to ``reader``), chunks found missing or damaged are rebuilt from parity first. With ``known``,
    a blob an earlier import put in another repository of the target is mounted from there, not uploaded. One
    run at a time imports a bundle into a target (per journal): another one is refused with
    :class:`~airgap.errors.InUse`."""
    with exclusive(journal.path, f"another airgap run is importing bundle {reader.manifest.bundle_id} into {target}",
                   create=True):
        return _import_bundle(registries, reader, target, mapped, journal, jobs, progress, repairer, known)


def _import_bundle(registries: Registries, reader: BundleReader, target: Target, mapped: list[Mapped],
                   journal: ImportJournal, jobs: int, progress: Progress, repairer: Repairer | None,
                   known: KnownBlobs | None) -> ImportResult:
    result = ImportResult(reader.manifest, target, mapped)
    t0 = time.monotonic()
    source = BundleSource(reader)
    if journal.done and _still_there(registries, reader.manifest, mapped, jobs):
        result.already_done = True  # the registry holds it all: no chunk is needed, even if a medium is absent
        # as a run that found it all there counts it: every blob already present, every tag unchanged
        result.transfer = TransferResult(
            skipped=len({(m.target.host, m.target.repository, d) for m in mapped for d in m.image.blobs}),
            unchanged={str(m.target) for m in mapped if m.target.tag})
        result.seconds = time.monotonic() - t0
        return result
    check_chunks_present(reader, mapped, repairer)
    holders = check_relied(registries, reader.manifest, target, mapped, jobs, known)
    journal.started()
    planned: list[PlannedImage] = []
    unplanned: list[FailedImage] = []
    for m in mapped:
        try:
            planned.append(plan_image(source, m.request))
        except RegistryError:
            raise
        except AirgapError as exc:  # a damaged manifest in the bundle: leave this image out, like a damaged blob
            unplanned.append(FailedImage(str(m.request.source), str(m.request.target), exc))
    sink = JournaledSink(registries, journal, holders, known)
    result.transfer = transfer(source, sink, [p.request for p in planned],
                               jobs=jobs, progress=progress, keep_going=True, planned=planned)
    if unplanned:
        order = {str(m.request.target): n for n, m in enumerate(mapped)}
        result.transfer.failed = sorted(result.transfer.failed + unplanned, key=lambda f: order.get(f.target, 0))
    _stop_on_registry_error(result, mapped)
    failed = {f.target for f in result.transfer.failed}
    _push_referrers(registries, source, sink, reader.manifest,
                    [m for m in mapped if str(m.request.target) not in failed], result, jobs, progress)
    _stop_on_registry_error(result, mapped)
    _check_servable(registries, reader.manifest, [m for m in mapped if str(m.request.target) not in failed], jobs)
    if repairer is not None:
        result.repaired = list(repairer.rebuilt)
    if not result.transfer.failed:
        journal.finished()
        if repairer is not None:
            repairer.cleanup()
    result.seconds = time.monotonic() - t0
    return result


def _stop_on_registry_error(result: ImportResult, mapped: list[Mapped]) -> None:
    """A registry error that no image got past (the registry down, credentials refused) is the import's error.
    When other images got in, it concerned those images only (no permission on their repositories, say): they
    are reported as left out, with the images that got in, like images whose content is damaged."""
    assert result.transfer is not None
    errors = [f.error for f in result.transfer.failed if isinstance(f.error, RegistryError)]
    if errors and len({f.target for f in result.transfer.failed}) >= len(mapped):
        raise errors[0]


def _check_servable(registries: Registries, manifest: BundleManifest, mapped: list[Mapped], jobs: int) -> None:
    """Every manifest just pushed must come back: see :func:`airgap.registry.endpoints.check_servable`."""
    pushed: dict[tuple[str, Digest], str] = {}  # (host, digest) -> a repository that holds it
    for m in mapped:
        for d in m.image.manifests:
            pushed.setdefault((m.target.host, d), m.target.repository)
    for m, r, _ in referrer_targets(manifest, mapped):
        for d in r.manifests:
            pushed.setdefault((m.target.host, d), m.target.repository)
    check_servable(registries, pushed, jobs)


def referrer_targets(manifest: BundleManifest, mapped: list[Mapped]) -> list[tuple[Mapped, BundleReferrer, int]]:
    """Each referrer with the image it goes with in the target and its level (1: its subject is a manifest of
    the image; 2: a referrer of a referrer), once per target repository, subjects' levels first."""
    out: list[tuple[Mapped, BundleReferrer, int]] = []
    seen: set[tuple[str, str, BundleReferrer]] = set()
    for m in mapped:
        level = {d: 0 for d in m.image.manifests}
        for r in manifest.referrers_of(m.image):
            level[r.digest] = min(level.get(r.digest, 99), level[r.subject] + 1)
            key = (m.target.host, m.target.repository, r)
            if key not in seen:
                seen.add(key)
                out.append((m, r, level[r.subject] + 1))
    return sorted(out, key=lambda x: x[2])


def _push_referrers(registries: Registries, source: BundleSource, sink: JournaledSink, manifest: BundleManifest,
                    mapped: list[Mapped], result: ImportResult, jobs: int, progress: Progress) -> None:
    """Push every referrer after its subject (blobs, manifests by digest, exact bytes), then its cosign-style
    tag, or, where the target has no referrers API, list it in the fallback tag index of its subject."""
    todo = referrer_targets(manifest, mapped)
    if not todo or result.transfer is None:
        return

    def quiet(event: Event) -> None:  # the bar was sized for the images: feed it bytes, not a second plan
        if not isinstance(event, (Planned, ImageDone)):
            progress(event)

    fallback: dict[tuple[str, str, Digest], list[Manifest]] = {}
    for level in sorted({lv for _, _, lv in todo}):
        planned: list[tuple[Mapped, BundleReferrer, PlannedImage]] = []
        for m, r, lv in todo:
            if lv != level:
                continue
            request = ImageRequest(Reference(BUNDLE_HOST, m.image.repository, None, r.digest),
                                   Reference(m.target.host, m.target.repository, r.tag, None if r.tag else r.digest))
            where = f"referrer {r.digest} of {m.image.reference}"
            try:
                planned.append((m, r, plan_image(source, request, NO_REFERRERS)))
            except RegistryError:
                raise
            except AirgapError as exc:
                result.transfer.failed.append(FailedImage(where, str(m.target), exc))
        moved = transfer(source, sink, [p.request for _, _, p in planned], jobs=jobs, progress=quiet,
                         keep_going=True, planned=[p for _, _, p in planned])
        t = result.transfer
        t.uploaded += moved.uploaded
        t.mounted += moved.mounted
        t.skipped += moved.skipped
        t.bytes_uploaded += moved.bytes_uploaded
        bad = {f.source for f in moved.failed}
        for f in moved.failed:
            m, r, _ = next(x for x in planned if str(x[2].request.source) == f.source)
            t.failed.append(FailedImage(f"referrer {r.digest} of {m.image.reference}", str(m.target), f.error))
        for m, r, p in planned:
            if str(p.request.source) in bad:
                continue
            result.referrers += 1
            if r.tag is None:
                fallback.setdefault((m.target.host, m.target.repository, r.subject), []).append(p.root)
    result.referrer_indexes += index_referrers(registries, fallback)


def _still_there(registries: Registries, manifest: BundleManifest, mapped: list[Mapped], jobs: int) -> bool:
    """After a finished import: is everything still in the target, as the journal says? (HEAD requests, and
    the referrers lists)"""
    checks: list[tuple[str, str, str, Digest | None]] = []  # (host, repository, kind/identifier, expected)
    for m in mapped:
        repo, host = m.target.repository, m.target.host
        checks.append((host, repo, m.target.tag or str(m.image.digest), m.image.digest))
        # the tag's answer names the root, which is then there by digest too
        checks.extend((host, repo, str(d), d) for d in m.image.manifests if d != m.image.digest)
        checks.extend((host, repo, "blob:" + str(d), None) for d in m.image.blobs)
    for m, r, _ in referrer_targets(manifest, mapped):
        host, repo = m.target.host, m.target.repository
        checks.extend((host, repo, str(d), d) for d in r.manifests)
        if r.tag:
            checks.append((host, repo, r.tag, r.digest))
        else:
            checks.append((host, repo, "referrer:" + str(r.subject), r.digest))

    def ok(check: tuple[str, str, str, Digest | None]) -> bool:
        host, repo, ident, expected = check
        client = registries.client(host)
        if ident.startswith("blob:"):
            return client.has_blob(repo, Digest.parse(ident[5:]), mend=True)
        if ident.startswith("referrer:"):  # listed by the referrers API, else by the fallback tag index
            subject = Digest.parse(ident.removeprefix("referrer:"))
            listed = client.referrers(repo, subject)
            if listed is None:
                listed = client.fallback_referrers(repo, subject)
            return any(d.digest == expected for d in listed)
        return client.head_manifest(repo, ident, mend=True) == expected

    with worker_pool(jobs, "airgap-check") as pool:  # each check once: images share blobs
        return all(pool.map(ok, dict.fromkeys(checks)))


def digest_ref(m: Mapped) -> str:
    return f"{m.target.host}/{m.target.repository}@{m.image.digest}"


__all__ = ["BundleError", "Digest", "ImportResult", "Mapped", "Path", "Target", "import_bundle", "map_images"]
