"""airgap import DIR --to REGISTRY[/PREFIX]"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from airgap import audit
from airgap.bundle.files import no_manifest
from airgap.bundle.reader import BundleReader, ChunkCorrupt, ChunkMissing, read_signed_manifest
from airgap.cli.options import (
    GivenCredentials,
    keychain_with,
    make_registries,
    read_password,
    refuse_password_without_user,
    registry_options,
    upload_option,
)
from airgap.cli.progress import ProgressBar
from airgap.errors import AirgapError, InvalidInput
from airgap.importing import ImportResult, Target, check_relied, digest_ref, import_bundle, map_images
from airgap.inputs import counted, format_size
from airgap.journal import ImportJournal, KnownBlobs
from airgap.model.bundle import BundleManifest
from airgap.repair import Repairer
from airgap.signing import load_public_key

DIR = click.Path(exists=True, file_okay=False, path_type=Path)


class ImportIncomplete(AirgapError):
    exit_code = 8
    default_hint = "fix the cause named above and run the same command again: it continues where it stopped"


def result_json(result: ImportResult) -> dict[str, Any]:
    t = result.transfer
    failed = {f.target: str(f.error) for f in result.failed}
    return {
        "bundle_id": result.manifest.bundle_id,
        "target": str(result.target),
        "already_done": result.already_done,
        "images": [{"source": m.image.reference, "target": str(m.target), "digest": str(m.image.digest),
                    "target_by_digest": digest_ref(m), "media_type": m.image.media_type,
                    "platforms": list(m.image.platforms),
                    "status": "failed" if str(m.target) in failed else "ok",
                    "unchanged": t is not None and str(m.target) in t.unchanged,
                    **({"error": failed[str(m.target)]} if str(m.target) in failed else {})}
                   for m in result.images],
        "blobs": {"uploaded": t.uploaded if t else 0, "mounted": t.mounted if t else 0,
                  "skipped": t.skipped if t else 0},
        "bytes_uploaded": t.bytes_uploaded if t else 0,
        "referrers": {"pushed": result.referrers, "fallback_indexes": result.referrer_indexes},
        "repaired_chunks": result.repaired,
        "seconds": round(result.seconds, 3),
    }


@click.command("import")
@click.argument("directory", type=DIR)
@click.option("--to", "to", required=True, metavar="REGISTRY[/PREFIX]", help="Target registry, and path prefix.")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trusted public key (KEY.pub); repeatable. Required unless --insecure-skip-signature.")
@click.option("--image", "images", multiple=True, metavar="REF",
              help="Import only this image: its reference, with or without its registry, tag or digest "
                   "(repository:tag, repository, sha256:…); repeatable.")
@click.option("--media", multiple=True, type=DIR, help="Another directory holding chunks (one per medium).")
@click.option("--keep-source-host", is_flag=True,
              help="Keep each image's source registry as a path component: REGISTRY/PREFIX/HOST/path, with HOST in "
                   "lowercase and a port joined by '-' (registry.example.com-5000), as repository names allow.")
@click.option("--dry-run", is_flag=True, help="Show where each image would go and what is missing; push nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as a JSON document on stdout.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where resume journals are kept (default $XDG_STATE_HOME/airgap).")
@click.option("--audit-log", type=click.Path(dir_okay=False, path_type=Path),
              help="Append-only audit log (default: $AIRGAP_AUDIT_LOG if set, else STATE_DIR/audit.jsonl).")
@click.option("--insecure-skip-signature", is_flag=True,
              help="DANGEROUS: import without checking the signature. Recorded in the audit log.")
@click.option("--username", help="User name for the target registry (else `airgap login` / docker config).")
@click.option("--password-stdin", is_flag=True,
              help="Read the target registry's password from standard input (else from AIRGAP_PASSWORD).")
@registry_options
@upload_option
@click.pass_obj
def import_cmd(obj: dict[str, bool], directory: Path, to: str, pubkeys: tuple[Path, ...], images: tuple[str, ...],
               media: tuple[Path, ...], keep_source_host: bool, dry_run: bool, as_json: bool,
               state_dir: Path | None, audit_log: Path | None, insecure_skip_signature: bool,
               username: str | None, password_stdin: bool, insecure: tuple[str, ...], ca_certs: tuple[str, ...],
               jobs: int, retries: int, upload_chunk_size: str) -> None:
    """Verify a bundle and push its images into REGISTRY, resuming an interrupted run.

    `host/path:tag` in the bundle becomes `REGISTRY/PREFIX/path:tag`; digests are preserved.
    """
    refuse_password_without_user(password_stdin, ("--username", username))
    target = Target.parse(to)
    log_path = audit_log or audit.default_audit_log(state_dir)
    if not dry_run:
        audit.check(log_path)  # an import that cannot be recorded does not start
    base = {"bundle_dir": str(directory.absolute()), "target": str(target),
            "insecure_skip_signature": insecure_skip_signature}
    try:
        if insecure_skip_signature:
            click.echo("WARNING: --insecure-skip-signature: the bundle's signature is NOT checked; its content may "
                       "have been altered by anyone who had the media", err=True)
            path = directory / "manifest.json"
            if not path.is_file():
                raise no_manifest(directory)
            manifest = BundleManifest.parse(path.read_bytes())
            signer = None
        else:
            if not pubkeys:
                raise InvalidInput("import needs --pubkey KEY.pub to check the bundle's signature",
                                   hint="ask the exporter for their public key")
            manifest, key = read_signed_manifest(directory, [load_public_key(p) for p in pubkeys])
            signer = key.key_id
        base.update({"bundle_id": manifest.bundle_id, "key_id": signer or "(not checked)"})
        if signer is None:  # for the record: the key the signature file names, if there is one (not verified)
            base["claimed_key_id"] = _claimed_signer(directory)
        mapped = map_images(manifest, target, images, keep_source_host=keep_source_host)
        state = state_dir or audit.state_dir()
        repairer = Repairer.for_import(manifest, [directory, *media], state)
        reader = BundleReader(manifest, [directory, *media], verify_chunks=True,
                              repair=repairer.rebuild if repairer else None)
        password = read_password(password_stdin, "AIRGAP_PASSWORD")
        keychain = keychain_with([GivenCredentials(target.host, "--username", username, password, "AIRGAP_PASSWORD")])
        if dry_run:
            def check_base() -> None:  # what the import checks first: the target holds what a delta relies on
                with make_registries(insecure, ca_certs, jobs, retries, keychain, upload_chunk_size) as registries:
                    check_relied(registries, manifest, target, mapped, jobs,
                                 KnownBlobs.open(state, target.host, compact=False))

            if as_json and manifest.is_delta:  # one document on stdout: a refusal prints only its own
                check_base()
            _dry_run(reader, mapped, as_json, repairer)
            if not as_json and manifest.is_delta:
                check_base()
                click.echo(f"{target} holds every blob this delta relies on")
            return
        journal = ImportJournal.open(state, manifest.bundle_id, str(target))
        with make_registries(insecure, ca_certs, jobs, retries, keychain, upload_chunk_size) as registries, \
                ProgressBar(quiet=obj["quiet"] or as_json, desc="import") as bar, contextlib.closing(reader):
            result = import_bundle(registries, reader, target, mapped, journal, jobs=jobs, progress=bar,
                                   repairer=repairer, known=KnownBlobs.open(state, target.host))
    except KeyboardInterrupt:
        with contextlib.suppress(AirgapError):
            audit.append(log_path, "import", outcome="interrupted", **base)
        raise
    except AirgapError as exc:
        if not dry_run:
            audit.append(log_path, "import", outcome="failed", error=str(exc), **base)
        if as_json:  # a script reads stdout: a document there too, as well as the error line
            click.echo(json.dumps({"bundle_id": base.get("bundle_id"), "target": str(target), "error": str(exc),
                                   "exit_code": exc.exit_code}, indent=2))
        raise
    doc = result_json(result)
    # the images this run put there (or failed to): a tag that named its image already is only counted, so that
    # a search for a digest finds the import that brought it, and a nightly record does not list the whole registry
    audit.append(log_path, "import", outcome="failed" if result.failed else "ok",
                 images=[{k: i[k] for k in ("source", "target", "digest", "status")} for i in doc["images"]
                         if not ((i["unchanged"] or result.already_done) and i["status"] == "ok")],
                 unchanged=sum((i["unchanged"] or result.already_done) and i["status"] == "ok" for i in doc["images"]),
                 blobs=doc["blobs"], bytes_uploaded=doc["bytes_uploaded"], **base)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    elif not obj["quiet"]:
        _summary(result, doc)
    if result.failed:
        first = result.failed[0]
        hint = None
        if any(isinstance(f.error, (ChunkCorrupt, ChunkMissing)) for f in result.failed):
            # an image stops at its first damaged chunk: verify names them all, for one trip to the source
            from airgap.cli.verify import bundle_command

            command = bundle_command("verify", directory, pubkeys, media)
            hint = (f"`{command}` names every damaged chunk; copy them again from the source bundle, then run the "
                    "same command again: it continues where it stopped")
        raise ImportIncomplete(f"{len(result.failed)} of {len(mapped)} images not imported; first: {first.target}: "
                               f"{first.error}", hint=hint)


def _claimed_signer(directory: Path) -> str | None:
    """The ``key_id`` that ``manifest.json.sig`` names, unverified; None when there is no readable one."""
    try:
        data = (directory / "manifest.json.sig").read_bytes()[:4096]
        key_id = json.loads(data).get("key_id")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return key_id[:128] if isinstance(key_id, str) else None


def _summary(result: ImportResult, doc: dict[str, Any]) -> None:
    if result.already_done:
        click.echo(f"bundle {result.manifest.bundle_id} is already imported into {result.target}; every image is "
                   f"still there (checked in {result.seconds:.1f}s); nothing to do")
        return
    for img in doc["images"]:
        mark = "FAILED   " if img["status"] != "ok" else "unchanged" if img["unchanged"] else "imported "
        shown = img["target"] if "@" in img["target"] else f"{img['target']}@{img['digest']}"  # by digest: once
        click.echo(f"{mark} {shown}")
    if result.repaired:
        click.echo(f"rebuilt from parity: {', '.join(result.repaired)}")
    b = doc["blobs"]
    unchanged = sum(i["status"] == "ok" and i["unchanged"] for i in doc["images"])
    click.echo(f"{counted(sum(i['status'] == 'ok' for i in doc['images']), 'image')} in {result.target}"
               + (f" ({unchanged} of them unchanged: the tag named it already)" if unchanged else "") + "; blobs: "
               f"{b['uploaded']} uploaded ({format_size(doc['bytes_uploaded'])}), {b['mounted']} mounted, "
               f"{b['skipped']} already present; {result.seconds:.1f}s")
    if result.referrers:
        written = result.referrer_indexes
        click.echo(f"{counted(result.referrers, 'referrer')} (signatures, SBOMs, attestations) pushed"
                   + (f"; {written} referrers tag index{'es' if written != 1 else ''} updated" if written else ""))


def _dry_run(reader: BundleReader, mapped: list[Any], as_json: bool, repairer: Repairer | None) -> None:
    """What the import would read, and what it would find wrong without reading it: chunks missing or of the
    wrong size (a size check; the sha256 of each chunk is checked by the import, or by `verify`)."""
    from airgap.importing import check_chunks_present

    m = reader.manifest
    every = list(m.chunks) + ([c.as_chunk() for c in m.parity.chunks] if m.parity else [])
    problems = {c.name: p for c in every if (p := reader.size_problem(c)) is not None}
    damage = m.parity.damage(m.chunks, problems) if m.parity else []
    rebuilt = {name for d in damage if d.repairable for name in d.bad}
    rows = []
    for item in mapped:
        names = [m.chunks[c].name for c in sorted(m.chunks_of_image(item.image))]
        bad = [n for n in names if n in problems]
        rows.append({"source": item.image.reference, "target": str(item.target), "digest": str(item.image.digest),
                     "chunks": names, "missing_chunks": [n for n in bad if problems[n].kind == "missing"],
                     "damaged_chunks": [{"name": n, "problem": problems[n].kind, "detail": problems[n].detail}
                                        for n in bad if problems[n].kind != "missing"],
                     "rebuilt_from_parity": [n for n in bad if n in rebuilt]})
    if as_json:  # one document on stdout: a refusal prints only its own (see import_cmd)
        check_chunks_present(reader, mapped, repairer)
        click.echo(json.dumps({"bundle_id": m.bundle_id, "images": rows,
                               "relies_on": [r.to_json() for r in m.relies_on]}, indent=2))
    else:
        for r in rows:
            notes = [f"MISSING {', '.join(r['missing_chunks'])}"] if r["missing_chunks"] else []
            notes += [f"DAMAGED {d['name']} ({d['problem']}, {d['detail']})" for d in r["damaged_chunks"]]
            if r["rebuilt_from_parity"]:
                notes.append(f"parity rebuilds {', '.join(r['rebuilt_from_parity'])} on the way")
            click.echo(f"{r['source']} -> {r['target']}" + ("  " + "; ".join(notes) if notes else ""))
        if m.is_delta:
            from airgap.cli.verify import delta_summary

            click.echo(delta_summary(m))
    check_chunks_present(reader, mapped, repairer)
