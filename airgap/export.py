"""``export``: images from registries or OCI layouts into a signed bundle of fixed-size chunks.

Streams registry → zstd frames → chunk files; nothing is staged. An interrupted export run again with
the same arguments keeps its complete chunks and continues (see :mod:`airgap.bundle.writer`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.bundle.files import STATE_DIR, BundleError, os_error, write_atomic
from airgap.bundle.media import refuse_file_size, unmounted_note
from airgap.bundle.parity import write_parity
from airgap.bundle.reader import BundleReader, read_signed_manifest
from airgap.bundle.stream import Member
from airgap.bundle.tarfmt import END_OF_ARCHIVE, blob_path
from airgap.bundle.writer import write_stream
from airgap.delta import Exclusions
from airgap.errors import AirgapError, InvalidInput, NotFound
from airgap.inputs import counted
from airgap.locking import exclusive
from airgap.model.bundle import BundleImage, BundleManifest, BundleReferrer, StoredBlob, StoredFile
from airgap.model.delta import MAX_BASES, Base, ReliedBlob, parse_delta
from airgap.model.digest import Digest
from airgap.model.manifest import OCI_INDEX, SIGNATURE_TYPES, Descriptor, Manifest, is_referrer_tag
from airgap.model.parity import ParitySpec, StripeLayout
from airgap.model.platform import Platform
from airgap.model.reference import Reference
from airgap.registry.pool import Registries
from airgap.signing import PrivateKey, UnknownSigner, sign
from airgap.sources import OCI_PREFIX, Sources
from airgap.transfer.events import BytesMoved, Notice, Planned, Progress, ignore
from airgap.transfer.plan import ImageRequest, PlannedImage, ReferrerOptions, plan_image
from airgap.workers import worker_pool

SEGMENT_SIZE = 2 * 1024 * 1024
DEFAULT_LEVEL = 2
REF_NAME = "org.opencontainers.image.ref.name"
STATE_VERSION = 1


@dataclass(frozen=True)
class ExportOptions:
    chunk_size: int
    level: int = DEFAULT_LEVEL
    segment_size: int = SEGMENT_SIZE
    jobs: int = 4
    referrers: ReferrerOptions = ReferrerOptions()  # signatures, SBOMs, attestations (all, by default)
    require_signature: bool = False  # refuse images whose top manifest carries no signature artifact
    parity: ParitySpec | None = None  # parity chunks per stripe (--parity), none by default
    exclude: Exclusions | None = None  # a delta: blobs the target has already (--exclude-inventory, --since)
    # what the user named before whole repositories or registries were expanded into tags: a resume compares
    # this, and continues the plan it saved when only the source's tags changed meanwhile (None: the requests)
    selection: dict[str, Any] | None = None


@dataclass
class ExportResult:
    manifest: BundleManifest
    out_dir: Path
    bytes_before_dedup: int
    resumed_bytes: int = 0
    already_complete: bool = False
    notices: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """A member of the stream as saved in the export state (so a resumed run needs no re-planning)."""

    path: str
    size: int
    media_type: str
    digest: str | None
    data: bytes | None = None
    source: str | None = None  # "host/repository" of the registry or "oci:DIR/repository"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "size": self.size, "media_type": self.media_type,
                             "digest": self.digest}
        if self.data is not None:
            d["data"] = base64.b64encode(self.data).decode()
        if self.source is not None:
            d["source"] = self.source
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Entry:
        return cls(d["path"], d["size"], d["media_type"], d.get("digest"),
                   base64.b64decode(d["data"]) if "data" in d else None, d.get("source"))


def _source_ref(entry: _Entry) -> Reference:
    assert entry.source is not None
    host, _, repo = entry.source.partition("|")
    return Reference(host, repo, "latest")


def request_key(requests: list[ImageRequest], options: ExportOptions) -> dict[str, Any]:
    """What must be equal for a rerun to continue an interrupted export."""
    return {
        "images": options.selection if options.selection is not None else _expanded(requests),
        "chunk_size": options.chunk_size, "level": options.level, "segment_size": options.segment_size,
        "referrers": [options.referrers.enabled, list(options.referrers.types)],
        **({"parity": str(options.parity)} if options.parity else {}),
        **({"bases": options.exclude.key()} if options.exclude else {}),
    }


def _expanded(requests: list[ImageRequest]) -> list[list[Any]]:
    return [[str(r.source), [str(p) for p in r.platforms]] for r in requests]


def _load_state(out_dir: Path) -> dict[str, Any]:
    """The interrupted export's saved plan, or a clear error when a crash or a hand damaged it."""
    path = out_dir / STATE_DIR / "state.json"
    try:
        state = json.loads(path.read_bytes())
        if not isinstance(state, dict) or not isinstance(state.get("members"), list):
            raise ValueError("not a plan")
    except (OSError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"the interrupted export in {out_dir} has a damaged state file {path} ({exc})",
                           hint=f"delete {out_dir / STATE_DIR} and the chunk files (the export starts again), or "
                                "choose another directory") from None
    return state


