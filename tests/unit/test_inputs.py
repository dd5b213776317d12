"""Parsing sizes and images files: accepted forms, every error path, and never crashing on arbitrary input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airgap.errors import InvalidInput
from airgap.inputs import (
    DEFAULT_CHUNK_SIZE,
    MEDIA_PRESETS,
    MIN_CHUNK_SIZE,
    ImageSpec,
    format_size,
    parse_chunk_size,
    parse_images_file,
    parse_size,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
D = "sha256:" + "a" * 64

# --- sizes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("123", 123),
        ("0", 0),
        ("500M", 500_000_000),
        ("500MB", 500_000_000),
        ("500mb", 500_000_000),
        ("4G", 4_000_000_000),
        ("4g", 4_000_000_000),
        ("1GiB", GiB),
        ("1gib", GiB),
        ("1Gi", GiB),
        ("1.5G", 1_500_000_000),
        ("1.5GiB", 3 * GiB // 2),
        ("700MiB", 700 * MiB),
        ("2K", 2000),
        ("2KB", 2000),
        ("2KiB", 2048),
        ("1T", 10**12),
        ("1TiB", 1024**4),
        ("10B", 10),
        ("  7 MiB ", 7 * MiB),
        (".5K", 500),
        ("1.", 1),
        ("1.0005K", 1000),  # rounded down to whole bytes
        ("1.5", 1),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_presets() -> None:
    expected = {
        "cd": 737_280_000 - 16 * MiB,
        "dvd": 4_700_372_992 - 32 * MiB,
        "dvd-dl": 8_543_666_176 - 32 * MiB,
        "bd25": 25_025_314_816 - 64 * MiB,
        "bd50": 50_050_629_632 - 64 * MiB,
        "fat32": 4_294_967_295,
        "usb": GiB,
    }
    assert expected == MEDIA_PRESETS
    assert GiB == DEFAULT_CHUNK_SIZE == MEDIA_PRESETS["usb"]
    assert MiB == MIN_CHUNK_SIZE
    for name, size in MEDIA_PRESETS.items():
        assert parse_size(name) == size
        assert parse_size(name.upper()) == size
        assert parse_chunk_size(f" {name} ") == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "M", "-1", "1e3", "0x10", "1,5G", "1.5.5G", "12 34", "1 G B", "1KK", "1Kib5", "5 dvd", "١٢", "1" * 70],
)
def test_invalid_size(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_size(text)
    assert info.value.message == f"invalid size {text!r}"
    for word in ("K, M, G, T", "powers of 1000", "KiB, MiB, GiB, TiB", "powers of 1024", "dvd", "fat32"):
        assert word in info.value.hint


def test_chunk_size_minimum() -> None:
    assert parse_chunk_size("1MiB") == MiB
    with pytest.raises(InvalidInput) as info:
        parse_chunk_size("1M")
    assert "is 1,000,000 bytes, below the minimum of 1,048,576 bytes (1 MiB)" in info.value.message
    assert "'1M'" in info.value.message
    with pytest.raises(InvalidInput, match="minimum"):
        parse_chunk_size("0")
    with pytest.raises(InvalidInput, match="invalid size"):
        parse_chunk_size("lots")
    assert parse_chunk_size("1024TiB") == 1 << 50  # the bundle format's bound; above it, refused at once
    with pytest.raises(InvalidInput, match="above the maximum of 1024 TiB"):
        parse_chunk_size("2000T")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"), (3 * GiB // 2, "1.5 GiB"),
     (GiB, "1 GiB"), (700 * MiB, "700 MiB"), (GiB - 1, "1 GiB"), (1024**4, "1 TiB"),
     (1024**5, "1024 TiB"), (-2048, "-2 KiB")],
)  # fmt: skip
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


_UNIT_FACTORS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
                 "T": 10**12, "TB": 10**12, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}  # fmt: skip


@given(n=st.integers(min_value=0, max_value=10**30), unit=st.sampled_from(sorted(_UNIT_FACTORS)),
       space=st.sampled_from(["", " "]), upper=st.booleans())  # fmt: skip
def test_parse_size_round_trip(n: int, unit: str, space: str, upper: bool) -> None:
    text = f"{n}{space}{unit}"
    assert parse_size(text.upper() if upper else text.lower()) == n * _UNIT_FACTORS[unit]


@given(n=st.integers(min_value=0, max_value=10**15), fraction=st.integers(min_value=0, max_value=999))
def test_parse_size_fraction_round_trip(n: int, fraction: int) -> None:
    assert parse_size(f"{n}.{fraction:03d}K") == n * 1000 + fraction
    assert parse_size(f"{n}.{fraction:03d}GiB") == (n * 1000 + fraction) * 1024**3 // 1000


@given(st.integers(min_value=0, max_value=2**60))
def test_format_size_parses_back_closely(n: int) -> None:
    back = parse_size(format_size(n))
    assert abs(back - n) <= max(n, 1) * 0.06


@given(st.text(max_size=40))
@example("1.5 GiB")
@example("dvd-dl")
def test_parse_size_never_crashes(text: str) -> None:
    try:
        size = parse_size(text)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(size, int)
        assert size >= 0


# --- images files -------------------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plain_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "images.txt",
        "# images for site B\n"
        "\n"
        "  alpine:3.19  \n"
        "registry.local:5000/team/app@" + D + "   # pinned\n"
        "\tbusybox\t# tab comment\n"
        "oci:./layouts/tool:v2\n"
        "oci:/media/usb/my layout\n",
    )
    assert parse_images_file(path) == [
        ImageSpec("alpine:3.19"),
        ImageSpec("registry.local:5000/team/app@" + D),
        ImageSpec("busybox"),
        ImageSpec("oci:./layouts/tool:v2"),
        ImageSpec("oci:/media/usb/my layout"),
    ]


def test_plain_text_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(b"\xef\xbb\xbfalpine\r\nbusybox:1\r\n")
    assert parse_images_file(path) == [ImageSpec("alpine"), ImageSpec("busybox:1")]


def test_plain_text_invalid_reference_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "images.txt", "alpine\n\n# comment\n\nbusybox\nok/app\nreg.local/app:-bad\n")
    with pytest.raises(InvalidInput) as info:
        parse_images_file(path)
    assert info.value.message == f"{path} line 7: invalid tag '-bad' in image reference 'reg.local/app:-bad'"
    assert info.value.hint == "write it as [host[:port]/]path[:tag][@sha256:<64 hex>]"  # the underlying hint


def test_plain_text_hash_without_space_is_not_a_comment(tmp_path: Path) -> None:
    path = write(tmp_path, "images.txt", "alpine#3\n")
    with pytest.raises(InvalidInput, match=r"line 1: invalid"):
        parse_images_file(path)


def test_plain_text_two_references_on_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "images.txt", "alpine busybox\n")
    with pytest.raises(InvalidInput, match=r"images.txt line 1: one image reference per line, found 'alpine busybox'"):
        parse_images_file(path)


def test_oci_without_path(tmp_path: Path) -> None:
    path = write(tmp_path, "images.txt", "alpine\noci:\n")
    with pytest.raises(InvalidInput, match=r"line 2: empty OCI layout path") as info:
        parse_images_file(path)
    assert "oci:DIR[:REF]" in info.value.hint


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n  # comments\n"])
def test_empty_plain_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "images.txt", text)
    with pytest.raises(InvalidInput) as info:
        parse_images_file(path)
    assert info.value.message == f"{path} lists no images"
    assert "one image reference per line" in info.value.hint


def test_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "images.yaml",
        "# site B\n"
        "images:\n"
        "  - alpine:3.19\n"
        "  - ref: busybox\n"
        "    platforms: [linux/amd64, ' linux/arm64/v8 ', linux/amd64]\n"
        "  - ref: oci:./layouts/tool:v2\n"
        "    platform: linux/arm/v7\n"
        "  - 3.19\n"
        "  - ref: 'registry.local/app'\n"
        "    platforms: []\n"
        "  - {ref: reg.local/x, platforms: linux/s390x}\n",
    )
    assert parse_images_file(path) == [
        ImageSpec("alpine:3.19"),
        ImageSpec("busybox", ("linux/amd64", "linux/arm64/v8")),
        ImageSpec("oci:./layouts/tool:v2", ("linux/arm/v7",)),
        ImageSpec("3.19"),  # as written, not the float 3.19
        ImageSpec("registry.local/app"),
        ImageSpec("reg.local/x", ("linux/s390x",)),
    ]


def test_yaml_detected_by_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "list.txt", "# comment\n\nimages:\n  - alpine\n")
    assert parse_images_file(path) == [ImageSpec("alpine")]


@pytest.mark.parametrize("suffix", [".yml", ".YAML"])
def test_yaml_suffixes(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, "images" + suffix, "images: [alpine]\n")
    assert parse_images_file(path) == [ImageSpec("alpine")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images:\n  - alpine\n  - ref: [busybox\n", "line 4: invalid YAML: expected ',' or ']'"),
        ("images:\n  - alpine\n\t- busybox\n",
         "line 3: invalid YAML: found character '\\t' that cannot start any token"),
        ("images:\n  - alpine\n  - Bad\n", "line 3: item 2: invalid repository name 'library/Bad'"),
        ("images:\n  - alpine\n  - ref: a\n    plaform: linux/amd64\n",
         "line 4: item 2: unknown key 'plaform' (known: ref, platforms, platform)"),
        ("images:\n  - platforms: [linux/amd64]\n", "line 2: item 1: no ref: given"),
        ("images:\n  - ref: a\n    platforms: [linux]\n", "line 3: item 1: invalid platform 'linux'"),
        ("images:\n  - ref: a\n    platform: linux/amd64\n    platforms: [linux/arm64]\n",
         "item 1: give either platform: or platforms:, not both"),
        ("images:\n  - ref: a\n    ref: b\n", "line 3: item 1: 'ref' is given twice"),
        ("images:\n  - ref: [a]\n", "line 2: item 1: the reference must be a string"),
        ("images:\n  - ref:\n", "line 2: item 1: the reference is empty"),
        ("images:\n  - alpine\n  -\n", "line 3: item 2: the reference is empty"),
        ("images:\n  - [a, b]\n", "line 2: item 1: expected a reference or a mapping with ref:"),
        ("images:\n  - ref: a\n    platforms: [{os: linux}]\n", "line 3: item 1: a platform must be a string"),
        ("images:\n  - ref: 'oci:'\n", "line 2: item 1: empty OCI layout path"),
        ("images: alpine\n", "line 1: `images:` must be a list"),
        ("images: [a]\nextra: 1\n", "line 2: unknown key 'extra', expected `images:`"),
        ("images: [a]\nimages: [b]\n", "line 2: `images:` is given twice"),
        ("- alpine\n", "line 1: expected `images:` at the top"),
        ("images: [a]\n---\nimages: [b]\n",
         "line 2: invalid YAML: expected a single document in the stream, but found another document"),
        ("images: [a, \x00]\n", "line 1: invalid YAML: character U+0000 is not allowed"),
        ("images: " + "[" * 5000 + "\n", "invalid YAML: nested too deeply"),
    ],
)  # fmt: skip
def test_yaml_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "images.yaml", text)
    with pytest.raises(InvalidInput) as info:
        parse_images_file(path)
    assert info.value.message.startswith(str(path))
    assert message in info.value.message
    assert "\n" not in str(info.value)
    assert info.value.hint


def test_yaml_reference_error_keeps_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "images.yaml", "images:\n  - alpine\n  - ref: a:-bad\n")
    with pytest.raises(InvalidInput) as info:
        parse_images_file(path)
    assert info.value.message == f"{path} line 3: item 2: invalid tag '-bad' in image reference 'a:-bad'"
    assert info.value.hint == "write it as [host[:port]/]path[:tag][@sha256:<64 hex>]"


@pytest.mark.parametrize("text", ["", "# nothing\n", "images:\n", "images: []\n", "images: null\n"])
def test_empty_yaml(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "images.yaml", text)
    with pytest.raises(InvalidInput) as info:
        parse_images_file(path)
    assert info.value.message == f"{path} lists no images"
    assert "images:" in info.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_images_file(tmp_path / "nope.txt")
    assert info.value.message.startswith(f"cannot read images file {tmp_path / 'nope.txt'}")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read images file"):
        parse_images_file(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(b"alpine\nbusy\xffbox\n")
    with pytest.raises(InvalidInput, match=r"images.txt line 2: not UTF-8 text"):
        parse_images_file(path)


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(b"alpine\n" + b"#" * (10 * MiB))
    with pytest.raises(InvalidInput, match="larger than 10 MiB"):
        parse_images_file(path)


_files = st.sampled_from(["images.txt", "images.yaml"])
_yamlish = st.lists(
    st.sampled_from(["images:", "  - ", "alpine", "ref: ", "platforms: ", "[linux/amd64]", "platform:", "- ", "#", "\n",
                     " ", "oci:", "{", "}", "[", "]", ":", "'", "\t", "&a ", "*a", "!!binary ", "linux/arm64", "@"]),
    max_size=40,
).map("".join)  # fmt: skip


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(text=st.one_of(st.text(max_size=200), _yamlish), name=_files)
@example(text="images:\n  - *x\n", name="images.yaml")
@example(text="images: &a [*a]\n", name="images.yaml")
def test_parse_images_file_never_crashes(tmp_path: Path, text: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        specs = parse_images_file(path)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
        assert exc.message.startswith(str(path)) or exc.message.startswith("cannot read")
    else:
        assert specs
        assert all(isinstance(s, ImageSpec) and s.ref for s in specs)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(data=st.binary(max_size=200), name=_files)
def test_parse_images_file_never_crashes_on_bytes(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        specs = parse_images_file(path)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        assert specs


def test_pyyaml_is_loaded_only_for_a_yaml_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "list.txt").write_text("registry.local/app:1.0\n")
    (tmp_path / "list.yaml").write_text("images:\n  - registry.local/app:1.0\n")
    code = ("import sys\nfrom pathlib import Path\nfrom airgap.inputs import parse_images_file\n"
            "d = Path(sys.argv[1])\nparse_images_file(d / 'list.txt')\nassert 'yaml' not in sys.modules\n"
            "assert parse_images_file(d / 'list.yaml')[0].ref == 'registry.local/app:1.0'\n"
            "assert 'yaml' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_counted_and_percent_read_as_people_write_them() -> None:
    from airgap.inputs import counted, percent

    assert [counted(n, "chunk") for n in (0, 1, 2)] == ["0 chunks", "1 chunk", "2 chunks"]
    assert counted(1, "missing chunk") == "1 missing chunk" and counted(3, "index", "indexes") == "3 indexes"
    assert [percent(p, 1000) for p in (0, 1, 4, 500, 996, 1000)] == ["0%", "1%", "1%", "50%", "99%", "100%"]
    assert percent(0, 0) == "0%"
