"""Platforms (``os/arch[/variant]``) and matching them against an index's entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airgap.errors import InvalidInput

_ARCH_ALIASES = {"x86_64": ("amd64", None), "x86-64": ("amd64", None), "aarch64": ("arm64", None),
                 "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "i386": ("386", None)}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}  # of an index entry that names none


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as the user writes it: any case, and the usual aliases (``x86_64``,
        ``aarch64``, ``armhf``, …) for the names that OCI indexes use."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidInput(f"invalid platform {text!r}", hint="write it as os/arch[/variant], e.g. linux/arm64/v8")
        arch, variant = _ARCH_ALIASES.get(parts[1], (parts[1], None))
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else variant)

    @classmethod
    def from_json(cls, obj: Any) -> Platform | None:
        if not isinstance(obj, dict):
            return None
        os_, arch = obj.get("os"), obj.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            return None
        variant = obj.get("variant")
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` (an index entry) satisfies this requested platform: a request without a variant
        takes any; an entry without one has its architecture's default (``arm64`` is ``arm64/v8``)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return self.variant is None or self.variant == (other.variant or _DEFAULT_VARIANT.get(other.architecture))

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")
