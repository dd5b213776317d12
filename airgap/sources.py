"""Where export reads images from: registries, and OCI layout directories named ``oci:DIR[:REF]``."""

from __future__ import annotations

from pathlib import Path

from airgap.errors import InvalidReference
from airgap.layout import LayoutSource
from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.registry.endpoints import RegistrySource
from airgap.registry.pool import Registries
from airgap.streams import BlobOpener

OCI_PREFIX = "oci:"


class Sources:
    """A Source over every registry and every OCI layout that an export names.

    A layout image is a :class:`Reference` whose host is ``oci:<absolute directory>``.
    """

    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self._registry = RegistrySource(registries)
        self._layouts: dict[str, LayoutSource] = {}

    def layout(self, directory: str) -> LayoutSource:
        key = str(Path(directory).resolve())
        if key not in self._layouts:
            self._layouts[key] = LayoutSource(Path(key))
        return self._layouts[key]

    def layout_refs(self, text: str) -> list[Reference]:
        """``oci:DIR`` (every named image) or ``oci:DIR:NAME`` as references."""
        body = text[len(OCI_PREFIX):]
        if not body:
            raise InvalidReference(f"{text!r} names no directory", hint="write oci:DIR or oci:DIR:NAME")
        directory, _, name = body.partition(":")
        layout = self.layout(directory)
        host = OCI_PREFIX + str(layout.path)
        names = [name] if name else layout.names()
        if not names:
            raise InvalidReference(f"{directory} holds no named images",
                                   hint="name the image: oci:DIR:NAME, as in its org.opencontainers.image.ref.name")
        refs = []
        for n in names:
            r = layout.reference(n)
            if r.tag:
                refs.append(Reference(host, r.repository, r.tag))
            else:  # a bare name: the image goes by digest
                entry = layout.entry(n)
                refs.append(Reference(host, r.repository, None, entry.digest))
        return refs

    def _layout_for(self, ref: Reference) -> LayoutSource | None:
        if ref.host.startswith(OCI_PREFIX):
            return self.layout(ref.host[len(OCI_PREFIX):])
        return None

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        layout = self._layout_for(ref)
        if layout is not None:
            return layout.get_manifest(ref, identifier)
        return self._registry.get_manifest(ref, identifier)

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        layout = self._layout_for(ref)
        if layout is not None:
            return layout.blob_opener(ref, desc)
        return self._registry.blob_opener(ref, desc)

    def referrers(self, ref: Reference, digest: Digest) -> list[Descriptor]:
        if self._layout_for(ref) is not None:
            return []  # OCI layouts: referrers are not looked for (yet)
        return self._registry.referrers(ref, digest)
