"""airgap verify DIR and airgap inspect DIR"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from airgap.bundle.files import BundleError, no_manifest
from airgap.bundle.reader import read_signed_manifest
from airgap.inputs import counted, format_size, percent
from airgap.model.bundle import BundleManifest
from airgap.signing import load_public_key
from airgap.verify import VerifyResult, verify_bundle

DIR = click.Path(exists=True, file_okay=False, path_type=Path)


class BundleDamaged(BundleError):
    exit_code = 7
    default_hint = "replace the damaged or missing chunks from the source bundle (see above), then verify again"


@click.command("verify")
@click.argument("directory", type=DIR)
@click.option("--pubkey", "pubkeys", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Trusted public key (KEY.pub). Repeatable: any one of them may have signed.")
@click.option("--media", multiple=True, type=DIR, help="Another directory holding chunks (one per medium).")
@click.pass_obj
def verify_cmd(obj: dict[str, bool], directory: Path, pubkeys: tuple[Path, ...], media: tuple[Path, ...]) -> None:
    """Check the signature, then every chunk's size and sha256. Needs no network."""
    result = verify_bundle(directory, [load_public_key(p) for p in pubkeys], list(media))
    m = result.manifest
    report = result.report
    for p in report.problems:
        renamed = report.renamed.get(p.chunk.name)
        what = f"missing (found its content as {renamed}: renamed?)" if renamed else p.kind
        detail = f" ({p.detail})" if p.detail else ""
        affects = f"affects {', '.join(result.affected(p.chunk.name)) or 'no image'}"
        stripe = result.stripe_of(p.chunk.name)
        if stripe is not None:  # a bundle with parity
            if any(c.name == p.chunk.name for c in m.chunks):
                affects += f"; stripe {stripe.stripe}"
            else:
                affects = f"parity of stripe {stripe.stripe}"
            affects += ", can be rebuilt" if stripe.repairable else ", cannot be rebuilt"
        click.echo(f"{p.chunk.name}: {what}{detail}; {affects}", err=True)
    for name, bad in report.shadowed.items():
        click.echo(f"note: {name}: {bad}: copy it over the damaged one", err=True)
    for extra in report.extra:
        if extra not in report.renamed.values():
            click.echo(f"note: {extra} is not part of the bundle", err=True)
    if not result.ok and m.parity is None:
        missing = any(p.kind == "missing" for p in report.problems)
        raise BundleDamaged(
            f"bundle {m.bundle_id}: {len(report.problems)} of {len(m.chunks)} chunks missing or damaged",
            hint=("if the bundle spans several media (discs), pass each other one with --media DIR; else "
                  + BundleDamaged.default_hint) if missing else None)
    if not result.ok:
        _parity_verdict(result, directory, pubkeys, media)
    if not obj["quiet"]:
        click.echo(f"bundle {m.bundle_id} OK: signed by {result.signer.key_id}, {counted(len(m.chunks), 'chunk')} "
                   f"({format_size(m.stream_size)}), {counted(len(m.images), 'image')}")


def _parity_verdict(result: VerifyResult, directory: Path, pubkeys: tuple[Path, ...],
                    media: tuple[Path, ...]) -> NoReturn:
    m = result.manifest
    assert m.parity is not None
    damaged = f"bundle {m.bundle_id}: {len(result.report.problems)} of {len(m.chunks) + len(m.parity.chunks)} " \
              "chunks missing or damaged"
    lost = [d for d in result.damage if not d.repairable]
    if lost:
        raise BundleDamaged(f"{damaged}; " + "; ".join(d.describe() for d in lost),
                            hint="find the missing chunks (--media DIR) or copy the damaged ones again from the "
                                 "source bundle; with enough of them back, `airgap repair` rebuilds the others")
    command = bundle_command("repair", directory, pubkeys, media)
    hint = f"run `{command}`, then verify again"
    if not os.access(directory, os.W_OK):  # read-only media: the rebuilt chunks go elsewhere
        hint = f"run `{command} --output DIR` (DIR: a directory you can write to), then verify again with --media DIR"
    raise BundleDamaged(f"{damaged}; parity can rebuild every one of them", hint=hint)


def bundle_command(verb: str, directory: Path, pubkeys: Sequence[Path], media: Sequence[Path]) -> str:
    """``airgap VERB DIR --pubkey … --media …``, quoted for a shell: a command to suggest in a hint."""
    return " ".join([f"airgap {verb}", shlex.quote(str(directory)),
                     *(f"--pubkey {shlex.quote(str(p))}" for p in pubkeys),
                     *(f"--media {shlex.quote(str(d))}" for d in media)])


