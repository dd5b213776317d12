import pytest
from hypothesis import given
from hypothesis import strategies as st

from airgap.errors import InvalidInput, InvalidReference
from airgap.model.digest import Digest
from airgap.model.reference import Reference, api_host, parse_host

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "host", "repo", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/library/alpine:1", "docker.io", "library/alpine", "1", None),
        ("registry-1.docker.io/x/y", "docker.io", "x/y", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
        ("127.0.0.1:5000/app@" + D, "127.0.0.1:5000", "app", None, D),
        ("reg.example.com/app:v1@" + D, "reg.example.com", "app", "v1", D),
        ("[::1]:5000/app:v", "[::1]:5000", "app", "v", None),
        ("Reg.Local/app", "Reg.Local", "app", "latest", None),
        ("reg.local/a.b_c__d-e--f/g", "reg.local", "a.b_c__d-e--f/g", "latest", None),
    ],
)
def test_parse(text: str, host: str, repo: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.host, ref.repository, ref.tag) == (host, repo, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    ["", "Upper", "reg.local/Upper", "reg.local/app:", "reg.local/app:-bad", "reg.local//app",
     "reg.local/app@sha256:abc", "reg.local/app@md5:" + "a" * 32, "reg.local/-app", "a" * 300,
     "reg.local/app:" + "t" * 129, "reg.local:x/app"],
)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference):
        Reference.parse(text)


def test_default_tag_and_identifier() -> None:
    assert Reference.parse("reg.local/app", default_tag=None).tag is None
    assert Reference.parse("reg.local/app@" + D).identifier == D
    assert Reference.parse("reg.local/app:v1").identifier == "v1"
    assert Reference.parse("reg.local/app:v1").name == "reg.local/app"


def test_hosts() -> None:
    assert parse_host("https://index.docker.io/v1/") == "docker.io"
    assert parse_host("reg.local:5000") == "reg.local:5000"
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("reg.local") == "reg.local"
    with pytest.raises(InvalidInput):
        parse_host("bad host")


def test_digest() -> None:
    d = Digest.of(b"hello")
    assert str(d) == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert Digest.parse(str(d)) == d
    for bad in ("sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha1:" + "a" * 40, "nope"):
        with pytest.raises(InvalidInput):
            Digest.parse(bad)


@given(st.text(max_size=80))
def test_parse_never_crashes(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        return
    assert Reference.parse(str(ref)) == ref


@given(st.from_regex(r"[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,3}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
def test_roundtrip_valid(path: str, tag: str) -> None:
    ref = Reference.parse(f"reg.local:5000/{path}:{tag}")
    assert (ref.host, ref.repository, ref.tag) == ("reg.local:5000", path, tag)


@pytest.mark.parametrize("text", ["127.0.0.1:5000", "registry.local:443", "localhost:5000", "[::1]:5000",
                                  "127.0.0.1:5000@sha256:" + "a" * 64])
def test_a_registry_address_alone_is_not_taken_for_a_docker_hub_image(text: str) -> None:
    """It would read as docker.io/library/127.0.0.1 with tag 5000 (and send the run to Docker Hub)."""
    with pytest.raises(InvalidReference, match="names a registry, not an image") as err:
        Reference.parse(text)
    assert err.value.hint == f"add the repository: {text.split('@')[0]}/NAME[:TAG]"


@pytest.mark.parametrize("text, name", [("ubuntu:22", "docker.io/library/ubuntu"),
                                        ("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
                                        ("my.app:v1", "docker.io/library/my.app")])
def test_names_that_only_look_alike_still_parse(text: str, name: str) -> None:
    assert Reference.parse(text).name == name
