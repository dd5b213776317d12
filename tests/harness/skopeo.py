"""skopeo as an independent reference client, plus a tiny OCI image builder for tests.

Every skopeo call gets its own trust policy (accept anything) and an empty auth file, so the
machine's ``/etc/containers/policy.json`` and any stored logins don't leak into tests. Credentials
are redacted from error messages.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "OCI_INDEX",
    "OCI_MANIFEST",
    "SKOPEO_BINARY",
    "OciImage",
    "SkopeoError",
    "make_oci_layout",
    "missing_tools",
    "skopeo_available",
    "skopeo_copy",
    "skopeo_digest",
    "skopeo_inspect_raw",
]

SKOPEO_BINARY = "skopeo"
DEFAULT_TIMEOUT = 60.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_TRANSPORTS = (
    "docker://",
    "oci:",
    "oci-archive:",
    "dir:",
    "docker-archive:",
    "docker-daemon:",
    "containers-storage:",
)


class SkopeoError(RuntimeError):
    """skopeo failed or timed out; the message holds the (redacted) command and its stderr."""

    def __init__(self, message: str, *, returncode: int | None, stderr: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def skopeo_available() -> bool:
    return shutil.which(SKOPEO_BINARY) is not None


def missing_tools() -> list[str]:
    """Names of the external binaries the harness needs and cannot find."""
    return [tool for tool in ("docker-registry", SKOPEO_BINARY) if shutil.which(tool) is None]


_support_dir: Path | None = None


def _support_files() -> tuple[Path, Path]:
    """(policy.json accepting everything, empty auth.json), created once per process."""
    global _support_dir
    if _support_dir is None or not _support_dir.exists():
        _support_dir = Path(tempfile.mkdtemp(prefix="airgap-skopeo-"))
        atexit.register(shutil.rmtree, _support_dir, True)
        (_support_dir / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (_support_dir / "auth.json").write_text(json.dumps({"auths": {}}))
    return _support_dir / "policy.json", _support_dir / "auth.json"


def _ref(ref: str) -> str:
    return ref if ref.startswith(_TRANSPORTS) else f"docker://{ref}"


def _run(args: list[str], *, timeout: float, secrets: Sequence[str | None] = ()) -> bytes:
    if not skopeo_available():
        raise SkopeoError("skopeo is not installed (apt-get install skopeo)", returncode=None, stderr="")
    policy, _ = _support_files()
    cmd = [SKOPEO_BINARY, "--policy", str(policy), "--command-timeout", f"{max(1, int(timeout))}s", *args]

    def redact(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE",)}
    for proxy_var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy_var, None)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, timeout=timeout + 5, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        stderr = redact((exc.stderr or b"").decode("utf-8", "replace"))
        raise SkopeoError(
            f"skopeo timed out after {timeout:.0f}s: {redact(' '.join(cmd))}\n{stderr}",
            returncode=None,
            stderr=stderr,
        ) from exc
    if proc.returncode != 0:
        stderr = redact(proc.stderr.decode("utf-8", "replace"))
        raise SkopeoError(
            f"skopeo exited with {proc.returncode}: {redact(' '.join(cmd))}\n{stderr}",
            returncode=proc.returncode,
            stderr=stderr,
        )
    return proc.stdout


def _password(creds: str | None) -> str | None:
    return creds.partition(":")[2] if creds else None


def skopeo_inspect_raw(
    ref: str,
    *,
    tls_verify: bool = False,
    creds: str | None = None,
    cert_dir: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """The manifest bytes exactly as served (``skopeo inspect --raw``).

    ``ref`` is ``host/name:tag`` (docker transport implied) or a full transport string (``oci:DIR:tag``).
    """
    _, authfile = _support_files()
    args = ["inspect", "--raw", "--retry-times", "0"]
    full = _ref(ref)
    if full.startswith("docker://"):
        args += ["--authfile", str(authfile), f"--tls-verify={'true' if tls_verify else 'false'}"]
        if creds is not None:
            args += ["--creds", creds]
        if cert_dir is not None:
            args += ["--cert-dir", str(cert_dir)]
    args.append(full)
    return _run(args, timeout=timeout, secrets=[creds, _password(creds)])


def skopeo_digest(
    ref: str,
    *,
    tls_verify: bool = False,
    creds: str | None = None,
    cert_dir: Path | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """``sha256:<hex>`` of the raw manifest bytes."""
    raw = skopeo_inspect_raw(ref, tls_verify=tls_verify, creds=creds, cert_dir=cert_dir, timeout=timeout)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def skopeo_copy(
    src: str,
    dst: str,
    *,
    all: bool = True,  # noqa: A002 - mirrors skopeo's --all
    src_tls_verify: bool = False,
    dest_tls_verify: bool = False,
    src_creds: str | None = None,
    dest_creds: str | None = None,
    cert_dir: Path | str | None = None,
    preserve_digests: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """``skopeo copy`` (``--all`` and ``--preserve-digests`` by default). ``cert_dir`` (a directory
    with ``ca.crt``) is used for whichever side is a registry."""
    _, authfile = _support_files()
    src_full, dst_full = _ref(src), _ref(dst)
    args = ["copy", "--retry-times", "0"]
    if all:
        args.append("--all")
    if preserve_digests:
        args.append("--preserve-digests")
    if src_full.startswith("docker://"):
        args += ["--src-authfile", str(authfile), f"--src-tls-verify={'true' if src_tls_verify else 'false'}"]
        if src_creds is not None:
            args += ["--src-creds", src_creds]
        if cert_dir is not None:
            args += ["--src-cert-dir", str(cert_dir)]
    if dst_full.startswith("docker://"):
        args += [
            "--dest-authfile",
            str(authfile),
            f"--dest-tls-verify={'true' if dest_tls_verify else 'false'}",
        ]
        if dest_creds is not None:
            args += ["--dest-creds", dest_creds]
        if cert_dir is not None:
            args += ["--dest-cert-dir", str(cert_dir)]
    args += [src_full, dst_full]
    _run(args, timeout=timeout, secrets=[src_creds, dest_creds, _password(src_creds), _password(dest_creds)])


# --------------------------------------------------------------------------- tiny OCI images


@dataclass
class OciImage:
    """What :func:`make_oci_layout` wrote."""

    layout: Path
    tag: str
    digest: str  # of the tagged manifest (the index when several platforms were asked for)
    media_type: str
    manifest: bytes  # the tagged manifest's exact bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # every blob by digest (configs, layers, manifests)
    manifests: list[str] = field(default_factory=list)  # image manifest digests (children of the index)

    @property
    def ref(self) -> str:
        """The skopeo reference, ``oci:<layout>:<tag>``."""
        return f"oci:{self.layout}:{self.tag}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(gzip-compressed tar, uncompressed tar), both deterministic."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), uncompressed


def make_oci_layout(
    layout: Path,
    *,
    tag: str = "latest",
    files: dict[str, bytes] | None = None,
    layers: int = 1,
    layer_size: int = 0,
    platforms: Sequence[tuple[str, str]] | None = None,
    seed: str = "",
) -> OciImage:
    """Write a tiny OCI image layout at ``layout`` and tag it ``tag``.

    Each image has ``layers`` gzip layers holding ``files`` (plus ``layer_size`` pseudo-random bytes
    that don't compress, for bigger blobs) and a config. ``platforms`` (``[("linux", "amd64"), ...]``)
    makes an image index with one image per platform. ``seed`` changes every blob, so two calls with
    different seeds share nothing.
    """
    layout = Path(layout)
    blob_dir = layout / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = _digest(data)
        blobs[digest] = data
        (blob_dir / digest.split(":", 1)[1]).write_bytes(data)
        return digest

    def image(os_name: str, arch: str) -> tuple[str, bytes]:
        layer_descs: list[dict[str, object]] = []
        diff_ids: list[str] = []
        for i in range(layers):
            content = dict(files or {"hello.txt": b"hello from the airgap test harness\n"})
            content[f"layer-{i}.txt"] = f"{seed}/{os_name}/{arch}/layer {i}\n".encode()
            if layer_size:
                stream = hashlib.shake_256(f"{seed}/{os_name}/{arch}/{i}".encode()).digest(layer_size)
                content[f"random-{i}.bin"] = stream
            compressed, uncompressed = _layer(content)
            layer_descs.append(
                {"mediaType": OCI_LAYER_GZIP, "digest": put(compressed), "size": len(compressed)}
            )
            diff_ids.append(_digest(uncompressed))
        config = json.dumps(
            {
                "architecture": arch,
                "os": os_name,
                "config": {"Labels": {"airgap.test.seed": seed}},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created_by": "airgap test harness"} for _ in diff_ids],
            },
            sort_keys=True,
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
                "layers": layer_descs,
            },
            indent=2,
        ).encode()
        return put(manifest), manifest

    children: list[str] = []
    if platforms:
        entries: list[dict[str, object]] = []
        for os_name, arch in platforms:
            digest, manifest = image(os_name, arch)
            children.append(digest)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        top = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
        ).encode()
        top_digest, media_type = put(top), OCI_INDEX
    else:
        top_digest, top = image("linux", "amd64")
        children.append(top_digest)
        media_type = OCI_MANIFEST

    index_path = layout / "index.json"
    existing: list[dict[str, object]] = []
    if index_path.exists():
        old = json.loads(index_path.read_text())
        existing = [
            m
            for m in old.get("manifests", [])
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ]
    existing.append(
        {
            "mediaType": media_type,
            "digest": top_digest,
            "size": len(top),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    index_path.write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": existing}, indent=2)
    )
    return OciImage(
        layout=layout,
        tag=tag,
        digest=top_digest,
        media_type=media_type,
        manifest=top,
        blobs=blobs,
        manifests=children,
    )
