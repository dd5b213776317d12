"""What a delta export leaves out: blobs that an inventory lists or that earlier bundles delivered.

Builds :class:`Exclusions` from inventories (``export --exclude-inventory``) and bundle manifests
(``export --since``). Only layers (and other non-config blobs) are left out; manifests and configs always
travel, so that a delta bundle describes its images completely. See docs/bundle-format.md section 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airgap.errors import AirgapError, InvalidInput
from airgap.model.bundle import MAX_MANIFEST_BYTES, BundleManifest
from airgap.model.delta import MAX_HINTS, Base, Inventory, ReliedBlob
from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor


@dataclass
class Exclusions:
    bases: list[Base] = field(default_factory=list)
    blobs: dict[Digest, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # -> (base index, hints)

    def key(self) -> list[str]:
        """What a resumed export must see again (the bases' ids)."""
        return [f"{b.kind}:{b.id}" for b in self.bases]

    def _base(self, base: Base) -> int:
        if base in self.bases:
            return self.bases.index(base)
        self.bases.append(base)
        return len(self.bases) - 1

    def add_inventory(self, inv: Inventory) -> None:
        """Every blob the inventory lists; hints are repository paths on its registry (prefix included)."""
        n = self._base(inv.base())
        for b in inv.blobs:
            hints = tuple(f"{inv.prefix}/{r}" if inv.prefix else r for r in b.repositories[:MAX_HINTS])
            self.blobs.setdefault(b.digest, (n, hints))

    def add_bundle(self, manifest: BundleManifest) -> None:
        """Every blob the bundle carries, and what it relied on itself (attributed to its own bases)."""
        n = self._base(Base("bundle", manifest.bundle_id, manifest.created))
        where: dict[Digest, list[str]] = {}
        for img in manifest.images:
            for d in img.blobs:
                repos = where.setdefault(d, [])
                if img.repository not in repos:
                    repos.append(img.repository)
        for blob in manifest.blobs:
            self.blobs.setdefault(blob.digest, (n, tuple(where.get(blob.digest, ())[:MAX_HINTS])))
        for r in manifest.relies_on:
            base = self._base(manifest.bases[r.base])
            self.blobs.setdefault(r.digest, (base, r.repositories))

    def relied(self, desc: Descriptor) -> ReliedBlob | None:
        """The relies_on entry for ``desc`` when it is to be left out, else None."""
        hit = self.blobs.get(desc.digest)
        if hit is None:
            return None
        return ReliedBlob(desc.digest, desc.size, desc.media_type, hit[0], hit[1])


def read_since(path: Path) -> BundleManifest:
    """``--since DIR`` (a bundle directory) or ``--since FILE`` (its manifest.json)."""
    target = path / "manifest.json" if path.is_dir() else path
    try:
        if target.stat().st_size > MAX_MANIFEST_BYTES:  # not read whole before it is bounded
            raise InvalidInput(f"--since {path}: {target} is larger than a bundle's manifest.json may be",
                               hint="give the earlier bundle's directory or its manifest.json")
        data = target.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"--since {path}: cannot read {target} ({exc.strerror or exc})",
                           hint="give the earlier bundle's directory or its manifest.json") from None
    try:
        return BundleManifest.parse(data)
    except AirgapError as exc:  # the parser speaks of "the bundle's manifest.json" and of exporting it again
        raise InvalidInput(f"--since {path}: {target} is not the manifest.json of an airgap bundle ({exc.message})",
                           hint="give the earlier bundle's directory or its manifest.json") from None


def exclusions(inventories: Sequence[Inventory], since: Sequence[BundleManifest]) -> Exclusions | None:
    if not inventories and not since:
        return None
    out = Exclusions()
    for inv in inventories:
        out.add_inventory(inv)
    for m in since:
        out.add_bundle(m)
    return out
