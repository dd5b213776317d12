"""airgap keygen PATH"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import click

from airgap.signing import KeyPermissionWarning, generate_keypair, read_passphrase


@click.command("keygen")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Encrypt the private key with the passphrase on this file's first line "
                   "(or set AIRGAP_KEY_PASSPHRASE).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
@click.pass_obj
def keygen_cmd(obj: dict[str, bool], path: Path, passphrase_file: Path | None, force: bool) -> None:
    """Create an Ed25519 signing key: PATH (private, mode 0600) and PATH.pub (public, to give to importers)."""
    passphrase = read_passphrase(passphrase_file, os.environ)
    public = generate_keypair(path, passphrase=passphrase, overwrite=force)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:  # FAT, exFAT, NTFS (a USB stick): the file system keeps no modes, chmod changes nothing
        warnings.warn(KeyPermissionWarning(
            f"the file system of {path.parent} does not keep file modes: the private key {path} is mode {mode:04o}, "
            "readable by anyone who can read that medium; "
            + ("keep it on a file system that keeps modes (not FAT, exFAT or NTFS)" if passphrase else
               "keep it on a file system that keeps modes (not FAT, exFAT or NTFS), or encrypt it with a passphrase "
               "(--passphrase-file)")), stacklevel=1)
    if obj["quiet"]:
        click.echo(public.key_id)
        return
    click.echo(f"private key: {path} ({'encrypted' if passphrase else 'NOT encrypted'}, mode {mode:04o})")
    click.echo(f"public key:  {path}.pub")
    click.echo(f"key id:      {public.key_id}")
