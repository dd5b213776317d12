"""The bundle manifest parser and the stream encoding, as untrusted input and by property."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airgap.bundle.files import BundleError
from airgap.bundle.frames import compressed_frame, encode, stored_frame, stored_frame_parts
from airgap.bundle.reader import BundleReader
from airgap.bundle.stream import Member
from airgap.bundle.tarfmt import END_OF_ARCHIVE, blob_path
from airgap.bundle.writer import write_stream
from airgap.errors import DigestMismatch, InvalidInput
from airgap.model.bundle import BundleManifest, ManifestError, StoredBlob, StoredFile
from airgap.model.digest import Digest


def noise(n: int, seed: int = 0) -> bytes:
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{len(out)}".encode()).digest()
    return out[:n]


def build(tmp: Path, blobs: list[bytes], *, chunk_size: int = 4096, segment: int = 4096,
          media_type: str = "application/octet-stream") -> tuple[BundleManifest, Path]:
    members = [Member("oci-layout", 2, data=b"{}")]
    for data in blobs:
        members.append(Member(blob_path(Digest.of(data).hex), len(data), media_type, Digest.of(data), data=data))
    members.append(Member("index.json", 2, data=b"{}", trailer=END_OF_ARCHIVE))
    chunks, spans, _ = write_stream(tmp, members, chunk_size=chunk_size, segment=segment, level=3, jobs=2)
    stored = tuple(StoredBlob(m.digest, m.size, media_type, s) for m, s in zip(members, spans, strict=True)
                   if m.digest)
    files = tuple(StoredFile(m.path, m.size, s) for m, s in zip(members, spans, strict=True) if not m.digest)
    manifest = BundleManifest("b-test", "2026-01-01T00:00:00Z", "test", "ed25519:0", chunk_size, segment,
                              sum(c.size for c in chunks), tuple(chunks), files, stored, ())
    return BundleManifest.parse(manifest.to_json()), tmp


def test_round_trip_and_random_access(tmp_path: Path) -> None:
    blobs = [bytes(range(256)) * 50, b"", b"x" * 9000, b"tiny"]
    m, d = build(tmp_path, blobs, media_type="application/vnd.oci.image.layer.v1.tar")
    reader = BundleReader(m, [d], verify_chunks=True)
    assert reader.check_all().ok
    for data in blobs:
        for offset in sorted({0, len(data) // 3, max(0, len(data) - 1)}):
            with reader.open_blob(Digest.of(data), offset) as chunks:
                assert b"".join(chunks) == data[offset:]
    # the chunks are a plain zstd stream of a tar archive
    stream = b"".join((d / c.name).read_bytes() for c in m.chunks)
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stream), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = tar.getnames()
    assert names[0] == "oci-layout" and names[-1] == "index.json" and len(names) == len(blobs) + 2


def test_forged_frame_size_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    """A frame is decoded whole: a header that claims more content than a segment holds (read without the
    whole-chunk check, as small members are) is refused as damage, not allocated."""
    data = noise(3000)
    m, d = build(tmp_path, [data], chunk_size=1 << 20, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    blob = m.blobs[0]
    chunk = d / m.chunks[0].name
    raw = bytearray(chunk.read_bytes())
    at = blob.span.offset
    assert raw[at:at + 5] == b"\x28\xb5\x2f\xfd\xe0"  # a stored frame: magic, then an 8-byte content size
    raw[at + 5:at + 13] = (1 << 40).to_bytes(8, "little")  # claims 1 TiB
    chunk.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="a frame claims 1099511627776 bytes"), \
            BundleReader(m, [d]).open_blob(blob.digest, check=False) as chunks:
        b"".join(chunks)


def test_corrupt_chunk_is_named(tmp_path: Path) -> None:
    m, d = build(tmp_path, [noise(20000)])
    victim = d / m.chunks[1].name
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    reader = BundleReader(m, [d], verify_chunks=True)
    with pytest.raises(BundleError, match=f"chunk {m.chunks[1].name} is corrupt"), \
            reader.open_blob(m.blobs[0].digest) as chunks:
        b"".join(chunks)
    # without the whole-chunk check, the blob's own digest still catches it
    unchecked = BundleReader(m, [d])
    with pytest.raises((DigestMismatch, InvalidInput, BundleError)), unchecked.open_blob(m.blobs[0].digest) as chunks:
        b"".join(chunks)


def test_a_flipped_byte_of_a_layout_file_is_found_without_the_whole_chunk_check(tmp_path: Path) -> None:
    """Files (``index.json``) carry no digest in the manifest, and zstd frames no checksum: reading one checks
    the chunks that hold it whole, with or without ``verify_chunks`` (found by the slow property test)."""
    m, d = build(tmp_path, [noise(9000)])
    f = next(x for x in m.files if x.path == "index.json")
    end = f.span.offset + sum(f.span.frames)
    victim = d / m.chunks[(end - 1) // m.chunk_size].name
    data = bytearray(victim.read_bytes())
    at = data.rfind(b"{}")  # index.json's bytes, stored as they are in a raw block
    data[at] ^= 1
    victim.write_bytes(bytes(data))
    for verify in (False, True):
        with pytest.raises(BundleError, match=f"chunk {victim.name} is corrupt"):
            BundleReader(m, [d], verify_chunks=verify).read_file("index.json")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=10000), min_size=1, max_size=5, unique=True), st.integers(1024, 9000),
       st.data())
def test_any_blobs_any_chunking(tmp_path_factory: Any, blobs: list[bytes], chunk_size: int, data: Any) -> None:
    d = tmp_path_factory.mktemp("b")
    m, _ = build(d, blobs, chunk_size=chunk_size, segment=4096)
    reader = BundleReader(m, [d], verify_chunks=True)
    blob = data.draw(st.sampled_from(blobs))
    offset = data.draw(st.integers(0, len(blob)))
    with reader.open_blob(Digest.of(blob), offset) as chunks:
        assert b"".join(chunks) == blob[offset:]


@given(st.binary(max_size=300_000), st.lists(st.integers(0, 300_000), max_size=6))
@settings(max_examples=30, deadline=None)
def test_frames_decode_to_their_content(data: bytes, cuts: list[int]) -> None:
    d = zstandard.ZstdDecompressor()
    for frame in (stored_frame(data), compressed_frame(data, 3)):
        assert d.stream_reader(io.BytesIO(frame), read_across_frames=True).read() == data
    # a stored frame built from the content in pieces (views of them, no copy) is the same bytes
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]
    assert b"".join(stored_frame_parts(pieces)) == stored_frame(data)


def test_random_looking_content_is_stored_and_text_compressed() -> None:
    """A frame whose first 64 KiB do not compress is stored raw (no zstd work for nothing); either way it
    decodes to its content, and the choice depends only on the bytes (a rerun writes the same frame)."""
    d = zstandard.ZstdDecompressor()
    random_like = noise(1 << 20, 7)
    text = b"".join(b"line %d of a very ordinary text file\n" % i for i in range(40000))
    for data, stored in ((random_like, True), (text, False), (random_like[:100_000], False)):
        frame = b"".join(encode([data], store=False, level=3))
        assert (frame == stored_frame(data)) is stored
        # the content may come in any pieces (as the network gave it): the frame is the same
        pieces = [data[:513], data[513:70_000], data[70_000:]]
        assert b"".join(encode(pieces, store=False, level=3)) == frame
        assert d.stream_reader(io.BytesIO(frame), read_across_frames=True).read() == data
    assert len(b"".join(encode([text], store=False, level=3))) < len(text) // 4


# -- hostile manifests ---------------------------------------------------------------------------


def good_manifest(tmp_path: Path) -> dict[str, Any]:
    m, _ = build(tmp_path, [noise(10000), b"world"])
    return json.loads(m.to_json())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs", "a\\b", "nul\x00", ".hidden", "..", "", "x" * 200,
                                  "manifest.json"])
def test_unsafe_chunk_names_refused(tmp_path: Path, name: str) -> None:
    doc = good_manifest(tmp_path)
    doc["chunks"][0]["name"] = name
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(version=2),
    lambda d: d.update(format="other"),
    lambda d: d["chunks"][0].update(size=d["chunks"][0]["size"] - 1),
    lambda d: d["chunks"].append(dict(d["chunks"][-1], name="chunk-extra.bin")),
    lambda d: d["chunks"].__setitem__(1, dict(d["chunks"][1], name=d["chunks"][0]["name"])),
    lambda d: d["blobs"][0].update(offset=d["blobs"][0]["offset"] + 1),
    lambda d: d["blobs"][0].update(size=-1),
    lambda d: d["blobs"][0].update(size=True),
    lambda d: d["blobs"][0].update(frames=[]),
    lambda d: d["blobs"][0].update(frames=[1] * 100),
    lambda d: d["blobs"][0].update(digest="sha256:" + "Z" * 64),
    lambda d: d["blobs"].append(d["blobs"][0]),
    lambda d: d["files"][0].update(path="../../etc/passwd"),
    lambda d: d["stream"].update(size=d["stream"]["size"] + 1),
    lambda d: d["stream"].update(segment_size=1),
    lambda d: d.update(chunk_size=0),
    lambda d: d.update(images=[{"registry": "a/b", "repository": "x", "tag": "t", "digest": "sha256:" + "a" * 64,
                                "media_type": "m", "platforms": [], "manifests": [], "blobs": []}]),
    lambda d: d.update(images=[{"registry": "r", "repository": "../x", "tag": "t", "digest": "sha256:" + "a" * 64,
                                "media_type": "m", "platforms": [], "manifests": [], "blobs": []}]),
    lambda d: d.update(parity={"k": 1}),
    lambda d: d.update(chunks="nope"),
    lambda d: d.update(version=1.0),  # a number that is not an integer
    lambda d: d.update({"x-extension": 1}),  # a member this reader does not implement (section 6)
    lambda d: d["stream"].update(compression_level="high"),
    lambda d: d["stream"].update(compression_level=99),
    lambda d: d.update(created="2026-11-28T10:00:00+00:00"),
    lambda d: d.update(images=[{"registry": "r", "repository": "x", "tag": "t", "digest": "sha256:" + "a" * 64,
                                "media_type": "m", "platforms": ["linux"], "manifests": [], "blobs": []}]),
    # media types: no control character (a line break would reach a terminal, a log or a header)
    lambda d: d["blobs"][0].update(media_type="application/x\r\nX-Injected: 1"),
    lambda d: d["blobs"][0].update(media_type="a" * 256),
    lambda d: d.update(images=[{"registry": "r", "repository": "x", "tag": "t", "digest": "sha256:" + "a" * 64,
                                "media_type": "m\n", "platforms": [], "manifests": [], "blobs": []}]),
    # the bundle id names import journals and is a delta's base id: the same grammar as those
    lambda d: d.update(bundle_id="../../x"),
    lambda d: d.update(bundle_id=""),
    lambda d: d.update(bundle_id="b" * 129),
    lambda d: d.update(bundle_id="b-1\x1b[2J"),
])
def test_inconsistent_manifests_refused(tmp_path: Path, mutate: Any) -> None:
    doc = good_manifest(tmp_path)
    mutate(doc)
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


def test_a_key_twice_in_one_object_is_refused(tmp_path: Path) -> None:
    """Parsers differ on which of two equal keys wins: the signed bytes must mean one thing to every reader."""
    data = json.dumps(good_manifest(tmp_path)).encode()
    assert BundleManifest.parse(data)
    twice = data.replace(b'"chunk_size":', b'"chunk_size": 999, "chunk_size":', 1)
    with pytest.raises(ManifestError, match="'chunk_size' twice"):
        BundleManifest.parse(twice)


def test_media_types_registries_take_are_read(tmp_path: Path) -> None:
    """Empty and non-ASCII media types: distribution takes them, and bundles of earlier versions hold them."""
    doc = with_referrer(tmp_path)
    doc["blobs"][0]["media_type"] = ""
    doc["blobs"][1]["media_type"] = "application/vnd.example.t\u00e4r; charset=binary"
    doc["referrers"][0]["artifact_type"] = ""
    m = BundleManifest.parse(json.dumps(doc).encode())
    assert m.blobs[0].media_type == "" and m.referrers[0].artifact_type == ""


def test_manifest_json_is_utf8_without_a_byte_order_mark(tmp_path: Path) -> None:
    """json.loads(bytes) takes UTF-16 and UTF-32 as well: another reader would refuse what airgap took."""
    text = json.dumps(good_manifest(tmp_path))
    assert BundleManifest.parse(text.encode())
    for data in (text.encode("utf-16"), text.encode("utf-32-le"), b"\xef\xbb\xbf" + text.encode()):
        with pytest.raises(ManifestError, match="not UTF-8 text|not valid JSON"):
            BundleManifest.parse(data)


def with_referrer(tmp_path: Path) -> dict[str, Any]:
    """A good manifest whose second blob is a referrer of the first (an image manifest)."""
    doc = good_manifest(tmp_path)
    subject, other = (b["digest"] for b in doc["blobs"])
    doc["images"] = [{"registry": "r.example", "repository": "team/app", "tag": "v1", "digest": subject,
                      "media_type": "application/vnd.oci.image.manifest.v1+json", "platforms": [],
                      "manifests": [subject], "blobs": []}]
    doc["referrers"] = [{"repository": "team/app", "subject": subject, "digest": other,
                         "media_type": "application/vnd.oci.image.manifest.v1+json",
                         "artifact_type": "application/spdx+json", "tag": None, "manifests": [other], "blobs": []}]
    return doc


def test_referrers_parse_and_attach_to_their_image(tmp_path: Path) -> None:
    m = BundleManifest.parse(json.dumps(with_referrer(tmp_path)).encode())
    (r,) = m.referrers
    assert r.artifact_type == "application/spdx+json" and m.referrers_of(m.images[0]) == [r]
    assert BundleManifest.parse(m.to_json()).referrers == m.referrers


@pytest.mark.parametrize("mutate", [
    lambda d: d["referrers"][0].update(subject="sha256:" + "b" * 64),  # not a manifest of an image
    lambda d: d["referrers"][0].update(repository="other/repo"),
    lambda d: d["referrers"][0].update(repository="../x"),
    lambda d: d["referrers"][0].update(manifests=["sha256:" + "c" * 64]),  # not its own digest last
    lambda d: d["referrers"][0].update(blobs=["sha256:" + "c" * 64]),  # not in the stream
    lambda d: d["referrers"][0].update(tag="latest"),  # a tag that does not name the subject
    lambda d: d["referrers"][0].update(tag="../x"),
    lambda d: d["referrers"][0].update(artifact_type=7),
    lambda d: d["referrers"][0].update(artifact_type="application/x\nb"),
    lambda d: d["referrers"][0].update(media_type="application/\x00"),
    lambda d: d["referrers"][0].update(subject=d["referrers"][0]["digest"]),
    lambda d: d["referrers"].append(d["referrers"][0]),
    lambda d: d.update(referrers={"a": 1}),
    lambda d: d.update(referrers=[7]),
])
def test_bad_referrers_refused(tmp_path: Path, mutate: Any) -> None:
    doc = with_referrer(tmp_path)
    mutate(doc)
    with pytest.raises(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


def test_deep_nesting_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        BundleManifest.parse(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ManifestError):
        BundleManifest.parse(b"\xff\xfe garbage")
    with pytest.raises(ManifestError):
        BundleManifest.parse(b'"just a string"')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.sampled_from(["format", "version", "stream", "chunks", "blobs", "files", "images",
                                        "chunk_size", "bundle_id", "parity", "referrers"]), json_values,
                       max_size=10))
@settings(max_examples=200, deadline=None)
def test_parser_never_crashes(doc: dict[str, Any]) -> None:
    doc.setdefault("format", "airgap-bundle")
    with contextlib.suppress(ManifestError):
        BundleManifest.parse(json.dumps(doc).encode())


@given(st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_good_manifest_never_crashes(tmp_path: Path, data: Any) -> None:
    raw = bytearray(json.dumps(good_manifest(tmp_path)).encode())
    for _ in range(data.draw(st.integers(1, 5))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ManifestError):
        BundleManifest.parse(bytes(raw))
