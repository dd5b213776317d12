"""Build deterministic demo container images into an OCI image layout directory.

The layout written to ``dest`` is a plain OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/<hex>``) holding the images in :data:`DEMO_IMAGE_NAMES`: OCI manifests that
share a base layer, an OCI index, a Docker schema2 manifest, a Docker manifest list, an image
with many layers, an image with an uncompressed layer and an image with one large layer.

Everything is derived from ``seed`` (and ``large_layer_size``) only: the same arguments give a
byte-identical layout, so digests are stable across runs and machines.  Pseudo-random data
comes from SHAKE-256 in counter mode, tar headers have fixed owner, mode and mtime, gzip
streams have ``mtime=0``, no file name and a fixed level, and JSON documents are compact with
a fixed key order (configs with sorted keys).  Gzip output depends on the zlib implementation
in use; the stock zlib everyone ships produces identical bytes.

The large layer is written streaming (hashing while writing to a temporary file that is then
renamed to its digest), so memory stays flat whatever ``large_layer_size`` is.  It is stored
as an *uncompressed* tar (``application/vnd.oci.image.layer.v1.tar``): its payload is
incompressible, so gzip would only cost CPU time (zlib manages ~40 MiB/s on random data) and
make the blob slightly bigger, and an uncompressed blob has an exactly predictable size that
does not depend on the zlib build.  Its blob size is ``large_layer_size`` rounded up to a
multiple of 512 (and at least 1536): the tar holds one file of ``size - 1536`` bytes.

Usage::

    python -m scripts.demo_images DEST [--large-size BYTES] [--seed N]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# --------------------------------------------------------------------------- media types

OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# ------------------------------------------------------------------------------ constants

#: Fixed modification time for tar members and the config "created" field (2023-11-14T22:13:20Z).
FIXED_MTIME = 1_700_000_000
FIXED_CREATED = "2023-11-14T22:13:20Z"
GZIP_LEVEL = 6
BLOCK = 512
CHUNK = 1024 * 1024  # streaming chunk for the large layer
DEFAULT_LARGE_LAYER_SIZE = 4 * 1024 * 1024

NAME_BASE_A = "demo/base-a:1.0"
NAME_BASE_B = "demo/base-b:1.0"
NAME_MULTI = "demo/multi:1.0"
NAME_DOCKER = "demo/docker:1.0"
NAME_DOCKERLIST = "demo/dockerlist:1.0"
NAME_MANY_LAYERS = "demo/many-layers:1.0"
NAME_UNCOMPRESSED = "demo/uncompressed:1.0"
NAME_LARGE = "demo/large:1.0"

#: Every image :func:`build_demo_layout` writes, in the order of ``index.json``.
DEMO_IMAGE_NAMES: list[str] = [
    NAME_BASE_A,
    NAME_BASE_B,
    NAME_MULTI,
    NAME_DOCKER,
    NAME_DOCKERLIST,
    NAME_MANY_LAYERS,
    NAME_UNCOMPRESSED,
    NAME_LARGE,
]

_WORDS: list[str] = (  # noqa: SIM905 - a word list reads better as one string
    "air gap bundle chunk digest layer manifest index registry blob config platform tag "
    "signature resume transfer verify mirror offline archive stream hash image container "
    "oci docker schema descriptor media type annotation rootfs tar gzip"
).split()


# ---------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class DemoImage:
    """One image of the demo layout, as listed in its ``index.json``."""

    name: str  # ref name as in the layout, e.g. "demo/base-a:1.0"
    digest: str  # "sha256:..." of the top-level manifest/index bytes
    media_type: str  # top-level media type
    description: str


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int

    def descriptor(self, media_type: str, **extra: Any) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": media_type, "digest": self.digest, "size": self.size}
        desc.update(extra)
        return desc


@dataclass(frozen=True)
class _Layer:
    blob: _Blob
    diff_id: str  # sha256 of the uncompressed tar
    media_type: str


@dataclass(frozen=True)
class _File:
    path: str
    data: bytes
    mode: int = 0o644


# ------------------------------------------------------------------------ deterministic data


def pseudo_random_chunks(seed: int, label: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield ``size`` pseudo-random bytes in chunks of at most ``chunk`` bytes.

    SHAKE-256 in counter mode: chunk ``i`` is the first bytes of
    ``SHAKE256(b"airgap-demo/" + label + "/" + seed + "/" + i)``.  Standardised, so the
    stream is the same on every machine and every Python version.
    """
    counter = 0
    remaining = size
    while remaining > 0:
        n = min(chunk, remaining)
        key = f"airgap-demo/{label}/{seed}/{counter}".encode()
        yield hashlib.shake_256(key).digest(n)
        remaining -= n
        counter += 1


