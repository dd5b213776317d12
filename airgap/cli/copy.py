"""airgap copy SRC DST"""

from __future__ import annotations

import os

import click

from airgap.cli.options import (
    GivenCredentials,
    keychain_with,
    make_registries,
    parse_platforms,
    platform_option,
    read_password,
    refuse_password_without_user,
    registry_options,
    upload_option,
)
from airgap.cli.progress import ProgressBar
from airgap.copy import copy, copy_request
from airgap.inputs import format_size
from airgap.transfer.plan import ReferrerOptions


@click.command("copy")
@click.argument("src")
@click.argument("dst")
@platform_option
@registry_options
@upload_option
@click.option("--no-referrers", is_flag=True,
              help="Leave out signatures, SBOMs and attestations (OCI referrers and cosign-style tags).")
@click.option("--src-username", help="User name for the source registry.")
@click.option("--dest-username", help="User name for the destination registry.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password of the one --*-username given from standard input; with both, the "
                   "destination's (the source's then comes from AIRGAP_SRC_PASSWORD).")
@click.pass_obj
def copy_cmd(obj: dict[str, bool], src: str, dst: str, platforms: tuple[str, ...], insecure: tuple[str, ...],
             ca_certs: tuple[str, ...], jobs: int, retries: int, upload_chunk_size: str, no_referrers: bool,
             src_username: str | None,
             dest_username: str | None, password_stdin: bool) -> None:
    """Copy an image (every platform, digests preserved) and its signatures, SBOMs and attestations.

    DST without a tag takes SRC's tag. Credentials come from `airgap login`, docker's config.json,
    credential helpers or containers' auth.json, unless given here.
    """
    refuse_password_without_user(password_stdin, ("--src-username", src_username), ("--dest-username", dest_username))
    request = copy_request(src, dst, parse_platforms(platforms))
    stdin_pw = read_password(True, "") if password_stdin else None
    stdin_for_src = stdin_pw is not None and src_username is not None and dest_username is None
    src_pw = stdin_pw if stdin_for_src else os.environ.get("AIRGAP_SRC_PASSWORD")
    dest_pw = stdin_pw if stdin_pw is not None and not stdin_for_src else os.environ.get("AIRGAP_DEST_PASSWORD")
    given = [GivenCredentials(request.source.host, "--src-username", src_username, src_pw, "AIRGAP_SRC_PASSWORD"),
             GivenCredentials(request.target.host, "--dest-username", dest_username, dest_pw, "AIRGAP_DEST_PASSWORD")]
    with make_registries(insecure, ca_certs, jobs, retries, keychain_with(given), upload_chunk_size) as registries, \
            ProgressBar(quiet=obj["quiet"], desc="copy") as bar:
        result = copy(registries, src, dst, platforms=request.platforms, jobs=jobs, progress=bar,
                      referrers=ReferrerOptions(enabled=not no_referrers))
    if not obj["quiet"]:
        for image in result.images:
            n = result.referrers
            more = f" with {n} referrer{'s' if n != 1 else ''}" if n else ""
            click.echo(f"copied {image.source} -> {image.target}{more}")
        click.echo(f"blobs: {result.uploaded} uploaded ({format_size(result.bytes_uploaded)}), "
                   f"{result.mounted} mounted, {result.skipped} already present")
