"""airgap export"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from airgap import audit
from airgap.bundle.media import refuse_file_size, unmounted_note
from airgap.cli.options import keychain_with, make_registries, parse_platforms, registry_options
from airgap.cli.progress import ProgressBar
from airgap.cli.verify import delta_summary
from airgap.delta import Exclusions, exclusions, read_since
from airgap.errors import AirgapError, InvalidInput
from airgap.export import (
    DEFAULT_LEVEL,
    ExportOptions,
    delta_members,
    expand_registry,
    expand_repository,
    export,
    make_requests,
    output_status,
    plan_members,
    recorded_level,
)
from airgap.inputs import (
    DEFAULT_CHUNK_SIZE,
    MEDIA_PRESETS,
    counted,
    format_size,
    parse_chunk_size,
    parse_images_file,
)
from airgap.inventory import read_inventory, stale_note
from airgap.model.bundle import attached_referrers
from airgap.model.delta import ReliedBlob
from airgap.model.digest import Digest
from airgap.model.parity import ParitySpec, StripeLayout
from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.registry import Registries
from airgap.signing import load_private_key, load_public_key, read_passphrase
from airgap.sources import OCI_PREFIX, Sources
from airgap.transfer.plan import ImageRequest, ReferrerOptions


def collect_requests(registries: Registries, refs: tuple[str, ...], images_file: Path | None,
                     repositories: tuple[str, ...], registries_all: tuple[str, ...], tag_regex: str | None,
                     platforms: tuple[Platform, ...], no_referrers: bool = False, jobs: int = 8
                     ) -> list[ImageRequest]:
    specs: list[tuple[str, tuple[Platform, ...]]] = [(r, platforms) for r in refs]
    if images_file is not None:
        for spec in parse_images_file(images_file):
            specs.append((spec.ref, tuple(Platform.parse(p) for p in spec.platforms) or platforms))
    sources = Sources(registries)
    resolved: list[tuple[Reference, tuple[Platform, ...]]] = []
    for text, plats in specs:
        if text.startswith(OCI_PREFIX):
            resolved.extend((r, plats) for r in sources.layout_refs(text))
        else:
            resolved.append((Reference.parse(text), plats))
    if tag_regex is not None and not (repositories or registries_all):
        raise InvalidInput("--tag-regex applies to --repository and --all-repositories, and neither is given",
                           hint="add --repository HOST/REPO or --all-repositories HOST, or drop --tag-regex")
    expanded = [expand_repository(registries, repo, tag_regex) for repo in repositories]
    for host in registries_all:
        found = expand_registry(registries, host, tag_regex, jobs)
        if not found.refs:
            raise InvalidInput(f"the catalog of {host} lists no tagged images",
                               hint="check the host, and that the credentials may list the catalog")
        expanded.append(found)
    for e in expanded:
        resolved.extend((r, platforms) for r in e.refs)
    untagged = [repo for e in expanded for repo in e.untagged]
    if untagged:
        shown = ", ".join(untagged[:5]) + (f" and {len(untagged) - 5} more" if len(untagged) > 5 else "")
        click.echo(f"note: {counted(len(untagged), 'repository', 'repositories')} of the catalog "
                   f"{'holds' if len(untagged) == 1 else 'hold'} no tag and {'is' if len(untagged) == 1 else 'are'} "
                   f"not exported (content reachable by digest only): {shown}", err=True)
    passed_over = sum(e.referrer_tags for e in expanded)
    if passed_over:
        one = passed_over == 1
        click.echo(f"note: {counted(passed_over, 'tag')} in the form sha256-<digest>[.sig|.att|.sbom] "
                   f"{'names a signature, attestation or SBOM' if one else 'name signatures, attestations or SBOMs'}, "
                   f"not {'an image' if one else 'images'}: {'it travels' if one else 'they travel'} with the images "
                   "they refer to"
                   + (" (not at all, with --no-referrers)" if no_referrers else ""), err=True)
    if not resolved:
        raise InvalidInput("no images to export",
                           hint="name images as arguments, with --images-file, --repository or --all-repositories")
    return make_requests(resolved)


def _selection(refs: tuple[str, ...], images_file: Path | None, repositories: tuple[str, ...],
               registries_all: tuple[str, ...], tag_regex: str | None, platforms: tuple[str, ...]
               ) -> dict[str, Any] | None:
    """What the user named, when it names whole repositories or registries (whose tags change at the source):
    a rerun of the same command continues the interrupted export however its tags changed meanwhile."""
    if not repositories and not registries_all:
        return None
    listed = hashlib.sha256(images_file.read_bytes()).hexdigest() if images_file is not None else None
    return {"refs": list(refs), "images_file": listed, "repositories": list(repositories),
            "registries": list(registries_all), "tag_regex": tag_regex, "platforms": list(platforms)}


def _discs(n: int, chunk_size: int, more: str = "") -> str:
    """`` (2 dvd discs)`` where the chunk size is a disc preset (one chunk per disc); nothing for the others (a
    `usb` or `fat32` chunk is not one stick)."""
    preset = {v: k for k, v in MEDIA_PRESETS.items()}.get(chunk_size)
    if preset is None or preset in ("usb", "fat32"):
        return ""
    return f" ({n} {more}{preset} disc{'' if n == 1 else 's'})"


def _media_count(size: int, chunk_size: int) -> str:
    n = max(1, -(-size // chunk_size))
    return f"{counted(n, 'chunk')}{_discs(n, chunk_size)}"


def _exclusions(inventories: tuple[Path, ...], pubkeys: tuple[Path, ...], since: tuple[Path, ...]
                ) -> Exclusions | None:
    if pubkeys and not inventories:
        raise InvalidInput("--inventory-pubkey is given without --exclude-inventory",
                           hint="add --exclude-inventory FILE (the inventory that key signed), or drop "
                                "--inventory-pubkey")
    trusted = [load_public_key(p) for p in pubkeys]
    for p in inventories:
        if not trusted and p.with_name(p.name + ".sig").is_file():
            click.echo(f"note: the inventory {p} is signed, but its signature is not checked: add --inventory-pubkey "
                       "KEY.pub (the key of the inventory's side) to check it", err=True)
    read = [read_inventory(p, trusted) for p in inventories]
    for path, inv in zip(inventories, read, strict=True):
        note = stale_note(inv, path)
        if note is not None:
            click.echo(f"note: {note}", err=True)
    return exclusions(read, [read_since(p) for p in since])


def _parity_plan(total: int, chunk_size: int, spec: ParitySpec | None) -> str:
    if spec is None:
        return ""
    layout = StripeLayout.plan(max(1, -(-total // chunk_size)), spec)
    n = layout.stripes * layout.parity
    return f", plus {counted(n, 'parity chunk')}{_discs(n, chunk_size, 'more ')}"


@click.command("export")
@click.argument("refs", nargs=-1)
@click.option("--images-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Images to export: one reference per line (# comments), or YAML `images:`.")
@click.option("--repository", "repositories", multiple=True, metavar="HOST/REPO",
              help="Every tag of this repository (see --tag-regex). Repeatable.")
@click.option("--all-repositories", "registries_all", multiple=True, metavar="HOST",
              help="Every tag of every repository in this registry's catalog (disaster-recovery backup).")
@click.option("--tag-regex", metavar="REGEX", help="With --repository/--all-repositories: only tags matching it.")
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory (created; an interrupted export in it is resumed).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Private key to sign the bundle with (from `airgap keygen`). Required unless --dry-run.")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Passphrase of an encrypted key (or set AIRGAP_KEY_PASSPHRASE).")
@click.option("--chunk-size", default=str(DEFAULT_CHUNK_SIZE), show_default="1 GiB",
              help="Bytes per chunk file: 500M, 4G, 1GiB, or a preset: " + ", ".join(MEDIA_PRESETS) + ".")
@click.option("--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Only these platforms of multi-platform images (their index digest changes).")
@click.option("--compression-level", type=click.IntRange(1, 19), default=DEFAULT_LEVEL, show_default=True,
              help="zstd level for content that is not already compressed.")
@click.option("--no-referrers", is_flag=True,
              help="Leave out signatures, SBOMs and attestations (OCI referrers and cosign-style tags).")
@click.option("--referrer-type", "referrer_types", multiple=True, metavar="TYPE",
              help="Only referrers of this artifact type (e.g. application/spdx+json). Repeatable.")
@click.option("--require-signature", is_flag=True,
              help="Refuse to export an image whose manifest carries no signature artifact (cosign .sig tag, "
                   "or a cosign/Notation signature referrer).")
@click.option("--parity", metavar="N|P%",
              help="Add N parity chunks (or P% of the data chunks) to each stripe of up to 16 data chunks: any N "
                   "missing or damaged chunks of a stripe can then be rebuilt (`airgap repair`, or by import).")
@click.option("--exclude-inventory", "inventories", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A delta: leave out every blob this inventory (from `airgap inventory` on the disconnected side) "
                   "lists. Repeatable.")
@click.option("--inventory-pubkey", "inventory_pubkeys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require the inventories to be signed by this key (their FILE.sig). Repeatable.")
@click.option("--since", "since", multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="BUNDLE_DIR|MANIFEST",
              help="A delta: leave out every blob an earlier bundle delivered (its directory or manifest.json). "
                   "Repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the plan (images, blobs, sizes, chunks) and write nothing.")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append-only audit log (default: $AIRGAP_AUDIT_LOG if set, else "
                   "$XDG_STATE_HOME/airgap/audit.jsonl).")
@registry_options
@click.pass_obj
def export_cmd(obj: dict[str, bool], refs: tuple[str, ...], images_file: Path | None, repositories: tuple[str, ...],
               registries_all: tuple[str, ...], tag_regex: str | None, output: Path, key_path: Path | None,
               passphrase_file: Path | None, chunk_size: str, platforms: tuple[str, ...], compression_level: int,
               no_referrers: bool, referrer_types: tuple[str, ...], require_signature: bool, parity: str | None,
               inventories: tuple[Path, ...], inventory_pubkeys: tuple[Path, ...], since: tuple[Path, ...],
               dry_run: bool, audit_log: Path | None, insecure: tuple[str, ...], ca_certs: tuple[str, ...], jobs: int,
               retries: int) -> None:
    """Pull images into a signed bundle of fixed-size chunk files in --output.

    The chunks, concatenated, are one zstd-compressed tar in OCI image-layout form; each blob is stored
    once. Run the same command again after an interruption: complete chunks are kept.
    """
    size = parse_chunk_size(chunk_size)
    parity_spec = ParitySpec.parse(parity) if parity is not None else None
    if click.get_current_context().get_parameter_source("compression_level") is ParameterSource.DEFAULT:
        # a rerun without the option finishes (or checks) the bundle at the level it was begun with, also when
        # that was another version's default
        compression_level = recorded_level(output) or compression_level
    key = None
    if not dry_run:
        if key_path is None:
            raise InvalidInput("export needs --key KEYFILE to sign the bundle", hint="create one with `airgap keygen`")
        key = load_private_key(key_path, passphrase=read_passphrase(passphrase_file, os.environ))
    if no_referrers and (referrer_types or require_signature):
        raise InvalidInput("--no-referrers cannot be combined with --referrer-type or --require-signature",
                           hint="signatures are referrers: drop --no-referrers")
    options = ExportOptions(chunk_size=size, level=compression_level, jobs=min(jobs, 8),
                            referrers=ReferrerOptions(enabled=not no_referrers, types=referrer_types),
                            require_signature=require_signature, parity=parity_spec,
                            exclude=_exclusions(inventories, inventory_pubkeys, since),
                            selection=_selection(refs, images_file, repositories, registries_all, tag_regex,
                                                 platforms))
    with make_registries(insecure, ca_certs, jobs, retries, keychain_with([])) as registries:
        requests = collect_requests(registries, refs, images_file, repositories, registries_all, tag_regex,
                                    parse_platforms(platforms), no_referrers, options.jobs)
        if dry_run:
            status = output_status(registries, output, requests, options, None)
            note = unmounted_note(output)
            if note is not None:
                click.echo(f"note: {note}", err=True)
            refuse_file_size(output, size)
            relied: dict[Digest, ReliedBlob] = {}
            entries, images, before, _, referrers = plan_members(
                Sources(registries), requests, ProgressBar(quiet=True, desc="export"), options, relied)
            delta_members(options.exclude, relied)  # what the export would refuse
            total = sum(e.size for e in entries)
            blobs = sum(e.size for e in entries if e.digest)  # "after dedup" as a run says it: the blobs alone
            for img in images:
                click.echo(f"{img.reference}  {img.digest}  {', '.join(img.platforms) or '-'}")
                for r in attached_referrers(img, referrers):  # and the referrers of those (a signed SBOM)
                    click.echo(f"  referrer {r.artifact_type or r.media_type}  {r.digest}"
                               + (f"  ({r.tag})" if r.tag else ""))
            click.echo(f"{counted(len(images), 'image')}, {counted(len(entries) - 2, 'unique blob')}, "
                       f"{format_size(before)} before dedup, "
                       f"{format_size(blobs)} after; at most {_media_count(total, size)} of {format_size(size)}"
                       + _parity_plan(total, size, parity_spec)
                       + (f"; a delta: {counted(len(relied), 'blob')} "
                          f"({format_size(sum(r.size for r in relied.values()))}) left out" if relied else ""))
            if status != "new":
                click.echo(f"{output} already holds this complete bundle: the export would do nothing" if
                           status == "complete" else f"{output} holds this export, interrupted: it would continue it")
            return
        assert key is not None
        log_path = audit_log or audit.default_audit_log()
        audit.check(log_path)  # an export that cannot be recorded does not start
        base = {"output": str(output.absolute()), "key_id": key.public.key_id, "chunk_size": size}
        try:
            with ProgressBar(quiet=obj["quiet"], desc="export") as bar:
                result = export(registries, requests, output, key, options, progress=bar)
        except KeyboardInterrupt:
            with contextlib.suppress(AirgapError):
                audit.append(log_path, "export", outcome="interrupted", images=[str(r.source) for r in requests],
                             **base)
            raise
        except AirgapError as exc:
            audit.append(log_path, "export", outcome="failed", error=str(exc),
                         images=[str(r.source) for r in requests], **base)
            raise
    m = result.manifest
    audit.append(log_path, "export", outcome="ok", bundle_id=m.bundle_id, already_complete=result.already_complete,
                 images=[{"reference": i.reference, "digest": str(i.digest)} for i in m.images],
                 chunks=len(m.chunks), stream_size=m.stream_size, **base)
    if result.already_complete:
        click.echo(f"{output} already holds this complete bundle ({m.bundle_id}); nothing to do")
        return
    if obj["quiet"]:
        return
    for img in m.images:
        attached = m.referrers_of(img)
        more = f" with {len(attached)} referrer{'s' if len(attached) != 1 else ''}" if attached else ""
        click.echo(f"exported {img.reference}{f'@{img.digest}' if img.tag else ''}{more}")
    unpacked = m.unpacked_size
    ratio = m.stream_size / unpacked if unpacked else 1.0
    resumed = f", {format_size(result.resumed_bytes)} kept from the interrupted run" if result.resumed_bytes else ""
    click.echo(f"bundle {m.bundle_id} in {output}: {counted(len(m.images), 'image')}, "
               f"{counted(len(m.blobs), 'unique blob')}, "
               f"{format_size(result.bytes_before_dedup)} before dedup, {format_size(unpacked)} after, "
               f"{format_size(m.stream_size)} compressed ({ratio:.0%}), {_media_count(m.stream_size, size)}{resumed}"
               + (f", {counted(len(m.parity.chunks), 'parity chunk')} ({format_size(m.parity.size)}: up to "
                  f"{counted(m.parity.layout.parity, 'missing chunk')} per stripe of {m.parity.layout.data} can be "
                  "rebuilt)"
                  if m.parity else "") + f"; signed by {m.key_id}")
    if options.exclude is not None:
        click.echo(delta_summary(m) if m.is_delta else "a delta was asked for, but the target holds none of these "
                   "blobs: this bundle is complete")
