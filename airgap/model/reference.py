"""Image references: ``[host[:port]/]path[:tag][@sha256:digest]`` with Docker Hub's rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from airgap.errors import InvalidInput, InvalidReference
from airgap.model.digest import Digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]{1,5})?\Z"
)
MAX_NAME = 255


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part.startswith("[") or part != part.lower()


def parse_host(text: str) -> str:
    """Validate and normalise a registry host (``host[:port]``); Docker Hub aliases become ``docker.io``."""
    host = text.strip()
    for prefix in ("https://", "http://"):
        if host.startswith(prefix):
            host = host[len(prefix) :]
    host = host.rstrip("/")
    if host.endswith("/v1") or host.endswith("/v2"):
        host = host[:-3]
    if not host or not _HOST.match(host):
        raise InvalidInput(f"invalid registry host {text!r}", hint="write it as host[:port], e.g. registry.local:5000")
    if host.lower() in _HUB_ALIASES:
        return DOCKER_HUB
    return host


def api_host(host: str) -> str:
    """The host to which API requests for ``host`` go."""
    return DOCKER_HUB_API if host == DOCKER_HUB else host


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference. ``tag`` and ``digest`` may both be set."""

    host: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = "latest") -> Reference:
        """Parse ``text``; with neither tag nor digest, the tag is ``default_tag``."""
        original = text
        text = text.strip()
        if not text:
            raise InvalidReference("empty image reference")
        digest: Digest | None = None
        if "@" in text:
            text, _, dpart = text.partition("@")
            try:
                digest = Digest.parse(dpart)
            except InvalidInput:
                raise InvalidReference(f"invalid digest in image reference {original!r}") from None
        tag: str | None = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1 :]
            if not _TAG.match(tag):
                raise InvalidReference(f"invalid tag {tag!r} in image reference {original!r}")
        first, sep, rest = text.partition("/")
        if not sep and tag is not None and tag.isdigit() and (
                "." in text or text == "localhost" or text.startswith("[")):
            # "127.0.0.1:5000", "registry.local:443": a registry and port, which would read as the Docker Hub
            # image library/127.0.0.1 with tag 5000
            raise InvalidReference(f"{original!r} names a registry, not an image",
                                   hint=f"add the repository: {text}:{tag}/NAME[:TAG]")
        if sep and _looks_like_host(first):
            host, path = first, rest
        else:
            host, path = DOCKER_HUB, text
        try:
            host = parse_host(host)
        except InvalidInput:
            raise InvalidReference(f"invalid registry host {host!r} in image reference {original!r}") from None
        if host == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        components = path.split("/")
        if not path or any(not _COMPONENT.match(c) for c in components):
            raise InvalidReference(
                f"invalid repository name {path!r} in image reference {original!r}",
                hint="repository names are lowercase letters, digits and separators (. _ __ -), joined by /",
            )
        if len(host) + 1 + len(path) > MAX_NAME:
            raise InvalidReference(f"image reference {original!r} is longer than {MAX_NAME} characters")
        if tag is None and digest is None:
            tag = default_tag
        return cls(host=host, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``host/repository`` without tag or digest."""
        return f"{self.host}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None
        return self.tag

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def with_digest(self, digest: Digest | None) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s
