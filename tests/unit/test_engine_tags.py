"""The transfer engine moves tags only once every image's blobs and child manifests are in the target, and
moves them in parallel, never overlapping a PUT with one of a manifest it refers to."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from airgap.model.digest import Digest
from airgap.model.manifest import Descriptor, Manifest
from airgap.model.reference import Reference
from airgap.streams import BlobOpener
from airgap.transfer.engine import transfer
from airgap.transfer.plan import ImageRequest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def image_manifest(n: int) -> bytes:
    layer = f"layer {n}".encode()
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(CONFIG)),
                   "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(Digest.of(layer)),
                    "size": len(layer)}],
    }).encode()


class MemorySource:
    def __init__(self, count: int) -> None:
        self.manifests = {f"t{n}": image_manifest(n) for n in range(count)}
        self.media_types: dict[str, str] = {}
        self.blobs = {Digest.of(CONFIG): CONFIG} | {Digest.of(f"layer {n}".encode()): f"layer {n}".encode()
                                                    for n in range(count)}

    def get_manifest(self, ref: Reference, identifier: str) -> Manifest:
        name = identifier if identifier in self.manifests else next(
            t for t, m in self.manifests.items() if str(Digest.of(m)) == identifier)
        return Manifest.parse(self.manifests[name], self.media_types.get(name, OCI_MANIFEST))

    def blob_opener(self, ref: Reference, desc: Descriptor) -> BlobOpener:
        @contextmanager
        def opener(offset: int) -> Iterator[Iterator[bytes]]:
            yield iter([self.blobs[desc.digest][offset:]])
        return opener


class TagBarrierSink:
    """Records what is pushed; a tag push waits until ``parties`` tag pushes are in flight together."""

    def __init__(self, parties: int, images: int) -> None:
        self.images = images
        self.lock = threading.Lock()
        self.blobs: set[tuple[str, Digest]] = set()
        self.manifests: set[tuple[str, Digest]] = set()
        self.tags: dict[str, Digest] = {}
        self.whole_when_tagged: list[bool] = []
        self.barrier = threading.Barrier(parties, timeout=5)

    def push_blob(self, target: Reference, desc: Descriptor, opener: BlobOpener, mount_from: tuple[str, ...]) -> str:
        with opener(0) as chunks:
            assert b"".join(chunks)
        with self.lock:
            self.blobs.add((target.repository, desc.digest))
        return "uploaded"

    def has_manifest(self, target: Reference, digest: Digest) -> bool:
        with self.lock:
            return (target.repository, digest) in self.manifests

    def push_manifest(self, target: Reference, manifest: Manifest, tag: str | None) -> None:
        if tag is None:
            with self.lock:
                self.manifests.add((target.repository, manifest.digest))
            return
        with self.lock:  # every image's blobs, not only this one's, are in before the first tag moves
            self.whole_when_tagged.append(len(self.blobs) == self.images + 1)  # a layer each, one config
        self.barrier.wait()  # a tag pushed alone waits here until the timeout: BrokenBarrierError
        with self.lock:
            self.tags[f"{target.repository}:{tag}"] = manifest.digest


@pytest.mark.parametrize("jobs", [2, 4])
def test_tags_move_in_parallel_once_every_image_is_whole(jobs: int) -> None:
    count = 8
    source = MemorySource(count)
    sink = TagBarrierSink(parties=jobs, images=count)
    requests = [ImageRequest(Reference.parse(f"src.example/app:t{n}"), Reference.parse(f"dst.example/app:t{n}"))
                for n in range(count)]
    result = transfer(source, sink, requests, jobs=jobs)
    assert not result.failed
    assert sink.tags == {f"app:t{n}": Digest.of(image_manifest(n)) for n in range(count)}
    assert all(sink.whole_when_tagged) and len(sink.whole_when_tagged) == count
    assert [i.target for i in result.images] == [f"dst.example/app:t{n}@{Digest.of(image_manifest(n))}"
                                                  for n in range(count)]


class OverlapSink(TagBarrierSink):
    """Holds every manifest PUT for a moment and records the PUTs that overlapped one they must not: an index
    and one of its children, or two PUTs of one manifest (distribution rewrites a manifest's links in place)."""

    def __init__(self) -> None:
        super().__init__(parties=1, images=0)
        self.in_flight: list[Manifest] = []
        self.clashes: list[str] = []
        self.puts = 0

    def push_manifest(self, target: Reference, manifest: Manifest, tag: str | None) -> None:
        with self.lock:
            self.puts += 1
            for other in self.in_flight:
                related = {c.digest for c in manifest.manifests} | {c.digest for c in other.manifests}
                if other.digest == manifest.digest or other.digest in related or manifest.digest in related:
                    self.clashes.append(f"{tag or manifest.digest.short} while {other.digest.short}")
            self.in_flight.append(manifest)
        time.sleep(0.05)  # long enough for any PUT started beside it to overlap it
        with self.lock:
            self.in_flight.remove(manifest)
            if tag is None:
                self.manifests.add((target.repository, manifest.digest))
            else:
                self.tags[f"{target.repository}:{tag}"] = manifest.digest


def test_no_put_overlaps_one_of_a_manifest_it_refers_to_or_the_same_manifest() -> None:
    source = MemorySource(3)
    children = [Digest.of(source.manifests[f"t{n}"]) for n in range(2)]
    entries = [{"mediaType": OCI_MANIFEST, "digest": str(children[n]), "size": len(source.manifests[f"t{n}"]),
                "platform": {"os": "linux", "architecture": arch}} for n, arch in enumerate(["amd64", "arm64"])]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    source.manifests["idx"] = index
    source.media_types["idx"] = OCI_INDEX
    source.manifests["again"] = source.manifests["t0"]
    sink = OverlapSink()
    requests = [ImageRequest(Reference.parse(f"src.example/app:{t}"), Reference.parse(f"dst.example/app:{t}"))
                for t in ("idx", "t0", "t1", "t2", "again")]
    result = transfer(source, sink, requests, jobs=6)
    assert not result.failed and len(result.images) == 5
    assert sink.clashes == []
    assert sink.tags == {f"app:{t}": Digest.of(source.manifests[t]) for t in ("idx", "t0", "t1", "t2", "again")}
    # the index's children once by digest (the root of a tagged image goes by its tag alone), then the tags
    assert sink.puts == 2 + 5
    assert sink.manifests == {("app", d) for d in children}
