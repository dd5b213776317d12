"""airgap login REGISTRY"""

from __future__ import annotations

import click

from airgap.cli.options import build_options, read_password
from airgap.errors import InvalidInput
from airgap.login import login
from airgap.registry import Credential


@click.command("login")
@click.argument("registry")
@click.option("--username", "-u", required=True, help="User name.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (else from AIRGAP_PASSWORD).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST[:PORT]",
              help="Allow plain HTTP or unverified TLS for this registry.")
@click.option("--ca-cert", "ca_certs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Extra CA certificate (PEM) to trust.")
@click.pass_obj
def login_cmd(obj: dict[str, bool], registry: str, username: str, password_stdin: bool,
              insecure: tuple[str, ...], ca_certs: tuple[str, ...]) -> None:
    """Check credentials against REGISTRY and store them: in $REGISTRY_AUTH_FILE when it is set, else through
    docker's configured credential helper, else in docker's config.json (files mode 0600)."""
    password = read_password(password_stdin, "AIRGAP_PASSWORD")
    if not password:
        raise InvalidInput("no password given", hint="pipe it in with --password-stdin, or set AIRGAP_PASSWORD")
    stored = login(registry, Credential(username, password), options=build_options(insecure, ca_certs, 2))
    if not obj["quiet"]:
        click.echo(f"Login succeeded; credentials for {registry} stored in {stored}")