def recorded_level(out_dir: Path) -> int | None:
    """The compression level of the interrupted export in ``out_dir``, else of the complete bundle there; None
    when it holds neither (or they do not say)."""
    for path, keys in ((out_dir / STATE_DIR / "state.json", ("request", "level")),
                       (out_dir / "manifest.json", ("stream", "compression_level"))):
        try:
            value = json.loads(path.read_bytes())
            for k in keys:
                value = value[k]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 19:
            return value
    return None


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key in ("chunk_size", "level", "segment_size", "referrers", "parity", "bases"):
        if old.get(key) != new.get(key):
            return f"{key.replace('_', ' ')} {old.get(key)} there, {new.get(key)} now"
    try:
        there, now = ({name: platforms for name, platforms in d["images"]} for d in (old, new))
    except (KeyError, TypeError, ValueError):
        return "a different list of images"
    if there.keys() == now.keys():
        for name, platforms in now.items():
            if there[name] != platforms:
                return f"platforms of {name}: {', '.join(sorted(there[name])) or 'all'} there, " \
                       f"{', '.join(sorted(platforms)) or 'all'} now"
    return "a different list of images"


def plan_members(sources: Sources, requests: list[ImageRequest], progress: Progress,
                 options: ExportOptions | None = None, relied: dict[Digest, ReliedBlob] | None = None,
                 ) -> tuple[list[_Entry], list[BundleImage], int, list[str], list[BundleReferrer]]:
    """Resolve every image; return the stream's members in order, the images, the bytes before dedup, the
    notices and the referrers (each image's referrers follow its own blobs and manifests in the stream).
    With ``options.exclude``, blobs it lists (but configs) are left out and recorded in ``relied``."""
    referrer_options = options.referrers if options is not None else ReferrerOptions()
    exclude = options.exclude if options is not None else None
    relied = relied if relied is not None else {}
    referrers: list[BundleReferrer] = []
    referrer_keys: set[tuple[str, str, str, str | None]] = set()
    unsigned: list[str] = []
    entries: list[_Entry] = [_Entry("oci-layout", 0, "", None, b'{"imageLayoutVersion":"1.0.0"}')]
    entries[0].size = len(entries[0].data or b"")
    seen: set[str] = set()
    images: list[BundleImage] = []
    index_entries: list[dict[str, Any]] = []
    before = 0
    notices: list[str] = []
    # resolving an image is a chain of small requests (manifests, referrers, cosign tags): resolve several
    # images at once; their order in the bundle stays the order asked for
    with worker_pool(min(8, options.jobs if options else 4), "airgap-plan") as pool:
        plans = list(pool.map(lambda r: plan_image(sources, r, referrer_options), requests))
    for request, planned in zip(requests, plans, strict=True):
        if options is not None and options.require_signature and not planned.signed:
            why = " (its signature covers the full index, which --platform replaces)" if planned.cut_signed else ""
            unsigned.append(f"{request.source}{why}")
        for text in planned.notices:
            notices.append(text)
            progress(Notice(text))
        src = request.source
        source = f"{src.host}|{src.repository}"
        before += _add_members(planned.blobs, planned.manifests, entries, seen, source, exclude, relied)
        from_layout = src.host.startswith(OCI_PREFIX)
        image = BundleImage(
            registry="" if from_layout else src.host, repository=src.repository, tag=src.tag,
            digest=planned.root.digest, media_type=planned.root.media_type,
            platforms=tuple(str(p) for p in planned.platforms),
            source_digest=Digest.parse(planned.source_digest) if planned.source_digest != str(
                planned.root.digest) else None,
            manifests=tuple(m.digest for m in planned.manifests),
            blobs=tuple(b.digest for b in planned.blobs),
        )
        images.append(image)
        before += _add_referrers(planned, image, entries, seen, referrers, referrer_keys, source, exclude, relied)
        index_entries.append({"mediaType": image.media_type, "digest": str(image.digest),
                              "size": planned.root.size, "annotations": {REF_NAME: image.reference}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries},
                       separators=(",", ":")).encode()
    entries.append(_Entry("index.json", len(index), "", None, index))
    if unsigned:
        lead = (f"{counted(len(unsigned), 'image')} {'carries' if len(unsigned) == 1 else 'carry'} no signature: "
                + ", ".join(unsigned))
        types = referrer_options.types
        if types and not set(types) & set(SIGNATURE_TYPES):
            raise InvalidInput(f"{lead}: --referrer-type "
                               f"keeps only {', '.join(types)}, which leaves signatures out",
                               hint="add --referrer-type for your signatures' type, e.g. "
                                    f"{SIGNATURE_TYPES[0]}")
        if all("--platform replaces" in u for u in unsigned):
            raise InvalidInput(lead,
                               hint="export all their platforms, or export without --require-signature")
        raise InvalidInput(lead,
                           hint="sign them upstream (a cosign .sig tag, or a signature referrer such as cosign's "
                                "or Notation's), or export without --require-signature")
    return entries, images, before, notices, referrers