def delta_summary(m: BundleManifest) -> str:
    """One line: what a delta bundle relies on and how much that saves."""
    relied = sum(r.size for r in m.relies_on)
    whole = relied + m.unpacked_size
    bases = ", ".join(b.describe() for b in m.bases)
    return (f"delta: relies on {counted(len(m.relies_on), 'blob')} ({format_size(relied)}, {percent(relied, whole)} of "
            f"the images' content) that the target must already hold, from {bases}")


def inspect_json(m: BundleManifest, signer: str | None) -> dict[str, Any]:
    unpacked = m.unpacked_size
    return {
        "bundle_id": m.bundle_id, "created": m.created, "tool": m.tool, "key_id": m.key_id,
        "signature_checked_with": signer,
        "chunk_size": m.chunk_size, "stream_size": m.stream_size, "unpacked_size": unpacked,
        "compression_ratio": round(m.stream_size / unpacked, 4) if unpacked else 1.0,
        "images": [{"reference": i.reference, "registry": i.registry, "repository": i.repository, "tag": i.tag,
                    "digest": str(i.digest), "media_type": i.media_type, "platforms": list(i.platforms),
                    "source_digest": str(i.source_digest) if i.source_digest else None,
                    "size": sum(b.size for d in i.digests() if (b := m.blob(d)) is not None),
                    "chunks": sorted(m.chunks[c].name for c in m.chunks_of_image(i)),
                    "referrers": [{"subject": str(r.subject), "digest": str(r.digest), "media_type": r.media_type,
                                   "artifact_type": r.artifact_type, "tag": r.tag,
                                   "size": sum(b.size for d in r.digests() if (b := m.blob(d)) is not None)}
                                  for r in m.referrers_of(i)]} for i in m.images],
        "blobs": len(m.blobs),
        "chunks": [{"name": c.name, "size": c.size, "sha256": c.sha256} for c in m.chunks],
        "parity": None if m.parity is None else {
            "stripes": m.parity.layout.stripes, "stripe_data_chunks": m.parity.layout.data,
            "stripe_parity_chunks": m.parity.layout.parity, "size": m.parity.size,
            "chunks": [{"name": c.name, "size": c.size, "sha256": c.sha256, "stripe": c.stripe, "index": c.index}
                       for c in m.parity.chunks]},
        "delta": None if not m.is_delta else {
            "bases": [b.to_json() for b in m.bases],
            "relies_on": [r.to_json() for r in m.relies_on],
            "relies_on_size": sum(r.size for r in m.relies_on),
        },
    }


@click.command("inspect")
@click.argument("directory", type=DIR)
@click.option("--json", "as_json", is_flag=True, help="Print a stable JSON document (see docs/json-output.md).")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Check the signature with this key first (repeatable).")
def inspect_cmd(directory: Path, as_json: bool, pubkeys: tuple[Path, ...]) -> None:
    """Show a bundle: images, platforms, sizes, dedup and compression, chunks, signer."""
    signer = None
    if pubkeys:
        m, key = read_signed_manifest(directory, [load_public_key(p) for p in pubkeys])
        signer = key.key_id
    else:
        path = directory / "manifest.json"
        if not path.is_file():
            raise no_manifest(directory)
        m = BundleManifest.parse(path.read_bytes())
    doc = inspect_json(m, signer)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"bundle {m.bundle_id}, created {m.created} by {m.tool}")
    click.echo(f"signed by {signer} (signature checked)" if signer else
               f"says it is signed by {m.key_id} (signature not checked: pass --pubkey, or run verify)")
    before = sum(img["size"] for img in doc["images"])
    click.echo(f"{counted(len(m.images), 'image')}, {counted(len(m.blobs), 'unique blob')}: {format_size(before)} in "
               f"images, {format_size(m.unpacked_size)} after dedup, {format_size(m.stream_size)} compressed "
               f"({doc['compression_ratio']:.0%}); {counted(len(m.chunks), 'chunk')} of {format_size(m.chunk_size)}")
    if m.parity is not None:
        p = m.parity.layout
        click.echo(f"parity: {counted(len(m.parity.chunks), 'chunk')} ({format_size(m.parity.size)}), {p.parity} for "
                   f"each of {counted(p.stripes, 'stripe')} of up to {counted(p.data, 'data chunk')}: any {p.parity} "
                   f"missing or damaged {'chunk' if p.parity == 1 else 'chunks'} of a stripe can be rebuilt")
    if m.is_delta:
        click.echo(delta_summary(m))
    for img in doc["images"]:
        plats = f" [{', '.join(img['platforms'])}]" if img["platforms"] else ""
        click.echo(f"  {img['reference']}  {img['digest']}{plats}  {format_size(img['size'])}")
        for r in img["referrers"]:
            on = "" if r["subject"] == img["digest"] else f" on {r['subject'][:19]}…"
            tag = f" (tag {r['tag']})" if r["tag"] else ""
            click.echo(f"    referrer {r['artifact_type'] or r['media_type']}  {r['digest']}{on}{tag}  "
                       f"{format_size(r['size'])}")
