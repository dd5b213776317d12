"""Parsing what operators type: sizes (``--chunk-size 4G``, ``--chunk-size dvd``) and images files.

Sizes
    A whole or decimal number with an optional unit, case-insensitive, spaces allowed before the unit.
    Decimal (SI) units are powers of 1000: ``K``/``KB``, ``M``/``MB``, ``G``/``GB``, ``T``/``TB``;
    binary (IEC) units are powers of 1024: ``KiB``, ``MiB``, ``GiB``, ``TiB`` (also ``Ki``, ``Mi``, ``Gi``,
    ``Ti``); ``B`` or no unit is bytes. So ``500M`` is 500,000,000 bytes and ``500MiB`` is 524,288,000:
    that is how media are sold (a "4.7 GB" DVD) and what ``df -H`` shows, while ``GiB`` matches ``ls -lh``.
    Fractions are rounded down to whole bytes (``1.5K`` is 1500). Media presets leave room for the file
    system: see :data:`MEDIA_PRESETS`.

Images files
    Plain text: one reference per line; blank lines and ``#`` comments (whole-line, or after whitespace)
    are ignored. YAML (a ``.yaml``/``.yml`` file, or one whose first meaningful line starts with
    ``images:``)::

        images:
          - registry.local/app:1.0
          - ref: docker.io/library/alpine:3.19
            platforms: [linux/amd64, linux/arm64]
          - ref: oci:./layouts/tool:v2
            platform: linux/amd64

    References are checked with :meth:`Reference.parse` but returned as written; ``oci:DIR[:REF]``
    references (an OCI image layout on disk) are passed through unparsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from airgap.errors import AirgapError, InvalidInput
from airgap.model.reference import Reference

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_IMAGES_FILE",
    "MEDIA_PRESETS",
    "MIN_CHUNK_SIZE",
    "ImageSpec",
    "format_size",
    "parse_chunk_size",
    "parse_images_file",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_CHUNK_SIZE = GiB
MIN_CHUNK_SIZE = MiB
MAX_CHUNK_SIZE = 1 << 50  # the bundle format's bound on every size (1 PiB)
MAX_IMAGES_FILE = 10 * MiB

#: Usable bytes per medium: the raw capacity less a margin for the file system's own structures.
MEDIA_PRESETS: dict[str, int] = {
    "cd": 737_280_000 - 16 * MiB,  # 80-minute CD-R ("700 MB")
    "dvd": 4_700_372_992 - 32 * MiB,  # DVD±R single layer ("4.7 GB")
    "dvd-dl": 8_543_666_176 - 32 * MiB,  # DVD+R double layer ("8.5 GB")
    "bd25": 25_025_314_816 - 64 * MiB,  # BD-R single layer
    "bd50": 50_050_629_632 - 64 * MiB,  # BD-R double layer
    "fat32": 4 * GiB - 1,  # the largest file FAT32 can hold
    "usb": GiB,  # the default: any USB stick or file system
}

_UNITS: dict[str, int] = {"": 1, "b": 1}
for _i, _p in enumerate("kmgt", start=1):
    _UNITS[_p] = _UNITS[_p + "b"] = 1000**_i
    _UNITS[_p + "i"] = _UNITS[_p + "ib"] = 1024**_i

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)", re.ASCII)
_MAX_SIZE_TEXT = 64
_SIZE_HINT = (
    "write a number of bytes with an optional unit: K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB "
    "(powers of 1024), e.g. 500M, 1.5G, 700MiB; or a preset: " + ", ".join(MEDIA_PRESETS)
)


def parse_size(text: str) -> int:
    """Bytes from ``"123"``, ``"500M"``, ``"1.5G"``, ``"700MiB"`` or a preset name (``"dvd"``)."""
    key = text.strip().lower()
    if key in MEDIA_PRESETS:
        return MEDIA_PRESETS[key]
    match = _SIZE.fullmatch(key) if len(key) <= _MAX_SIZE_TEXT else None
    if match is None or match.group(2) not in _UNITS:
        raise InvalidInput(f"invalid size {text!r}", hint=_SIZE_HINT)
    whole, _, fraction = match.group(1).partition(".")
    unit = _UNITS[match.group(2)]
    size = int(whole or "0") * unit
    if fraction:
        size += int(fraction) * unit // 10 ** len(fraction)
    return size


def parse_chunk_size(text: str) -> int:
    """A chunk size: :func:`parse_size`, at least :data:`MIN_CHUNK_SIZE`."""
    size = parse_size(text)
    if size < MIN_CHUNK_SIZE:
        raise InvalidInput(
            f"chunk size {text!r} is {size:,} bytes, below the minimum of {MIN_CHUNK_SIZE:,} bytes "
            f"({format_size(MIN_CHUNK_SIZE)})",
            hint=f"give at least {format_size(MIN_CHUNK_SIZE)}, e.g. 1G or a preset such as dvd",
        )
    if size > MAX_CHUNK_SIZE:
        raise InvalidInput(f"chunk size {text!r} is above the maximum of {format_size(MAX_CHUNK_SIZE)}",
                           hint="give the size of the media, e.g. 4GiB or a preset such as bd50")
    return size


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 chunk"``, ``"2 chunks"``: ``n`` and the noun in the number that fits."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def percent(part: float, whole: float) -> str:
    """``part / whole`` in whole percent for people: never "100%" or "0%" unless it is exactly that."""
    if not whole or part in (0, whole):
        return f"{part / whole:.0%}" if whole else "0%"
    return f"{min(99, max(1, round(100 * part / whole)))}%"


def format_size(n: int) -> str:
    """``n`` bytes for people, in binary units: ``"512 B"``, ``"1.5 GiB"``, ``"4 GiB"``."""
    sign, n = ("-", -n) if n < 0 else ("", n)
    if n < KiB:
        return f"{sign}{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        text = f"{value:.1f}"
        if float(text) < 1024 or unit == "TiB":
            return f"{sign}{text.removesuffix('.0')} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


# --- images files -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    """One image to move: a reference as written (or ``oci:DIR[:REF]``) and the platforms to keep (all if empty)."""

    ref: str
    platforms: tuple[str, ...] = ()


_TEXT_HINT = "write one image reference per line, e.g. registry.local/app:1.0; # starts a comment"
_YAML_HINT = "write `images:` followed by a list of references or {ref: ..., platforms: [...]} items"


def parse_images_file(path: Path) -> list[ImageSpec]:
    """The images listed in ``path``: plain text (one reference per line) or YAML (an ``images:`` list)."""
    name = str(path)
    text = _read_text(path, name)
    if Path(name).suffix.lower() in (".yaml", ".yml") or _first_meaningful_line(text).startswith("images:"):
        from airgap.images_yaml import parse_yaml  # PyYAML is loaded only for a YAML file

        specs = parse_yaml(text, name)
        hint = _YAML_HINT
    else:
        specs = _parse_text(text, name)
        hint = _TEXT_HINT
    if not specs:
        raise InvalidInput(f"{name} lists no images", hint=hint)
    return specs


def _read_text(path: Path, name: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGES_FILE + 1)
    except OSError as exc:
        raise InvalidInput(
            f"cannot read images file {name}: {exc.strerror or exc}", hint="check the path and its permissions"
        ) from None
    if len(data) > MAX_IMAGES_FILE:
        raise InvalidInput(
            f"images file {name} is larger than {format_size(MAX_IMAGES_FILE)}",
            hint="split it into several files, or check that it is the right file",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"{name} line {line}: not UTF-8 text", hint="save the file as UTF-8") from None


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _first_meaningful_line(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    return ""


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment that starts the line or follows whitespace."""
    for i, char in enumerate(line):
        if char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _check_ref(ref: str) -> None:
    """Raise the underlying error when ``ref`` is not a valid reference (``oci:`` references only need a path)."""
    if ref.startswith("oci:"):
        if not ref[len("oci:") :].strip():
            raise InvalidInput(
                f"empty OCI layout path in {ref!r}", hint="write it as oci:DIR[:REF], e.g. oci:./layouts/app:1.0"
            )
        return
    Reference.parse(ref)


def _parse_text(text: str, name: str) -> list[ImageSpec]:
    specs: list[ImageSpec] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if not line.startswith("oci:") and any(c.isspace() for c in line):
            raise InvalidInput(
                f"{name} line {number}: one image reference per line, found {_shorten(line)}", hint=_TEXT_HINT
            )
        try:
            _check_ref(line)
        except AirgapError as exc:
            raise InvalidInput(f"{name} line {number}: {exc.message}", hint=exc.hint) from None
        specs.append(ImageSpec(line))
    return specs
