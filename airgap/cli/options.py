"""Options shared by every command that talks to a registry, and how they become library objects."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from airgap.errors import InvalidInput
from airgap.model.platform import Platform
from airgap.model.reference import parse_host
from airgap.registry import Credential, Keychain, Registries, RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])


def registry_options(f: F) -> F:
    """--insecure-registry, --ca-cert, --jobs."""
    f = click.option("--jobs", "-j", type=click.IntRange(1, 64), default=6, show_default=True,
                     help="Blobs in flight at once (also the connection limit per registry).")(f)
    f = click.option("--ca-cert", "ca_certs", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     help="Extra CA certificate (PEM) to trust for registries' TLS. Repeatable.")(f)
    f = click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
                     help="Allow plain HTTP or unverified TLS for this registry. Repeatable.")(f)
    return f


def platform_option(f: F) -> F:
    return click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
                        help="Only these platforms of a multi-platform image (repeatable). "
                             "Default: every platform, index digest preserved.")(f)


def parse_platforms(values: tuple[str, ...]) -> tuple[Platform, ...]:
    return tuple(Platform.parse(v) for v in values)


def build_options(insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int) -> RegistryOptions:
    hosts = frozenset(parse_host(h) for h in insecure)
    return RegistryOptions(ca_certs=tuple(Path(c) for c in ca_certs), insecure=hosts, max_connections=jobs)


def read_password(password_stdin: bool, env_var: str) -> str | None:
    if password_stdin:
        if sys.stdin.isatty():
            raise InvalidInput("--password-stdin expects the password on standard input",
                               hint="pipe it in, e.g. `cat pw.txt | airgap ...`")
        return sys.stdin.readline().rstrip("\r\n")
    return os.environ.get(env_var)


def keychain_with(pairs: list[tuple[str, str | None, str | None]]) -> Keychain:
    """A keychain over the config files, with explicit (host, username, password) entries first."""
    keychain = Keychain()
    for host, user, password in pairs:
        if user:
            if password is None:
                raise InvalidInput(f"--username for {host} given without a password",
                                   hint="pass it with --password-stdin or the AIRGAP_PASSWORD variable")
            keychain.add(host, Credential(user, password))
    return keychain


def make_registries(insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int,
                    keychain: Keychain) -> Registries:
    return Registries(build_options(insecure, ca_certs, jobs), keychain)
