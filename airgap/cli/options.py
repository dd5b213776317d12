"""Options shared by every command that talks to a registry, and how they become library objects."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from airgap.errors import InvalidInput
from airgap.model.platform import Platform
from airgap.model.reference import parse_host
from airgap.registry import Credential, Keychain, Registries, RegistryOptions, RetryPolicy, UploadPolicy

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(f: F) -> F:
    """--insecure-registry, --ca-cert, --jobs, --retries."""
    f = click.option("--retries", type=click.IntRange(1, 100), default=6, show_default=True,
                     help="Tries per registry request before giving up (connection errors, 408, 429, 5xx).")(f)
    f = click.option("--jobs", "-j", type=click.IntRange(1, 64), default=6, show_default=True,
                     help="Blobs in flight at once (also the connection limit per registry); pushes send at most 2 "
                          "blobs of 16 MiB or more at once.")(f)
    f = click.option("--ca-cert", "ca_certs", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     help="Extra CA certificate (PEM) to trust for registries' TLS. Repeatable.")(f)
    f = click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                     help="Allow plain HTTP or unverified TLS for this registry. Repeatable.")(f)
    return f


def upload_option(f: F) -> F:
    return click.option("--upload-chunk-size", default="64MiB", show_default=True, metavar="SIZE",
                        help="Blobs larger than this are uploaded in PATCH chunks of this size (resumable at each "
                             "chunk); smaller ones in one request. Some registries need small chunks (GHCR: 4MiB).")(f)


def platform_option(f: F) -> F:
    return click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
                        help="Only these platforms of a multi-platform image (repeatable). "
                             "Default: every platform, index digest preserved.")(f)


def parse_platforms(values: tuple[str, ...]) -> tuple[Platform, ...]:
    return tuple(Platform.parse(v) for v in values)


def build_options(insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int, retries: int = 6) -> RegistryOptions:
    hosts = frozenset(parse_host(h) for h in insecure)
    # AIRGAP_RETRY_BASE_DELAY shortens the backoff (tests); the default suits real networks
    base = float(os.environ.get("AIRGAP_RETRY_BASE_DELAY", "0.5"))
    retry = RetryPolicy(tries=retries, base_delay=base, max_delay=max(base, 20.0) if base >= 0.5 else base * 8)
    return RegistryOptions(ca_certs=tuple(Path(c) for c in ca_certs), insecure=hosts, max_connections=jobs,
                           retry=retry)


def read_password(password_stdin: bool, env_var: str) -> str | None:
    if password_stdin:
        if sys.stdin.isatty():
            raise InvalidInput("--password-stdin expects the password on standard input",
                               hint="pipe it in, e.g. `cat pw.txt | airgap ...`")
        return sys.stdin.readline().rstrip("\r\n")
    return os.environ.get(env_var)


@dataclass(frozen=True)
class GivenCredentials:
    """Credentials a command takes for one registry on its command line."""

    host: str
    option: str  # the user name's option: --username, --src-username, ...
    user: str | None
    password: str | None  # from --password-stdin, else from env_var
    env_var: str


def refuse_password_without_user(password_stdin: bool, *user_options: tuple[str, str | None]) -> None:
    """``--password-stdin`` needs one of the user name options (a password alone was silently ignored)."""
    if password_stdin and not any(user for _, user in user_options):
        names = " or ".join(option for option, _ in user_options)
        raise InvalidInput(f"--password-stdin was given without {names}",
                           hint=f"add {names} USER: the user the password is for")


def keychain_with(given: list[GivenCredentials]) -> Keychain:
    """A keychain over the config files, with the credentials given on the command line first; errors name
    these options."""
    keychain = Keychain()
    for g in given:
        host, user, password, env_var = g.host, g.user, g.password, g.env_var
        keychain.options.setdefault(host, f"{g.option} USER (password on --password-stdin or in {env_var})")
        if user:
            if password is None:
                stdin_taken = any(o is not g and o.user and o.password is not None for o in given)
                raise InvalidInput(f"a user name for {host} was given without a password",
                                   hint=f"set the {env_var} variable: --password-stdin gives one password, the "
                                        "destination's when both user names are given"
                                   if stdin_taken else f"pass it with --password-stdin or the {env_var} variable")
            keychain.add(host, Credential(user, password))
    return keychain


def make_registries(insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int, retries: int,
                    keychain: Keychain, upload_chunk_size: str = "64MiB") -> Registries:
    from airgap.inputs import parse_size

    chunk = parse_size(upload_chunk_size)
    if chunk < 64 * 1024:
        raise InvalidInput(f"--upload-chunk-size {upload_chunk_size} is too small", hint="give at least 64KiB")
    upload = UploadPolicy(monolithic_max=min(32 * 1024 * 1024, chunk), chunk_size=chunk)
    return Registries(build_options(insecure, ca_certs, jobs, retries), keychain, upload)