def pseudo_random_bytes(seed: int, label: str, size: int) -> bytes:
    return b"".join(pseudo_random_chunks(seed, label, size))


def pseudo_text(seed: int, label: str, n_words: int, per_line: int = 12) -> bytes:
    """Compressible text: ``n_words`` words from a small vocabulary, chosen pseudo-randomly."""
    raw = pseudo_random_bytes(seed, label, n_words)
    words = [_WORDS[b % len(_WORDS)] for b in raw]
    lines = [" ".join(words[i : i + per_line]) for i in range(0, len(words), per_line)]
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------------------ tar writing


def _tar_header(path: str, size: int, mode: int, *, is_dir: bool = False) -> bytes:
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = 0
    info.gid = 0
    info.uname = "root"
    info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


_TAR_END = b"\0" * (2 * BLOCK)


def _parent_dirs(paths: Sequence[str]) -> list[str]:
    dirs: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def make_tar(files: Sequence[_File]) -> bytes:
    """A deterministic ustar archive of ``files`` (parent directories added, sorted by path).

    Written by hand rather than with ``tarfile.open`` so there is no padding to a 10 KiB
    record: the archive ends right after its two zero blocks.
    """
    entries: list[tuple[str, _File | None]] = [(d + "/", None) for d in _parent_dirs([f.path for f in files])]
    entries += [(f.path, f) for f in files]
    out = io.BytesIO()
    for path, f in sorted(entries, key=lambda e: e[0]):
        if f is None:
            out.write(_tar_header(path, 0, 0o755, is_dir=True))
        else:
            out.write(_tar_header(path, len(f.data), f.mode))
            out.write(f.data)
            out.write(_padding(len(f.data)))
    out.write(_TAR_END)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with no file name, ``mtime=0`` and a fixed level: same input, same bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False).encode()


# ------------------------------------------------------------------------------- blob store


