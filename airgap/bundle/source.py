"""A bundle as a transfer Source: manifests and blobs read from the chunk files, verified."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

from airgap.bundle.files import BundleError
from airgap.bundle.reader import BundleReader
from airgap.errors import AirgapError
from airgap.model.digest import Digest
from airgap.model.manifest import MAX_MANIFEST_BYTES, Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.streams import BlobOpener

BUNDLE_HOST = "bundle"


class DeltaBlobAbsent(BundleError):
    exit_code = 8
    default_hint = "import the base bundle first (or export a full bundle without --since/--exclude-inventory)"


class BundleSource:
    def __init__(self, reader: BundleReader) -> None:
        self.reader = reader

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        digest = Digest.parse(identifier)
        blob = self.reader.manifest.blob(digest)
        if blob is None:
            raise BundleError(f"the bundle lacks manifest {digest} of {ref.repository}",
                              hint="the bundle is incomplete; export it again")
        if blob.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"manifest {digest} in the bundle is larger than {MAX_MANIFEST_BYTES} bytes")
        # small: its own digest is checked; the whole-chunk check is left to the blobs' reads
        try:
            with self.reader.open_blob(digest, check=False) as chunks:
                data = b"".join(chunks)
        except AirgapError:
            # damaged bytes (digest, zstd or tar header error): name the chunk that holds them, if one is
            for index in self.reader.manifest.chunks_for(blob.span):
                self.reader.ensure_chunk(index)
            if self.reader.repair is None:
                raise
            with self.reader.open_blob(digest) as chunks:  # once more, from the chunks rebuilt from parity
                data = b"".join(chunks)
        return Manifest.parse(data, blob.media_type, where=f"manifest {digest} in the bundle")

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        stored = self.reader.manifest.blob(desc.digest)
        relied = self.reader.manifest.relied(desc.digest)
        if stored is None and relied is not None:
            base = self.reader.manifest.bases[relied.base].describe()

            def absent(offset: int) -> AbstractContextManager[Iterator[bytes]]:
                raise DeltaBlobAbsent(f"blob {desc.digest} of {ref.repository} is not in this delta bundle, which "
                                      f"relies on the target having it (from {base}), and the target lacks it")
            return absent
        if stored is None:
            raise BundleError(f"the bundle lacks blob {desc.digest} of {ref.repository}",
                              hint="the bundle is incomplete; export it again")
        if stored.size != desc.size:
            raise BundleError(f"blob {desc.digest} has {stored.size} bytes in the bundle but {desc.size} in its "
                              "manifest", hint="the bundle is inconsistent; do not use it")
        return lambda offset: self.reader.open_blob(desc.digest, offset)
