"""A registry as a transfer Source and Sink."""

from __future__ import annotations

import threading
import time

from airgap.errors import RegistryError
from airgap.model.digest import Digest
from airgap.model.manifest import REFERRER_TAG, Descriptor, Manifest, artifact_type_of, cosign_tags, fallback_tag
from airgap.model.reference import Reference
from airgap.registry.client import SETTLE_PAUSES, UploadSessions
from airgap.registry.pool import Registries
from airgap.streams import BlobOpener
from airgap.workers import worker_pool


class RegistrySource:
    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self._tags: dict[tuple[str, str], frozenset[str] | None] = {}
        self._tags_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def _tag_set(self, ref: Reference) -> frozenset[str] | None:
        """The repository's tags, listed once per run where one answer holds them all (else None: ask per tag).
        Looking up the referrers tags of each manifest by name costs four requests per manifest. Planning
        threads wait only for a listing of their own repository."""
        key = (ref.host, ref.repository)
        with self._lock:
            lock = self._tags_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._tags:
                self._tags[key] = self.registries.client(ref.host).tags_in_one_page(ref.repository)
            return self._tags[key]

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        return self.registries.client(ref.host).get_manifest(ref.repository, identifier)

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        return self.registries.client(ref.host).blob_reader(ref.repository, desc)

    def referrers(self, ref: Reference, digest: Digest) -> list[Descriptor]:
        """The referrers API, else the tag schema's index; then cosign-style tags (found with HEAD)."""
        client = self.registries.client(ref.host)
        found = client.referrers(ref.repository, digest)
        tags = self._tag_set(ref)
        if found is None:
            found = client.fallback_referrers(ref.repository, digest) if tags is None or fallback_tag(
                digest) in tags else []
        out = [d for d in found if d.digest != digest]
        for tag in cosign_tags(digest):
            if tags is not None and tag not in tags:
                continue
            target = client.head_manifest(ref.repository, tag)
            if target is None:
                continue
            m = client.get_manifest(ref.repository, str(target))
            out.append(Descriptor(m.media_type, m.digest, m.size, artifact_type=artifact_type_of(m, tag),
                                  annotations={REFERRER_TAG: tag}))
        return out


class RegistrySink:
    def __init__(self, registries: Registries, *, sessions: UploadSessions | None = None) -> None:
        self.registries = registries
        self.sessions = sessions
        self.stopping = threading.Event()

    def push_blob(self, target: Reference, desc: Descriptor, opener: BlobOpener,
                  mount_from: tuple[str, ...]) -> str:
        return self.registries.client(target.host).push_blob(target.repository, desc, opener, mount_from=mount_from,
                                                             sessions=self.sessions, stopping=self.stopping)

    def wind_down(self) -> bool:
        """The run was interrupted: uploads finish the PATCH in flight and send no other. True when that is worth
        waiting for: the upload sessions are journaled, and the next run continues them where they stand."""
        self.stopping.set()
        return self.sessions is not None

    def has_manifest(self, target: Reference, digest: Digest) -> bool:
        return self.registries.client(target.host).head_manifest(target.repository, str(digest),
                                                                    mend=True) == digest

    def push_manifest(self, target: Reference, manifest: Manifest, tag: str | None) -> None:
        self.registries.client(target.host).put_manifest(target.repository, manifest, tag)

    def tagged(self, target: Reference, tag: str) -> Digest | None:
        """What ``tag`` names in the target repository; None when nothing (or a 500: a push mends that)."""
        return self.registries.client(target.host).head_manifest(target.repository, tag, mend=True)


def index_referrers(registries: Registries, by_subject: dict[tuple[str, str, Digest], list[Manifest]]) -> int:
    """List pushed referrers (found by their ``subject``) where a reader will look for them: a registry with
    the referrers API indexes them itself; on one without it they are merged into the fallback tag index
    ``sha256-<subject hex>``. Keys are (host, repository, subject). Returns the indexes written."""
    api: dict[str, bool] = {}
    written = 0
    for (host, repo, subject), manifests in by_subject.items():
        client = registries.client(host)
        if host not in api:
            api[host] = client.referrers(repo, subject) is not None
        if not api[host] and client.add_fallback_referrers(repo, subject, manifests):
            written += 1
    return written


def check_servable(registries: Registries, pushed: dict[tuple[str, Digest], str], jobs: int) -> None:
    """Ask once more for each manifest just pushed (HEAD; keys (host, digest), values a repository that holds it).

    distribution writes a manifest's bytes in place: a write cut short (its disk filled up, it was stopped) leaves
    a short or empty file, which it then answers 500 for, and which no later push replaces (it finds the file and
    keeps it). The PUT was answered 201 all the same, so only asking again shows it. Another client pushing the
    same manifest at the same moment makes it briefly unservable too: it is asked again a few times first."""
    items = list(pushed.items())

    def servable(item: tuple[tuple[str, Digest], str]) -> bool:
        (host, digest), repo = item
        client = registries.client(host)
        for pause in (*SETTLE_PAUSES, None):
            if client.head_manifest(repo, str(digest), mend=True) == digest:
                return True
            if pause is not None:
                time.sleep(pause)
        return False

    with worker_pool(jobs, "airgap-check") as pool:
        broken = [item for item, ok in zip(items, pool.map(servable, items), strict=True) if not ok]
    if broken:
        (host, digest), repo = broken[0]
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        files = [f"docker/registry/v2/blobs/sha256/{d.hex[:2]}/{d.hex}/data" for (_, d), _ in broken[:MAX_NAMED]]
        which = "these files" if len(broken) > 1 else "this file"
        raise RegistryError(
            f"{host}/{repo}: the registry took manifest {digest}{more} but cannot serve it: its storage holds a "
            "damaged copy, as a write cut short by a full disk or a stop leaves behind", registry=host, repository=repo,
            hint=f"a push does not replace it; on distribution (registry:2) remove {which} from its storage: "
                 f"{' '.join(files)}{' …' if len(broken) > MAX_NAMED else ''}, then run the same command again")


MAX_NAMED = 50  # damaged manifests named in one error (a rerun names those left)