@dataclass
class _BlobStore:
    """Writes blobs under ``root/blobs/sha256``, each once, atomically (temp file + rename)."""

    root: Path
    written: dict[str, int] = field(default_factory=dict)

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    def path_of(self, digest: str) -> Path:
        algo, _, hexpart = digest.partition(":")
        assert algo == "sha256", digest
        return self.blob_dir / hexpart

    def put(self, data: bytes) -> _Blob:
        digest = sha256_digest(data)
        blob = _Blob(digest, len(data))
        if digest in self.written:
            return blob
        target = self.path_of(digest)
        if not (target.is_file() and target.stat().st_size == len(data)):
            self._write_atomic(target, lambda fh: fh.write(data))
        self.written[digest] = len(data)
        return blob

    def put_stream(self, chunks: Iterator[bytes]) -> _Blob:
        """Write a blob from ``chunks`` without holding it in memory; hashes while writing."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=self.blob_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
                    size += len(chunk)
            digest = "sha256:" + hasher.hexdigest()
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path_of(digest))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written[digest] = size
        return _Blob(digest, size)

    def _write_atomic(self, target: Path, write: Callable[[BinaryIO], object]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# ----------------------------------------------------------------------------- image parts


def _gzip_layer(store: _BlobStore, files: Sequence[_File], media_type: str = OCI_LAYER_GZIP) -> _Layer:
    tar = make_tar(files)
    return _Layer(store.put(gzip_bytes(tar)), sha256_digest(tar), media_type)


def _tar_layer(store: _BlobStore, files: Sequence[_File]) -> _Layer:
    tar = make_tar(files)
    blob = store.put(tar)
    return _Layer(blob, blob.digest, OCI_LAYER_TAR)


def _large_tar_chunks(seed: int, size: int) -> Iterator[bytes]:
    """An uncompressed tar of one pseudo-random file; the archive is ``ceil512(max(size, 1536))``."""
    payload = max(0, size - 3 * BLOCK)
    yield _tar_header("data/large.bin", payload, 0o644)
    yield from pseudo_random_chunks(seed, "large", payload)
    yield _padding(payload) + _TAR_END


def _large_layer(store: _BlobStore, seed: int, size: int) -> _Layer:
    blob = store.put_stream(_large_tar_chunks(seed, size))
    return _Layer(blob, blob.digest, OCI_LAYER_TAR)


def _config(
    layers: Sequence[_Layer],
    *,
    arch: str,
    variant: str | None = None,
    cmd: Sequence[str],
    labels: dict[str, str],
    comment: str,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "created": FIXED_CREATED,
        "author": "airgap demo",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(cmd),
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": FIXED_CREATED, "created_by": f"airgap-demo: {comment} layer {i}"}
            for i in range(len(layers))
        ],
    }
    if variant is not None:
        cfg["variant"] = variant
    return cfg


def _image_manifest(
    store: _BlobStore,
    layers: Sequence[_Layer],
    config: dict[str, Any],
    *,
    docker: bool = False,
) -> tuple[_Blob, bytes]:
    config_blob = store.put(canonical_json(config, sort_keys=True))
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": config_blob.descriptor(DOCKER_CONFIG if docker else OCI_CONFIG),
        "layers": [layer.blob.descriptor(layer.media_type) for layer in layers],
    }
    raw = canonical_json(manifest)
    return store.put(raw), raw


def _platform(arch: str, variant: str | None = None) -> dict[str, str]:
    platform = {"architecture": arch, "os": "linux"}
    if variant is not None:
        platform["variant"] = variant
    return platform


def _list(
    store: _BlobStore, children: Sequence[tuple[_Blob, dict[str, str]]], *, docker: bool = False
) -> _Blob:
    child_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    index = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST if docker else OCI_INDEX,
        "manifests": [blob.descriptor(child_type, platform=platform) for blob, platform in children],
    }
    return store.put(canonical_json(index))


# ---------------------------------------------------------------------------------- builder


def _base_files(seed: int) -> list[_File]:
    return [
        _File("etc/os-release", b'NAME="airgap demo"\nID=airgap-demo\nVERSION_ID="1.0"\n'),
        _File("etc/hostname", b"airgap-demo\n"),
        _File("etc/motd", b"Welcome to the airgap demo image.\n"),
        _File("usr/bin/hello", b'#!/bin/sh\necho "hello from the airgap demo"\n', 0o755),
        _File("usr/share/demo/seed.bin", pseudo_random_bytes(seed, "base-seed", 256)),
        _File("usr/share/demo/README", pseudo_text(seed, "base-readme", 120)),
    ]


def build_demo_layout(
    dest: Path, *, large_layer_size: int = DEFAULT_LARGE_LAYER_SIZE, seed: int = 0
) -> list[DemoImage]:
    """Write the demo images into the OCI image layout at ``dest`` and return them.

    ``dest`` is created if needed.  Blobs already present are kept (blobs are content
    addressed); ``oci-layout`` and ``index.json`` are rewritten to list exactly the demo images.
    Same ``seed`` and ``large_layer_size`` give a byte-identical layout.
    """
    if large_layer_size < 0:
        raise ValueError("large_layer_size must be >= 0")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    store = _BlobStore(dest)
    store.blob_dir.mkdir(parents=True, exist_ok=True)

    images: list[DemoImage] = []
    top: list[tuple[DemoImage, int]] = []

    def add(name: str, blob: _Blob, media_type: str, description: str) -> None:
        image = DemoImage(name=name, digest=blob.digest, media_type=media_type, description=description)
        images.append(image)
        top.append((image, blob.size))

    base = _gzip_layer(store, _base_files(seed))

    # 1. two OCI images sharing the base layer
    for name, suffix in ((NAME_BASE_A, "a"), (NAME_BASE_B, "b")):
        files = [
            _File(f"app/{suffix}/app.txt", pseudo_text(seed, f"base-{suffix}-app", 200)),
            _File(f"app/{suffix}/data.bin", pseudo_random_bytes(seed, f"base-{suffix}-data", 4096)),
        ]
        if suffix == "b":  # an OCI whiteout: image b deletes /etc/motd from the base layer
            files.append(_File("etc/.wh.motd", b""))
        top_layer = _gzip_layer(store, files)
        cfg = _config(
            [base, top_layer],
            arch="amd64",
            cmd=["/usr/bin/hello"],
            labels={"demo.image": f"base-{suffix}"},
            comment=f"base-{suffix}",
        )
        blob, _ = _image_manifest(store, [base, top_layer], cfg)
        add(name, blob, OCI_MANIFEST, f"OCI manifest, base layer shared with the other base image ({suffix})")

    # 2. OCI index over linux/amd64 and linux/arm64
    children: list[tuple[_Blob, dict[str, str]]] = []
    for arch in ("amd64", "arm64"):
        top_layer = _gzip_layer(
            store,
            [
                _File("usr/bin/multi-app", pseudo_random_bytes(seed, f"multi-{arch}-bin", 2048), 0o755),
                _File("etc/multi-arch", f"{arch}\n".encode()),
            ],
        )
        cfg = _config(
            [base, top_layer],
            arch=arch,
            cmd=["/usr/bin/multi-app"],
            labels={"demo.image": "multi", "demo.arch": arch},
            comment=f"multi-{arch}",
        )
        blob, _ = _image_manifest(store, [base, top_layer], cfg)
        children.append((blob, _platform(arch)))
    add(NAME_MULTI, _list(store, children), OCI_INDEX, "OCI index: linux/amd64 and linux/arm64 manifests")

    # 3. Docker schema2 manifest; 4. Docker manifest list. They share a Docker base layer.
    docker_base = _gzip_layer(
        store,
        [
            _File("etc/os-release", b'NAME="airgap docker demo"\nID=airgap-docker-demo\n'),
            _File("usr/share/docker-demo/notes.txt", pseudo_text(seed, "docker-base", 150)),
        ],
        DOCKER_LAYER_GZIP,
    )
    docker_top = _gzip_layer(
        store,
        [_File("srv/docker/app.bin", pseudo_random_bytes(seed, "docker-top", 3000))],
        DOCKER_LAYER_GZIP,
    )
    cfg = _config(
        [docker_base, docker_top],
        arch="amd64",
        cmd=["/bin/sh"],
        labels={"demo.image": "docker"},
        comment="docker",
    )
    blob, _ = _image_manifest(store, [docker_base, docker_top], cfg, docker=True)
    add(NAME_DOCKER, blob, DOCKER_MANIFEST, "Docker v2 schema2 manifest")

    children = []
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        top_layer = _gzip_layer(
            store,
            [_File(f"srv/dockerlist/{arch}.bin", pseudo_random_bytes(seed, f"dockerlist-{arch}", 2500))],
            DOCKER_LAYER_GZIP,
        )
        cfg = _config(
            [docker_base, top_layer],
            arch=arch,
            variant=variant,
            cmd=["/bin/sh"],
            labels={"demo.image": "dockerlist", "demo.arch": arch},
            comment=f"dockerlist-{arch}",
        )
        blob, _ = _image_manifest(store, [docker_base, top_layer], cfg, docker=True)
        children.append((blob, _platform(arch, variant)))
    add(
        NAME_DOCKERLIST,
        _list(store, children, docker=True),
        DOCKER_MANIFEST_LIST,
        "Docker manifest list: linux/amd64 and linux/arm64/v8 schema2 manifests",
    )

    # 5. twelve tiny layers
    tiny = [
        _gzip_layer(store, [_File(f"layers/{i:02d}.txt", f"layer {i} seed {seed}\n".encode())])
        for i in range(12)
    ]
    cfg = _config(tiny, arch="amd64", cmd=["/bin/true"], labels={"demo.image": "many-layers"}, comment="tiny")
    blob, _ = _image_manifest(store, tiny, cfg)
    add(NAME_MANY_LAYERS, blob, OCI_MANIFEST, "OCI manifest with 12 tiny gzip layers")

    # 6. one uncompressed layer of compressible text
    text_layer = _tar_layer(
        store,
        [_File(f"usr/share/doc/text-{i}.txt", pseudo_text(seed, f"text-{i}", 3000)) for i in range(4)],
    )
    cfg = _config(
        [text_layer], arch="amd64", cmd=["/bin/cat"], labels={"demo.image": "uncompressed"}, comment="text"
    )
    blob, _ = _image_manifest(store, [text_layer], cfg)
    add(NAME_UNCOMPRESSED, blob, OCI_MANIFEST, "OCI manifest with one uncompressed tar layer")

    # 7. one large layer, written streaming
    large = _large_layer(store, seed, large_layer_size)
    cfg = _config([large], arch="amd64", cmd=["/bin/sh"], labels={"demo.image": "large"}, comment="large")
    blob, _ = _image_manifest(store, [large], cfg)
    add(
        NAME_LARGE,
        blob,
        OCI_MANIFEST,
        f"OCI manifest with one uncompressed {large.blob.size}-byte layer of pseudo-random data",
    )

    assert [i.name for i in images] == DEMO_IMAGE_NAMES
    _write_layout_files(dest, store, top)
    return images


def _write_layout_files(dest: Path, store: _BlobStore, top: Sequence[tuple[DemoImage, int]]) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": size,
                "annotations": {REF_NAME_ANNOTATION: image.name},
            }
            for image, size in top
        ],
    }
    layout = canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION})
    store._write_atomic(dest / "oci-layout", lambda fh: fh.write(layout))
    index_raw = canonical_json(index)
    store._write_atomic(dest / "index.json", lambda fh: fh.write(index_raw))


# -------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo_images",
        description="Build the airgap demo images into an OCI image layout directory.",
    )
    parser.add_argument("dest", type=Path, help="OCI layout directory to create or update")
    parser.add_argument(
        "--large-size",
        type=int,
        default=DEFAULT_LARGE_LAYER_SIZE,
        metavar="BYTES",
        help=f"size of the large layer blob (default {DEFAULT_LARGE_LAYER_SIZE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the generated data (default 0)")
    args = parser.parse_args(argv)
    if args.large_size < 0:
        parser.error("--large-size must be >= 0")
    images = build_demo_layout(args.dest, large_layer_size=args.large_size, seed=args.seed)
    width = max(len(i.name) for i in images)
    mwidth = max(len(i.media_type) for i in images)
    for image in images:
        print(f"{image.name:<{width}}  {image.media_type:<{mwidth}}  {image.digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
