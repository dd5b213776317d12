"""The two ends of every transfer. Registries, bundle readers and bundle writers implement them."""

from __future__ import annotations

from typing import Protocol

from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.streams import BlobOpener


class Source(Protocol):
    """Where images come from."""

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        """The manifest that ``identifier`` (a tag or digest) names in ``ref``'s repository, exact bytes."""
        ...

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        """Open ``desc``'s content (from ``ref``'s repository), verified against its digest and size."""
        ...


class ReferrerSource(Source, Protocol):
    """A Source that can also list referrers. Optional: the planner asks only sources that have
    ``referrers`` (registries do; bundles and OCI layouts need not)."""

    def referrers(self, ref: Reference, digest: Digest) -> list[Descriptor]:
        """The manifests in ``ref``'s repository whose ``subject`` is ``digest`` (OCI referrers, and
        cosign-style tags ``sha256-<hex>.sig|.att|.sbom``, whose descriptors carry the tag in the
        annotation ``airgap.model.manifest.REFERRER_TAG``)."""
        ...


class Sink(Protocol):
    """Where images go. Optional: ``wind_down() -> bool``, called once on Ctrl-C, after which the blob pushes in
    flight end their current step and start no other; True asks the engine to wait for that (see
    ``airgap.transfer.engine.WIND_DOWN_SECONDS``)."""

    def push_blob(self, target: Reference, desc: Descriptor, opener: BlobOpener,
                  mount_from: tuple[str, ...]) -> str:
        """Make the blob exist in ``target``'s repository: "skipped", "mounted" or "uploaded".

        ``mount_from`` names other repositories of the same sink that already hold it.
        """
        ...

    def has_manifest(self, target: Reference, digest: Digest) -> bool:
        ...

    def push_manifest(self, target: Reference, manifest: Manifest, tag: str | None) -> None:
        """Store a manifest's exact bytes by digest, or under ``tag`` when given."""
        ...
