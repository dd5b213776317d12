"""airgap repair DIR"""

from __future__ import annotations

from pathlib import Path

import click

from airgap.inputs import counted, format_size
from airgap.repair import repair_bundle
from airgap.signing import load_public_key

DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("repair")
@click.argument("directory", type=DIR)
@click.option("--pubkey", "pubkeys", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Trusted public key (KEY.pub). Repeatable: any one of them may have signed.")
@click.option("--media", multiple=True, type=DIR, help="Another directory holding chunks (one per medium).")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Write the rebuilt chunks here (default: DIRECTORY, replacing damaged ones).")
@click.pass_obj
def repair_cmd(obj: dict[str, bool], directory: Path, pubkeys: tuple[Path, ...], media: tuple[Path, ...],
               output: Path | None) -> None:
    """Rebuild missing or damaged chunks from the bundle's parity chunks (export --parity). Needs no network.

    The signature is checked first; each rebuilt chunk is checked against the manifest before it is written
    under its name. Intact chunks are never touched.
    """
    result = repair_bundle(directory, [load_public_key(p) for p in pubkeys], list(media), output)
    m = result.manifest
    for r in result.rebuilt:
        click.echo(f"{r.name}: was {r.was}; rebuilt into {r.path}")
    error = result.error()
    if error is not None:
        raise error
    if obj["quiet"]:
        return
    if not result.problems:
        click.echo(f"bundle {m.bundle_id}: every chunk is intact; nothing to repair")
        return
    seconds = max(result.seconds, 1e-6)
    elsewhere = f"; pass --media {result.output} to verify or import with them" if output is not None and \
        output.resolve() != directory.resolve() else ""
    click.echo(f"bundle {m.bundle_id}: {counted(len(result.rebuilt), 'chunk')} rebuilt from parity "
               f"({format_size(result.bytes_rebuilt)} in {result.seconds:.1f}s, "
               f"{format_size(int(result.bytes_rebuilt / seconds))}/s){elsewhere}")
