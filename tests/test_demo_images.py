"""The demo image builder writes a valid, deterministic OCI image layout.

Validity is checked with skopeo (1.9): it reads every manifest back byte for byte and copies
every image with ``--preserve-digests`` (skopeo verifies each blob's digest while copying).

skopeo 1.9 quirks these tests work around:

* ``oci:DIR:NAME`` splits at the first colon, so ``oci:/x/layout:demo/base-a:1.0`` names
  ``demo/base-a:1.0`` in ``/x/layout`` (the directory itself must not contain a colon).
* Its oci transport looks a name up only among ``index.json`` entries whose media type is an
  OCI manifest or index: Docker-typed entries (``demo/docker``, ``demo/dockerlist``) give
  "no descriptor found for reference".  They are reached through a one-entry "view" layout
  (an ``index.json`` holding only that descriptor, so no name is needed) whose blobs are the
  demo layout's, via ``--shared-blob-dir``/``--src-shared-blob-dir``.
* An ``oci:`` destination cannot hold a Docker manifest list without converting it to an OCI
  index, so Docker images are copied to a ``dir:`` destination instead.
* Without ``--preserve-digests`` an ``oci:`` destination gzips uncompressed layers (so the
  manifest digest changes); with it skopeo fails rather than change a digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from scripts.demo_images import (
    DEMO_IMAGE_NAMES,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    REF_NAME_ANNOTATION,
    DemoImage,
    build_demo_layout,
)

ROOT = Path(__file__).resolve().parents[1]

LARGE = 2 * 1024 * 1024
SKOPEO_TIMEOUT = 120
OCI_TOP_TYPES = {OCI_MANIFEST, OCI_INDEX}
LIST_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


# ------------------------------------------------------------------------------ helpers


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=SKOPEO_TIMEOUT, check=False)
    assert proc.returncode == 0, (
        f"skopeo {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}"
    )
    return proc.stdout


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexpart = digest.partition(":")
    assert algo == "sha256"
    return layout / "blobs" / "sha256" / hexpart


def read_blob(layout: Path, digest: str) -> bytes:
    return blob_path(layout, digest).read_bytes()


def read_json(layout: Path, digest: str) -> Any:
    return json.loads(read_blob(layout, digest))


def index_entries(layout: Path) -> dict[str, dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    return {d["annotations"][REF_NAME_ANNOTATION]: d for d in index["manifests"]}


def make_view(view: Path, descriptors: list[dict[str, Any]]) -> Path:
    """A layout with only ``descriptors`` in its index.json and no blobs of its own."""
    view.mkdir(parents=True)
    (view / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (view / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": descriptors}))
    return view


def oci_ref(layout: Path, name: str = "") -> str:
    assert ":" not in str(layout), "skopeo's oci: transport splits at the first colon"
    return f"oci:{layout}:{name}" if name else f"oci:{layout}"


def inspect_raw_top(layout: Path, name: str, tmp: Path) -> bytes:
    """``skopeo inspect --raw`` of a top-level image, by name if skopeo can look it up."""
    desc = index_entries(layout)[name]
    if desc["mediaType"] in OCI_TOP_TYPES:
        return skopeo("inspect", "--raw", oci_ref(layout, name))
    view = make_view(tmp / f"view-{sha256_hex(name.encode())[:12]}", [desc])
    return skopeo("inspect", "--raw", "--shared-blob-dir", str(layout / "blobs"), oci_ref(view))


def walk_descriptors(layout: Path, desc: dict[str, Any]) -> list[dict[str, Any]]:
    """``desc`` and every descriptor reachable from it."""
    found = [desc]
    if desc["mediaType"] in LIST_TYPES:
        for child in read_json(layout, desc["digest"])["manifests"]:
            found += walk_descriptors(layout, child)
    elif desc["mediaType"] in {OCI_MANIFEST, DOCKER_MANIFEST}:
        manifest = read_json(layout, desc["digest"])
        found.append(manifest["config"])
        found += manifest["layers"]
    return found


def image_manifests(layout: Path, digest: str, media_type: str) -> list[dict[str, Any]]:
    """The single-image manifests of a top-level image (its children if it is a list)."""
    doc = read_json(layout, digest)
    if media_type in LIST_TYPES:
        return [read_json(layout, child["digest"]) for child in doc["manifests"]]
    return [doc]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoImage]]:
    layout = tmp_path_factory.mktemp("demo") / "layout"
    images = build_demo_layout(layout, large_layer_size=LARGE)
    return layout, images


@pytest.fixture(scope="module")
def layout(built: tuple[Path, list[DemoImage]]) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def images(built: tuple[Path, list[DemoImage]]) -> dict[str, DemoImage]:
    return {image.name: image for image in built[1]}


# ------------------------------------------------------------------------ layout structure


def test_layout_files_and_index(layout: Path, images: dict[str, DemoImage]) -> None:
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert list(images) == DEMO_IMAGE_NAMES
    entries = index_entries(layout)
    assert list(entries) == DEMO_IMAGE_NAMES
    for name, image in images.items():
        assert entries[name]["digest"] == image.digest
        assert entries[name]["mediaType"] == image.media_type
        assert image.description
    expected_types = {
        "demo/base-a:1.0": OCI_MANIFEST,
        "demo/base-b:1.0": OCI_MANIFEST,
        "demo/multi:1.0": OCI_INDEX,
        "demo/docker:1.0": DOCKER_MANIFEST,
        "demo/dockerlist:1.0": DOCKER_MANIFEST_LIST,
        "demo/many-layers:1.0": OCI_MANIFEST,
        "demo/uncompressed:1.0": OCI_MANIFEST,
        "demo/large:1.0": OCI_MANIFEST,
    }
    assert {n: i.media_type for n, i in images.items()} == expected_types


def test_blobs_are_content_addressed_and_sizes_match(layout: Path) -> None:
    blob_dir = layout / "blobs" / "sha256"
    files = {p.name: p for p in blob_dir.iterdir()}
    assert not [n for n in files if n.startswith(".")], "temporary files left behind"
    for name, path in files.items():
        assert sha256_hex(path.read_bytes()) == name, f"blob {name} does not match its name"

    referenced: set[str] = set()
    for desc in index_entries(layout).values():
        for d in walk_descriptors(layout, desc):
            path = blob_path(layout, d["digest"])
            assert path.is_file(), f"missing blob {d['digest']}"
            assert d["size"] == path.stat().st_size, f"size of {d['digest']} is wrong"
            referenced.add(path.name)
    assert referenced == set(files), "unreferenced blobs in the layout"


def test_json_documents_are_compact(layout: Path) -> None:
    for desc in index_entries(layout).values():
        for d in walk_descriptors(layout, desc):
            if "json" in d["mediaType"]:
                raw = read_blob(layout, d["digest"])
                assert raw == json.dumps(json.loads(raw), separators=(",", ":")).encode()
                if d["mediaType"] in {OCI_MANIFEST, DOCKER_MANIFEST, *LIST_TYPES}:
                    assert json.loads(raw)["mediaType"] == d["mediaType"]


def test_configs_match_layers(layout: Path, images: dict[str, DemoImage]) -> None:
    for image in images.values():
        for manifest in image_manifests(layout, image.digest, image.media_type):
            docker = manifest["mediaType"] == DOCKER_MANIFEST
            assert manifest["config"]["mediaType"] == (DOCKER_CONFIG if docker else OCI_CONFIG)
            config = read_json(layout, manifest["config"]["digest"])
            assert config["os"] == "linux" and config["architecture"] in {"amd64", "arm64"}
            assert config["rootfs"]["type"] == "layers"
            diff_ids = config["rootfs"]["diff_ids"]
            assert len(diff_ids) == len(manifest["layers"]) > 0
            for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
                data = read_blob(layout, layer["digest"])
                if docker:
                    assert layer["mediaType"] == DOCKER_LAYER_GZIP
                if layer["mediaType"] in {OCI_LAYER_GZIP, DOCKER_LAYER_GZIP}:
                    data = gzip.decompress(data)
                else:
                    assert layer["mediaType"] == OCI_LAYER_TAR
                assert "sha256:" + sha256_hex(data) == diff_id
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    members = tar.getmembers()
                assert members and all(m.mtime == members[0].mtime and m.uid == 0 for m in members)


def test_platforms_match_configs(layout: Path, images: dict[str, DemoImage]) -> None:
    for name, variant in (("demo/multi:1.0", None), ("demo/dockerlist:1.0", "v8")):
        index = read_json(layout, images[name].digest)
        platforms = []
        for child in index["manifests"]:
            config = read_json(layout, read_json(layout, child["digest"])["config"]["digest"])
            assert child["platform"]["architecture"] == config["architecture"]
            assert child["platform"]["os"] == config["os"]
            platforms.append(child["platform"])
        assert [p["architecture"] for p in platforms] == ["amd64", "arm64"]
        assert platforms[1].get("variant") == variant
        assert "variant" not in platforms[0]
        assert len({c["digest"] for c in index["manifests"]}) == 2


# ------------------------------------------------------------------------------ contents


def test_base_images_share_base_layer(layout: Path, images: dict[str, DemoImage]) -> None:
    a = read_json(layout, images["demo/base-a:1.0"].digest)
    b = read_json(layout, images["demo/base-b:1.0"].digest)
    assert a["layers"][0] == b["layers"][0]
    assert a["layers"][1]["digest"] != b["layers"][1]["digest"]
    assert a["config"]["digest"] != b["config"]["digest"]


def test_many_layers_has_twelve_distinct_layers(layout: Path, images: dict[str, DemoImage]) -> None:
    manifest = read_json(layout, images["demo/many-layers:1.0"].digest)
    assert len(manifest["layers"]) == 12
    assert len({layer["digest"] for layer in manifest["layers"]}) == 12


def test_uncompressed_and_large_layers(layout: Path, images: dict[str, DemoImage]) -> None:
    text = read_json(layout, images["demo/uncompressed:1.0"].digest)["layers"]
    assert [layer["mediaType"] for layer in text] == [OCI_LAYER_TAR]
    data = read_blob(layout, text[0]["digest"])
    assert len(gzip.compress(data)) < len(data) // 3, "text layer should be compressible"

    large = read_json(layout, images["demo/large:1.0"].digest)["layers"]
    assert [layer["mediaType"] for layer in large] == [OCI_LAYER_TAR]
    assert large[0]["size"] == LARGE  # a multiple of 512: the blob is exactly that size


def test_build_is_deterministic(tmp_path: Path, layout: Path, images: dict[str, DemoImage]) -> None:
    again = build_demo_layout(tmp_path / "again", large_layer_size=LARGE)
    assert {i.name: i for i in again} == images
    for name in ("index.json", "oci-layout"):
        assert (tmp_path / "again" / name).read_bytes() == (layout / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "again" / "blobs" / "sha256").iterdir()) == sorted(
        p.name for p in (layout / "blobs" / "sha256").iterdir()
    )
    # rebuilding over an existing layout changes nothing
    assert build_demo_layout(tmp_path / "again", large_layer_size=LARGE) == again


def test_seed_and_size_change_digests(tmp_path: Path, images: dict[str, DemoImage]) -> None:
    other = {i.name: i.digest for i in build_demo_layout(tmp_path / "s1", large_layer_size=LARGE, seed=1)}
    assert all(other[n] != images[n].digest for n in DEMO_IMAGE_NAMES)
    bigger = {i.name: i.digest for i in build_demo_layout(tmp_path / "s2", large_layer_size=LARGE + 512)}
    assert bigger["demo/large:1.0"] != images["demo/large:1.0"].digest
    assert all(bigger[n] == images[n].digest for n in DEMO_IMAGE_NAMES if n != "demo/large:1.0")


@pytest.mark.parametrize(
    "size",
    [64 * 1024 * 1024, pytest.param(300 * 1024 * 1024, marks=pytest.mark.slow, id="300MiB")],
    ids=lambda size: f"{size >> 20}MiB",
)
def test_large_layer_is_streamed(tmp_path: Path, size: int) -> None:
    """Peak RSS stays flat (~20 MiB, the interpreter's own) however large the layer is."""
    code = (
        "import sys; from pathlib import Path; from scripts.demo_images import build_demo_layout;"
        f"build_demo_layout(Path(sys.argv[1]), large_layer_size={size});"
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so it would report pytest's own
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    peak_kib = int(proc.stdout.strip())
    assert peak_kib < 48 * 1024, f"peak RSS {peak_kib} KiB: the large layer is not streamed"
    big = max((tmp_path / "big" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    assert big.stat().st_size == size


def test_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.demo_images",
            str(tmp_path / "cli"),
            "--large-size",
            "4096",
            "--seed",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    expected = build_demo_layout(tmp_path / "api", large_layer_size=4096, seed=3)
    assert rows == [[i.name, i.media_type, i.digest] for i in expected]


# -------------------------------------------------------------------------------- skopeo


@needs_skopeo
@pytest.mark.parametrize("name", DEMO_IMAGE_NAMES)
def test_skopeo_inspect_raw_matches_digest(
    name: str, layout: Path, images: dict[str, DemoImage], tmp_path: Path
) -> None:
    raw = inspect_raw_top(layout, name, tmp_path)
    assert "sha256:" + sha256_hex(raw) == images[name].digest
    assert raw == read_blob(layout, images[name].digest)


@needs_skopeo
def test_skopeo_reference_with_colon_in_name(layout: Path, images: dict[str, DemoImage]) -> None:
    # "oci:DIR:demo/base-a:1.0": skopeo splits at the first colon only.
    raw = skopeo("inspect", "--raw", f"oci:{layout}:demo/base-a:1.0")
    assert "sha256:" + sha256_hex(raw) == images["demo/base-a:1.0"].digest
    info = json.loads(skopeo("inspect", f"oci:{layout}:demo/base-b:1.0"))
    assert info["Digest"] == images["demo/base-b:1.0"].digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"


@needs_skopeo
@pytest.mark.parametrize("name", ["demo/multi:1.0", "demo/dockerlist:1.0"])
def test_skopeo_inspect_raw_children(
    name: str, layout: Path, images: dict[str, DemoImage], tmp_path: Path
) -> None:
    index = read_json(layout, images[name].digest)
    blobs = str(layout / "blobs")
    for i, child in enumerate(index["manifests"]):
        if child["mediaType"] in OCI_TOP_TYPES:
            named = dict(child, annotations={REF_NAME_ANNOTATION: f"child-{i}"})
            view = make_view(tmp_path / f"view-{i}", [named])
            raw = skopeo("inspect", "--raw", "--shared-blob-dir", blobs, oci_ref(view, f"child-{i}"))
        else:
            view = make_view(tmp_path / f"view-{i}", [child])
            raw = skopeo("inspect", "--raw", "--shared-blob-dir", blobs, oci_ref(view))
        assert "sha256:" + sha256_hex(raw) == child["digest"]
        assert len(raw) == child["size"]
        assert json.loads(raw)["mediaType"] == child["mediaType"]


@needs_skopeo
@pytest.mark.parametrize("name", DEMO_IMAGE_NAMES)
def test_skopeo_copy_all_keeps_digest(
    name: str, layout: Path, images: dict[str, DemoImage], tmp_path: Path
) -> None:
    image = images[name]
    desc = index_entries(layout)[name]
    children = (
        [c["digest"] for c in read_json(layout, image.digest)["manifests"]]
        if image.media_type in LIST_TYPES
        else []
    )
    if image.media_type in OCI_TOP_TYPES:
        out = tmp_path / "out"
        skopeo("copy", "-q", "--all", "--preserve-digests", oci_ref(layout, name), oci_ref(out, name))
        raw = skopeo("inspect", "--raw", oci_ref(out, name))
        assert "sha256:" + sha256_hex(raw) == image.digest
        assert index_entries(out)[name]["digest"] == image.digest
        for digest in children:
            assert sha256_hex(read_blob(out, digest)) == digest.removeprefix("sha256:")
        copied = {p.name for p in (out / "blobs" / "sha256").iterdir()}
        wanted = {blob_path(layout, d["digest"]).name for d in walk_descriptors(layout, desc)}
        assert copied == wanted
    else:
        # Docker-typed: not reachable by name in skopeo 1.9's oci transport, and an oci:
        # destination would convert a Docker list; copy from a one-entry view to dir:.
        view = make_view(tmp_path / "view", [desc])
        out = tmp_path / "out-dir"
        skopeo(
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            "--src-shared-blob-dir",
            str(layout / "blobs"),
            oci_ref(view),
            f"dir:{out}",
        )
        assert sha256_hex((out / "manifest.json").read_bytes()) == image.digest.removeprefix("sha256:")
        for digest in children:
            hexpart = digest.removeprefix("sha256:")
            assert sha256_hex((out / f"{hexpart}.manifest.json").read_bytes()) == hexpart
        for d in walk_descriptors(layout, desc):
            if d["mediaType"] not in {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST}:
                copied_blob = out / d["digest"].removeprefix("sha256:")
                assert copied_blob.read_bytes() == read_blob(layout, d["digest"])


@needs_skopeo
def test_skopeo_detects_corrupted_blob(layout: Path, images: dict[str, DemoImage], tmp_path: Path) -> None:
    """The copy checks above have teeth: skopeo verifies blob digests while copying."""
    broken = tmp_path / "broken"
    shutil.copytree(layout, broken)
    layer = read_json(broken, images["demo/base-a:1.0"].digest)["layers"][0]
    path = blob_path(broken, layer["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--all",
            "--preserve-digests",
            oci_ref(broken, "demo/base-a:1.0"),
            oci_ref(tmp_path / "out", "x"),
        ],
        capture_output=True,
        timeout=SKOPEO_TIMEOUT,
        check=False,
    )
    assert proc.returncode != 0
    assert b"did not match" in proc.stderr, proc.stderr.decode(errors="replace")
