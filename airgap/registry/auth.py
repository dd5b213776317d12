"""Registry authentication: ``WWW-Authenticate`` challenges, Basic auth and Bearer tokens with a cache."""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope", "")
        return tuple(scope.split(" ")) if scope else ()

    @property
    def insufficient_scope(self) -> bool:
        return self.params.get("error") == "insufficient_scope"


def parse_challenge(header: str) -> Challenge | None:
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def repo_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def merge_scopes(*groups: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Union of scopes, merging the actions of one resource (``repository:x:pull`` + ``:push``)."""
    actions: dict[str, list[str]] = {}
    for group in groups:
        for scope in group:
            resource, _, acts = scope.rpartition(":")
            if not resource:
                resource, acts = scope, ""
            have = actions.setdefault(resource, [])
            for a in acts.split(","):
                if a and a not in have:
                    have.append(a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" for r, a in actions.items()))


@dataclass
class Token:
    value: str = field(repr=False)
    expires_at: float
    lifetime: float = 60.0  # the expires_in it came with

    def fresh(self) -> bool:
        """Still good for a request: not within 10 s of its end, or a quarter of its life for a short-lived one
        (a token of 10 s or less was never fresh under a fixed 10 s margin: a new one for every request)."""
        return time.monotonic() < self.expires_at - min(10.0, self.lifetime / 4)


class TokenCache:
    """Bearer tokens by scope set. Thread-safe; expired tokens are dropped."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._lock = threading.Lock()
        self.refresh_token: str | None = None

    def get(self, scopes: tuple[str, ...]) -> Token | None:
        with self._lock:
            tok = self._tokens.get(scopes)
            if tok and tok.fresh():
                return tok
            # a token granted for more scopes serves a request for fewer
            want = set(scopes)
            for have, t in self._tokens.items():
                if want <= set(have) and t.fresh():
                    return t
            return None

    def put(self, scopes: tuple[str, ...], token: Token) -> None:
        with self._lock:
            self._tokens[scopes] = token

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def drop(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)
