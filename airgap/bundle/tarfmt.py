"""The tar members of the bundle stream: reproducible headers, and strict parsing of what a reader finds."""

from __future__ import annotations

import re
import tarfile

from airgap.errors import InvalidInput

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_BLOB_PATH = re.compile(r"^blobs/sha256/[0-9a-f]{64}$")
ALLOWED_FILES = ("oci-layout", "index.json")
MAX_HEADER = 8 * BLOCK


def header(path: str, size: int) -> bytes:
    """A reproducible tar header (mode 0644, owner 0/0, mtime 0); PAX records only for sizes ≥ 8 GiB."""
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def blob_path(hex_digest: str) -> str:
    return f"blobs/sha256/{hex_digest}"


def parse_header(data: bytes, *, expect_path: str, expect_size: int) -> int:
    """Check the tar header(s) at the start of ``data``; return how many bytes they take.

    Only the member airgap put there is accepted: exactly ``expect_path`` with ``expect_size``, a regular
    file. Anything else (other names, links, absurd sizes) is refused before any content is trusted.
    """
    if not (_BLOB_PATH.match(expect_path) or expect_path in ALLOWED_FILES):
        raise InvalidInput(f"refusing tar member name {expect_path!r}")
    import io

    buf = io.BytesIO(data[:MAX_HEADER])
    try:
        info = _read_info(buf)
    except (tarfile.TarError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"malformed tar header for {expect_path} in the bundle stream ({exc})") from None
    if info.name == expect_path and not info.isreg():
        raise InvalidInput(f"the bundle stream holds {expect_path} as a tar member of type {info.type!r}, not a "
                           "regular file")
    if info.name != expect_path or not info.isreg() or info.size != expect_size:
        raise InvalidInput(
            f"the bundle stream holds tar member {info.name!r} ({info.size} bytes) where the manifest puts "
            f"{expect_path} ({expect_size} bytes)")
    return info.offset_data


def _read_info(buf: object) -> tarfile.TarInfo:
    tf = tarfile.TarFile(fileobj=buf, mode="r")  # type: ignore[arg-type]
    info = tf.next()
    if info is None:
        raise ValueError("no tar header")
    return info
