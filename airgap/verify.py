"""``verify``: the signature first, then every chunk's size and sha256, with the images each problem affects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from airgap.bundle.reader import BundleReader, ChunkReport, read_signed_manifest
from airgap.model.bundle import BundleManifest
from airgap.model.parity import StripeDamage
from airgap.signing import PublicKey


@dataclass
class VerifyResult:
    manifest: BundleManifest
    signer: PublicKey
    report: ChunkReport

    @property
    def ok(self) -> bool:
        return self.report.ok

    def affected(self, chunk_name: str) -> list[str]:
        idx = next((i for i, c in enumerate(self.manifest.chunks) if c.name == chunk_name), None)
        if idx is None:  # a parity chunk
            return []
        return [img.reference for img in self.manifest.images_affected({idx})]

    @cached_property
    def damage(self) -> list[StripeDamage]:
        """Per stripe with problems, what is missing or damaged and whether parity can rebuild it (empty for a
        bundle without parity)."""
        parity = self.manifest.parity
        if parity is None:
            return []
        return parity.damage(self.manifest.chunks, {p.chunk.name for p in self.report.problems})

    def stripe_of(self, chunk_name: str) -> StripeDamage | None:
        return next((d for d in self.damage if chunk_name in d.bad), None)


def verify_bundle(directory: Path, trusted: Sequence[PublicKey], media: Sequence[Path] = ()) -> VerifyResult:
    manifest, signer = read_signed_manifest(directory, trusted)
    reader = BundleReader(manifest, [directory, *media])
    return VerifyResult(manifest, signer, reader.check_all())
