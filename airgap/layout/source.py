"""Read images from an OCI image layout directory (images built locally, e.g. in CI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airgap.errors import InvalidInput, NotFound
from airgap.model.digest import Digest
from airgap.model.manifest import MAX_MANIFEST_BYTES, Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.streams import BlobOpener, verified

LAYOUT_HOST = "oci-layout"
REF_NAME = "org.opencontainers.image.ref.name"
READ_CHUNK = 1024 * 1024


def _split_name(name: str) -> tuple[str, str | None]:
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, None


class LayoutSource:
    """A :class:`~airgap.transfer.endpoints.Source` over one OCI layout directory.

    Images are addressed as ``Reference(LAYOUT_HOST, repository, tag)`` where ``repository:tag`` is the
    ``org.opencontainers.image.ref.name`` annotation of an ``index.json`` entry.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / "oci-layout").is_file() or not (path / "index.json").is_file():
            raise InvalidInput(f"{path} is not an OCI image layout (no oci-layout or index.json)",
                               hint="point at the directory that holds oci-layout, index.json and blobs/")
        try:
            index = json.loads((path / "index.json").read_bytes())
            self.entries = [Descriptor.from_json(m, f"{path}/index.json") for m in index.get("manifests", [])]
        except (ValueError, AttributeError) as exc:
            raise InvalidInput(f"{path}/index.json is not a valid OCI index ({exc})") from None

    def names(self) -> list[str]:
        return [d.annotations[REF_NAME] for d in self.entries if REF_NAME in d.annotations]

    def reference(self, name: str) -> Reference:
        repo, tag = _split_name(name)
        return Reference(LAYOUT_HOST, repo, tag or None)

    def entry(self, name: str) -> Descriptor:
        for d in self.entries:
            if d.annotations.get(REF_NAME) == name:
                return d
        raise NotFound(f"{self.path} has no image named {name!r}",
                       hint=f"it has: {', '.join(self.names()) or 'no named images'}")

    def _blob_path(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.hex

    def _lookup(self, ref: Reference, identifier: str) -> Descriptor:
        wanted = {f"{ref.repository}:{identifier}", identifier} if not identifier.startswith("sha") else set()
        for d in self.entries:
            if d.annotations.get(REF_NAME) in wanted or str(d.digest) == identifier:
                return d
        raise NotFound(f"{self.path} has no image {ref.repository}:{identifier}",
                       hint=f"it has: {', '.join(self.names()) or 'no named images'}")

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        if identifier.startswith("sha256:"):
            digest = Digest.parse(identifier)
            media_type = next((d.media_type for d in self.entries if d.digest == digest), None)
        else:
            entry = self._lookup(ref, identifier)
            digest, media_type = entry.digest, entry.media_type
        path = self._blob_path(digest)
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise InvalidInput(f"manifest {digest} in {self.path} is larger than {MAX_MANIFEST_BYTES} bytes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.path} lacks manifest {digest}", hint="the layout is incomplete") from None
        manifest = Manifest.parse(data, media_type, where=f"manifest {digest} in {self.path}")
        if manifest.digest != digest:
            from airgap.errors import DigestMismatch

            raise DigestMismatch(f"manifest {digest} in {self.path} has digest {manifest.digest}")
        return manifest

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        path = self._blob_path(desc.digest)

        @contextmanager
        def opener(offset: int) -> Iterator[Iterator[bytes]]:
            try:
                f = path.open("rb")
            except FileNotFoundError:
                raise NotFound(f"{self.path} lacks blob {desc.digest}", hint="the layout is incomplete") from None
            with f:
                f.seek(offset)

                def chunks() -> Iterator[bytes]:
                    while chunk := f.read(READ_CHUNK):
                        yield chunk

                yield verified(chunks(), desc.digest, desc.size, f"blob {desc.digest} in {self.path}",
                               offset=offset)

        return opener