def _add_members(blobs: Sequence[Descriptor], manifests: Sequence[Manifest], entries: list[_Entry], seen: set[str],
                 source: str, exclude: Exclusions | None = None, relied: dict[Digest, ReliedBlob] | None = None) -> int:
    """Append the blobs (streamed from ``source``) and manifests (held) not yet in the stream; return the bytes
    they take before dedup. Blobs that ``exclude`` lists go to ``relied`` instead (configs always travel), and
    do not count: the bundle does not carry them (``inspect`` says "in images" of the same sum)."""
    before = 0
    configs = {m.config.digest for m in manifests if m.config is not None}
    for blob in blobs:
        if exclude is not None and relied is not None and blob.digest not in configs and str(blob.digest) not in seen:
            hit = exclude.relied(blob)
            if hit is not None:
                relied.setdefault(blob.digest, hit)
                continue
        before += blob.size
        if str(blob.digest) not in seen:
            seen.add(str(blob.digest))
            entries.append(_Entry(blob_path(blob.digest.hex), blob.size, blob.media_type, str(blob.digest),
                                  source=source))
    for m in manifests:
        before += m.size
        if str(m.digest) not in seen:
            seen.add(str(m.digest))
            entries.append(_Entry(blob_path(m.digest.hex), m.size, m.media_type, str(m.digest), data=m.data))
    return before


def _add_referrers(planned: PlannedImage, image: BundleImage, entries: list[_Entry], seen: set[str],
                   referrers: list[BundleReferrer], keys: set[tuple[str, str, str, str | None]], source: str,
                   exclude: Exclusions | None = None, relied: dict[Digest, ReliedBlob] | None = None) -> int:
    """Append the referrers' new blobs and manifests to the stream's members; return their bytes before dedup."""
    before = 0
    for ref in planned.referrers:
        key = (image.repository, str(ref.subject), str(ref.root.digest), ref.tag)
        if key in keys:
            continue
        keys.add(key)
        before += _add_members(ref.blobs, ref.manifests, entries, seen, source, exclude, relied)
        referrers.append(BundleReferrer(
            repository=image.repository, subject=ref.subject, digest=ref.root.digest, media_type=ref.root.media_type,
            artifact_type=ref.artifact_type, tag=ref.tag, manifests=tuple(m.digest for m in ref.manifests),
            blobs=tuple(b.digest for b in ref.blobs)))
    return before


def _image_json(i: BundleImage) -> dict[str, Any]:
    return json.loads(BundleManifest("", "", "", "", 1, 4096, 0, (), (), (), (i,)).to_json())["images"][0]  # type: ignore[no-any-return]


def _referrer_json(r: BundleReferrer) -> dict[str, Any]:
    doc = BundleManifest("", "", "", "", 1, 4096, 0, (), (), (), (), referrers=(r,)).to_json()
    return json.loads(doc)["referrers"][0]  # type: ignore[no-any-return]


