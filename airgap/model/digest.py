"""Content digests (``sha256:<hex>``): parsing, validation and computation."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from airgap.errors import InvalidInput

_HEX = {"sha256": 64, "sha512": 128}
_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)\Z")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _RE.match(text)
        if not m or len(m.group(2)) != _HEX[m.group(1)]:
            raise InvalidInput(
                f"invalid digest {text!r}", hint="a digest is sha256: followed by 64 lowercase hex digits"
            )
        return cls(m.group(1), m.group(2))

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"
