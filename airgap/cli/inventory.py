"""airgap inventory --registry REGISTRY[/PREFIX] --output FILE"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from airgap.cli.options import (
    GivenCredentials,
    keychain_with,
    make_registries,
    read_password,
    refuse_password_without_user,
    registry_options,
)
from airgap.importing import Target
from airgap.inputs import counted, format_size
from airgap.inventory import take_inventory, write_inventory
from airgap.model.manifest import is_referrer_tag
from airgap.signing import load_private_key, read_passphrase


@click.command("inventory")
@click.option("--registry", "registry", required=True, metavar="REGISTRY[/PREFIX]",
              help="The registry to describe, optionally only the repositories under PREFIX.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the inventory (JSON).")
@click.option("--repo", "repos", multiple=True, metavar="NAME",
              help="Describe only this repository (relative to PREFIX). Repeatable; needed where the registry "
                   "does not allow listing its catalog.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the inventory with this private key (writes FILE.sig next to it).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase of an encrypted key (or set AIRGAP_KEY_PASSPHRASE).")
@click.option("--username", help="User name for the registry (password from --password-stdin or AIRGAP_PASSWORD).")
@click.option("--password-stdin", is_flag=True, help="Read the registry password from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@registry_options
@click.pass_obj
def inventory_cmd(obj: dict[str, bool], registry: str, output: Path, repos: tuple[str, ...], key_path: Path | None,
                  passphrase_file: Path | None, username: str | None, password_stdin: bool, as_json: bool,
                  insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int, retries: int) -> None:
    """Record which images and blobs a registry holds, for `export --exclude-inventory` on the other side.

    Run it on the disconnected side and carry the file back: the next export leaves out every blob it
    lists, and `import` checks that the target still has them before it pushes anything.
    """
    refuse_password_without_user(password_stdin, ("--username", username))
    target = Target.parse(registry, "--registry")
    key = load_private_key(key_path, passphrase=read_passphrase(passphrase_file, os.environ)) if key_path else None
    password = read_password(password_stdin, "AIRGAP_PASSWORD")
    keychain = keychain_with([GivenCredentials(target.host, "--username", username, password, "AIRGAP_PASSWORD")])
    with make_registries(insecure, ca_certs, jobs, retries, keychain) as registries:
        result = take_inventory(registries.client(target.host), target.prefix, repos, jobs=jobs)
    inv = result.inventory
    write_inventory(inv, output, key)
    for text in result.notices:
        click.echo(f"airgap: note: {text}", err=True)
    size = sum(b.size for b in inv.blobs)
    repositories = len({i.repository for i in inv.images})
    # the tags of signatures, SBOMs and referrer indexes are recorded too (their blobs count), but are no images
    images = sum(1 for i in inv.images if not (i.tag and is_referrer_tag(i.tag)))
    others = len(inv.images) - images
    if as_json:
        click.echo(json.dumps({"inventory_id": inv.inventory_id, "registry": inv.where, "output": str(output),
                               "signed": key is not None, "repositories": repositories, "images": images,
                               "referrer_tags": others, "blobs": len(inv.blobs), "blob_bytes": size,
                               "notices": result.notices}, indent=2))
    elif not obj["quiet"]:
        click.echo(f"inventory {inv.inventory_id} of {inv.where}: {counted(images, 'image')}"
                   + (f" (and {counted(others, 'tag')} of signatures, SBOMs or referrers)" if others else "")
                   + f" in {counted(repositories, 'repository', 'repositories')}, {counted(len(inv.blobs), 'blob')} "
                   f"({format_size(size)})"
                   + (f", signed by {key.public.key_id}" if key else "") + f" -> {output}")