def _referrer_from_json(d: dict[str, Any]) -> BundleReferrer:
    return BundleReferrer(d["repository"], Digest.parse(d["subject"]), Digest.parse(d["digest"]), d["media_type"],
                          d["artifact_type"], d["tag"], tuple(Digest.parse(x) for x in d["manifests"]),
                          tuple(Digest.parse(x) for x in d["blobs"]))


def _image_from_json(d: dict[str, Any]) -> BundleImage:
    return BundleImage(d["registry"], d["repository"], d["tag"], Digest.parse(d["digest"]), d["media_type"],
                       tuple(d["platforms"]),
                       Digest.parse(d["source_digest"]) if d.get("source_digest") else None,
                       tuple(Digest.parse(x) for x in d["manifests"]), tuple(Digest.parse(x) for x in d["blobs"]))


def _members(entries: list[_Entry], sources: Sources) -> list[Member]:
    out = []
    last = len(entries) - 1
    for n, e in enumerate(entries):
        trailer = END_OF_ARCHIVE if n == last else b""
        digest = Digest.parse(e.digest) if e.digest else None
        if e.data is not None:
            out.append(Member(e.path, e.size, e.media_type, digest, data=e.data, trailer=trailer))
        else:
            assert digest is not None
            opener = sources.blob_opener(_source_ref(e), Descriptor(e.media_type, digest, e.size))
            out.append(Member(e.path, e.size, e.media_type, digest, opener=opener, trailer=trailer))
    return out


def check_output_dir(out_dir: Path) -> str:
    """'new', 'resume', 'complete'; raises when the directory holds something else."""
    if not out_dir.exists():
        return "new"
    if not out_dir.is_dir():
        raise InvalidInput(f"output {out_dir} exists and is not a directory", hint="choose another --output")
    names = {p.name for p in out_dir.iterdir()}
    if (out_dir / STATE_DIR / "state.json").exists():
        return "resume"
    if {"manifest.json", "manifest.json.sig"} <= names:
        return "complete"
    if names - {STATE_DIR}:
        raise InvalidInput(f"output directory {out_dir} is not empty and holds no interrupted export",
                           hint="choose an empty or new directory for the bundle")
    return "new"


def output_status(registries: Registries, out_dir: Path, requests: list[ImageRequest], options: ExportOptions,
                  key: PrivateKey | None) -> str:
    """What an export of ``requests`` does with ``out_dir``: 'new', 'resume' (the interrupted export of the same
    request) or 'complete' (it holds the bundle this run would write: nothing to do). Raises when it holds
    something else. Without ``key`` (a dry run), the key a complete bundle was signed with is not compared."""
    return _found(registries, out_dir, requests, options, key)[0]


def _found(registries: Registries, out_dir: Path, requests: list[ImageRequest], options: ExportOptions,
           key: PrivateKey | None) -> tuple[str, BundleManifest | None, dict[str, Any] | None]:
    """:func:`output_status`, with the complete bundle's manifest or the interrupted export's saved state."""
    status = check_output_dir(out_dir)
    key_now = request_key(requests, options)
    if status == "complete":
        manifest = _complete_manifest(out_dir, key)
        difference = _complete_difference(registries, manifest, requests, options, key)
        if difference is not None:
            raise InvalidInput(
                f"output directory {out_dir} already holds a complete bundle ({manifest.bundle_id}) of other images "
                f"or options ({difference})",
                hint="choose an empty or new directory, or run it with that bundle's images and options")
        return status, manifest, None
    if status == "resume":
        state = _load_state(out_dir)
        if state.get("version") != STATE_VERSION or state.get("request") != key_now:
            raise InvalidInput(
                f"output directory {out_dir} holds an interrupted export of something else "
                f"({_describe_difference(state.get('request', {}), key_now)})",
                hint="run it with the same images and options to finish it, choose another directory, or delete "
                     f"{out_dir / STATE_DIR} and the chunk files beside it to begin this one there")
        return status, None, state
    return status, None, None


def export(registries: Registries, requests: list[ImageRequest], out_dir: Path, key: PrivateKey,
           options: ExportOptions, *, progress: Progress = ignore,
           on_plan: Callable[[list[BundleImage], int, int], None] | None = None) -> ExportResult:
    """Write (or finish) the bundle for ``requests`` in ``out_dir``, signed with ``key``. One run at a time writes
    to a directory: another one is refused with :class:`InUse`."""
    check_output_dir(out_dir)  # a file, or a directory of something else: refused before anything is made
    note = unmounted_note(out_dir)
    if note is not None:  # said before anything is written
        progress(Notice(note))
    refuse_file_size(out_dir, options.chunk_size)
    created = _make_output_dir(out_dir)
    try:
        with exclusive(out_dir, f"another airgap run is writing to output directory {out_dir}"):
            return _export(registries, requests, out_dir, key, options, progress, on_plan)
    except BaseException:
        for directory in created:  # those still empty (nothing was written): leave nothing behind
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _make_output_dir(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and its missing parents; returns those it created, deepest first."""
    missing = [d for d in (out_dir, *out_dir.absolute().parents) if not d.exists()]
    if not missing:
        return []
    try:
        out_dir.mkdir(parents=True)
    except FileExistsError:
        return []  # made meanwhile by another run: the lock sorts it out
    except (NotADirectoryError, FileNotFoundError) as exc:
        raise InvalidInput(f"cannot create output directory {out_dir}: a part of its path is a file",
                           hint="choose another --output") from exc
    except OSError as exc:
        raise os_error(exc, f"creating output directory {out_dir}") from exc
    return missing


def _export(registries: Registries, requests: list[ImageRequest], out_dir: Path, key: PrivateKey,
            options: ExportOptions, progress: Progress,
            on_plan: Callable[[list[BundleImage], int, int], None] | None) -> ExportResult:
    sources = Sources(registries)
    for stale in (*out_dir.glob(".manifest.json.tmp-*"), *out_dir.glob(".manifest.json.sig.tmp-*")):
        stale.unlink(missing_ok=True)  # a run killed while writing the signature or the manifest (we hold the lock)
    status, manifest, state = _found(registries, out_dir, requests, options, key)
    key_now = request_key(requests, options)
    if manifest is not None:  # complete
        # a run killed while removing its state after signing leaves some of it behind
        shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
        return ExportResult(manifest, out_dir, 0, already_complete=True)
    state_path = out_dir / STATE_DIR / "state.json"
    if state is not None:  # resume
        try:
            entries = [_Entry.from_json(e) for e in state["members"]]
            images = [_image_from_json(i) for i in state["images"]]
            referrers = [_referrer_from_json(r) for r in state.get("referrers", [])]
            bases, relied = parse_delta(state.get("delta", {}), set(), InvalidInput)
            before, notices = state["bytes_before_dedup"], state.get("notices", [])
            bundle_id, created = state["bundle_id"], state["created"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInput(f"the interrupted export in {out_dir} has a damaged state file {state_path} ({exc!r})",
                               hint=f"delete {out_dir / STATE_DIR} and the chunk files (the export starts again), "
                                    "or choose another directory") from None
        for text in _source_changes(registries, state.get("expanded"), requests, images, options.jobs):
            progress(Notice(text))
    else:
        by_digest: dict[Digest, ReliedBlob] = {}
        entries, images, before, notices, referrers = plan_members(sources, requests, progress, options, by_digest)
        bases, relied = delta_members(options.exclude, by_digest)
        bundle_id = "b-" + uuid.uuid4().hex
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        _check_space(out_dir, sum(e.size for e in entries), options)  # before anything is written
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / STATE_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"creating {out_dir / STATE_DIR}") from exc
        write_atomic(state_path, json.dumps({
            "version": STATE_VERSION, "request": key_now, "expanded": _expanded(requests),
            "bundle_id": bundle_id, "created": created,
            "bytes_before_dedup": before, "notices": notices,
            "members": [e.to_json() for e in entries], "images": [_image_json(i) for i in images],
            "referrers": [_referrer_json(r) for r in referrers],
            "delta": {"base": [b.to_json() for b in bases], "relies_on": [r.to_json() for r in relied]},
        }).encode())
    total = sum(e.size for e in entries)
    if on_plan is not None:
        on_plan(images, len(entries) - 2, total)
    if state is not None:
        _check_space(out_dir, total, options, resuming=True)  # what the interrupted run has not written yet
    progress(Planned(images=len(images), blobs=len(entries) - 2, total_bytes=total))
    try:
        chunks, spans, resumed = write_stream(
            out_dir, _members(entries, sources), chunk_size=options.chunk_size, segment=options.segment_size,
            level=options.level, jobs=options.jobs, on_bytes=lambda n: progress(BytesMoved(n)))
    except NotFound as exc:
        if status != "resume":
            raise
        raise NotFound(f"{exc.message}: the source no longer holds what this export planned when it began",
                       hint="a tag moved or content was deleted at the source since: export into a new directory",
                       registry=exc.registry, repository=exc.repository, status=exc.status) from exc
    # deterministic: a resumed export computes it again
    parity = write_parity(out_dir, chunks, StripeLayout.plan(len(chunks), options.parity)) if options.parity else None
    blobs = tuple(StoredBlob(Digest.parse(e.digest), e.size, e.media_type, s)
                  for e, s in zip(entries, spans, strict=True) if e.digest)
    files = tuple(StoredFile(e.path, e.size, s) for e, s in zip(entries, spans, strict=True) if not e.digest)
    manifest = BundleManifest(
        bundle_id=bundle_id, created=created, tool=f"airgap {__version__}", key_id=key.public.key_id,
        chunk_size=options.chunk_size, segment_size=options.segment_size, stream_size=sum(c.size for c in chunks),
        chunks=tuple(chunks), files=files, blobs=blobs, images=tuple(images), compression_level=options.level,
        referrers=tuple(referrers), parity=parity, bases=bases, relies_on=relied,
    )
    data = manifest.to_json()
    BundleManifest.parse(data)  # what we write, we can read
    write_atomic(out_dir / "manifest.json.sig", sign(key, data))
    write_atomic(out_dir / "manifest.json", data)
    shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
    return ExportResult(manifest, out_dir, before, resumed_bytes=resumed, notices=notices)


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" …" if len(names) > 3 else "")


def _source_changes(registries: Registries, expanded: Any, requests: list[ImageRequest], images: list[BundleImage],
                    jobs: int) -> list[str]:
    """What changed at the source since the interrupted export planned (it continues that plan): tags that the
    same --repository/--all-repositories now finds, or no longer finds, and tags that name another manifest."""
    out: list[str] = []
    if isinstance(expanded, list):
        then = {str(e[0]) for e in expanded if isinstance(e, list) and e}
        now = {str(r.source) for r in requests}
        added, gone = sorted(now - then), sorted(then - now)
        parts = [f"has {counted(len(added), 'new tag')} not in it ({_some(added)})" if added else "",
                 f"lost {counted(len(gone), 'tag')} that it holds ({_some(gone)})" if gone else ""]
        if added or gone:
            out.append("since this export began, the source " + "; ".join(x for x in parts if x)
                       + ": the export finishes what it began; export into a new directory to take the source as "
                         "it is now")
    tagged = [i for i in images if i.registry and i.tag]

    def moved(img: BundleImage) -> str | None:
        try:
            now = registries.client(img.registry).head_manifest(img.repository, img.tag or "")
        except AirgapError:
            return None  # the export itself will say what is wrong with the source
        was = img.source_digest or img.digest
        return None if now == was else f"{img.reference} now names {now or 'nothing'}"

    with worker_pool(min(8, jobs), "airgap-plan") as pool:
        changed = [m for m in pool.map(moved, tagged) if m]
    if changed:
        out.append(f"since this export began, {'; '.join(changed[:3])}{' …' if len(changed) > 3 else ''}: the bundle "
                   "keeps what the tags named then; export into a new directory for what they name now")
    return out


def delta_members(exclude: Exclusions | None, relied: dict[Digest, ReliedBlob]
                   ) -> tuple[tuple[Base, ...], tuple[ReliedBlob, ...]]:
    """The manifest's ``base`` (only the bases something was left out for) and ``relies_on``."""
    if exclude is None or not relied:
        return (), ()
    used = sorted({r.base for r in relied.values()})
    if len(used) > MAX_BASES:  # a reader refuses more: said before anything is written
        raise InvalidInput(
            f"this delta would rely on blobs delivered by {len(used)} earlier bundles or inventories, more than the "
            f"{MAX_BASES} a bundle may name (a --since chain grows by one a night)",
            hint="export a full bundle (without --since) to begin a new chain, or make the delta against an inventory "
                 "of the target (--exclude-inventory), which is one base")
    renumber = {old: new for new, old in enumerate(used)}
    return (tuple(exclude.bases[i] for i in used),
            tuple(replace(r, base=renumber[r.base]) for r in sorted(relied.values(), key=lambda r: str(r.digest))))


def _check_space(out_dir: Path, total: int, options: ExportOptions, *, resuming: bool = False) -> None:
    """The stream is at most the blobs' size plus a little framing; refuse to start without room for it."""
    done = sum(p.stat().st_size for p in out_dir.glob("chunk-*.bin"))
    stream = int(total * 1.001) + 64 * 1024
    need = stream - done
    if options.parity:  # parity chunks are as large as the stripe's largest data chunk
        layout = StripeLayout.plan(-(-stream // options.chunk_size), options.parity)
        need += layout.stripes * layout.parity * min(stream, options.chunk_size)
    usage = shutil.disk_usage(out_dir)
    if usage.total == 0:  # a file system that does not say its size (fusefat): nothing to check against
        return
    free = usage.free
    if need > free:
        from airgap.inputs import format_size

        raise BundleError(f"{out_dir} has {format_size(free)} free but the bundle needs up to {format_size(need)} more",
                          hint="free some space or choose other media, then run the same command again"
                               + ("; the export resumes from where it stopped" if resuming else ""))


def _complete_manifest(out_dir: Path, key: PrivateKey | None) -> BundleManifest:
    """The manifest of the complete bundle in ``out_dir``, signed by ``key`` (when given) and with every chunk
    of its size; what is damaged there is said, not taken for a bundle with nothing left to do. (A sha256 of
    every chunk would read the whole bundle: `verify` does that.)"""
    if key is not None:
        try:
            manifest, _ = read_signed_manifest(out_dir, [key.public])
        except UnknownSigner:
            manifest = BundleManifest.parse((out_dir / "manifest.json").read_bytes())  # another key: a difference
        except AirgapError as exc:
            raise InvalidInput(f"output directory {out_dir} holds a bundle whose signature does not hold "
                               f"({exc.message})", hint="export into a new directory") from None
    else:
        manifest = BundleManifest.parse((out_dir / "manifest.json").read_bytes())
    reader = BundleReader(manifest, [out_dir])
    every = list(manifest.chunks) + ([c.as_chunk() for c in manifest.parity.chunks] if manifest.parity else [])
    bad = [p for c in every if (p := reader.size_problem(c)) is not None]
    if bad:
        names = ", ".join(f"{p.chunk.name} ({p.kind})" for p in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise InvalidInput(f"output directory {out_dir} holds a complete bundle ({manifest.bundle_id}) with "
                           f"{counted(len(bad), 'chunk')} missing or damaged: {names}",
                           hint="copy them again from a good copy of the bundle (`airgap verify` names every "
                                "damaged one; `airgap repair` rebuilds them if it has parity), or export into a "
                                "new directory")
    return manifest


def _complete_difference(registries: Registries, manifest: BundleManifest, requests: list[ImageRequest],
                         options: ExportOptions, key: PrivateKey | None) -> str | None:
    """How the complete bundle in the output directory differs from the one this run would write; None if it
    does not (nothing to do). Its manifest shows the options; the images are resolved again (their manifests,
    not their blobs) and compared with it: digests, platforms, referrers, what a delta relies on. A tag moved
    at the source since is a difference too."""
    if key is not None and manifest.key_id != key.public.key_id:
        return f"signed by key {manifest.key_id} there, {key.public.key_id} now"
    shown = {"chunk_size": manifest.chunk_size, "level": manifest.compression_level,
             "segment_size": manifest.segment_size}
    key_now = request_key(requests, options)
    for name, value in shown.items():
        if key_now[name] != value:
            return _describe_difference(shown, key_now)
    if not _same_parity(manifest, options):
        return "parity differs"
    relied: dict[Digest, ReliedBlob] = {}
    _, images, _, _, referrers = plan_members(Sources(registries), requests, ignore, options, relied)
    there = {i.reference: i for i in manifest.images}
    for img in images:
        old = there.pop(img.reference, None)
        if old is None:
            return f"{img.reference} is not in it"
        was, now = old.source_digest or old.digest, img.source_digest or img.digest  # at the source
        if was != now:
            return f"{img.reference} is {was} there, {now} now"
        if old != img:
            return f"{img.reference}: platforms {', '.join(old.platforms) or '-'} there, " \
                   f"{', '.join(img.platforms) or '-'} now"
    if there:
        return f"{next(iter(there))} is in it, not asked for now"
    if set(manifest.referrers) != set(referrers):
        return f"{len(manifest.referrers)} referrers there, {len(referrers)} now"
    if {r.digest for r in manifest.relies_on} != set(relied):
        return "what it leaves out as a delta differs"
    return None


def _same_parity(manifest: BundleManifest, options: ExportOptions) -> bool:
    if manifest.parity is None or options.parity is None:
        return manifest.parity is None and options.parity is None
    return manifest.parity.layout.parity == options.parity.per_stripe(manifest.parity.layout.data)


@dataclass
class Expanded:
    """The tags a ``--repository`` or ``--all-repositories`` names, and how many referrer tags it passed over."""

    refs: list[Reference] = field(default_factory=list)
    referrer_tags: int = 0
    untagged: list[str] = field(default_factory=list)  # repositories of the catalog without a tag (not exported)


def tag_pattern(tag_regex: str | None) -> re.Pattern[str] | None:
    if tag_regex is None:
        return None
    try:
        return re.compile(tag_regex)
    except re.error as exc:
        raise InvalidInput(f"--tag-regex {tag_regex!r} is not a valid regular expression ({exc})",
                           hint="write a Python regular expression that matches whole tags, e.g. 'v1\\..*'") from None


def _chosen_tags(tags: Sequence[str], pattern: re.Pattern[str] | None, out: Expanded) -> list[str]:
    """The tags that match, but not those naming referrers (``sha256-<hex>.sig`` …): those travel with the image
    they refer to, as its referrers (or not at all, with --no-referrers), not as images of their own."""
    chosen = []
    for t in sorted(tags):
        if pattern is not None and not pattern.fullmatch(t):
            continue
        if is_referrer_tag(t):
            out.referrer_tags += 1
            continue
        chosen.append(t)
    return chosen


def expand_repository(registries: Registries, name: str, tag_regex: str | None) -> Expanded:
    """Every tag of ``HOST/REPO`` (optionally only tags matching ``tag_regex``), sorted."""
    pattern = tag_pattern(tag_regex)
    if "/" not in name.strip("/"):
        raise InvalidInput(f"--repository takes HOST/REPO, a registry and a repository in it: {name} names no "
                           "repository", hint="for every repository of a registry, use --all-repositories HOST")
    ref = Reference.parse(name, default_tag=None)
    if ref.tag or ref.digest:
        raise InvalidInput(f"--repository takes HOST/REPO without a tag or digest: {name}")
    out = Expanded()
    tags = _chosen_tags(registries.client(ref.host).list_tags(ref.repository), pattern, out)
    if not tags:
        raise InvalidInput(f"{name} has no tags" + (f" matching {tag_regex!r}" if tag_regex else ""),
                           hint="check the repository name and --tag-regex")
    out.refs = [ref.with_tag(t) for t in tags]
    return out


def expand_registry(registries: Registries, host: str, tag_regex: str | None, jobs: int = 8) -> Expanded:
    """Every tag of every repository that ``host``'s catalog lists (the tag lists read on ``jobs`` threads)."""
    pattern = tag_pattern(tag_regex)
    if "/" in host.strip("/"):
        raise InvalidInput(f"--all-repositories takes a registry HOST[:PORT], not a path: {host}",
                           hint="for the tags of one repository, use --repository HOST/REPO")
    client = registries.client(host)
    out = Expanded()
    repos = sorted(client.catalog())
    with worker_pool(min(8, jobs), "airgap-plan") as pool:
        listed = list(pool.map(client.list_tags, repos))
    for repo, tags in zip(repos, listed, strict=True):
        if not tags:
            out.untagged.append(repo)
        out.refs.extend(Reference(host, repo, t) for t in _chosen_tags(tags, pattern, out))
    return out


def make_requests(refs: list[tuple[Reference, tuple[Platform, ...]]]) -> list[ImageRequest]:
    """One request per image, in the order first named. An image named twice with different platforms takes
    them all (and every platform when one of the two names none)."""
    out: dict[str, ImageRequest] = {}
    for ref, platforms in refs:
        first = out.get(str(ref))
        if first is None:
            out[str(ref)] = ImageRequest(ref, ref, platforms)
        elif first.platforms and platforms:
            merged = first.platforms + tuple(p for p in platforms if p not in first.platforms)
            out[str(ref)] = replace(first, platforms=merged)
        elif first.platforms:
            out[str(ref)] = replace(first, platforms=())
    return list(out.values())
