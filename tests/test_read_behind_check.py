"""An import reads a chunk while the chunk's whole-file check runs, behind that check, instead of waiting for it:
the uploads start at once, also with chunks of several GiB (a DVD's, a FAT32 stick's). What it sends before the
check has passed is never committed: the stream's last bytes wait for the check, and a chunk found damaged (then
rebuilt from parity, or read from another medium) makes the upload start again from a new session. Every upload
session is journaled as it grows (a power cut loses no more than a PATCH), and a session that may hold a damaged
chunk's bytes is never continued to a commit: a rerun continues one only over chunks that pass their check, and
one the registry refuses (a chunk replaced between the runs) goes again from a new session.

The checks are held at a point (the test releases them) so that every run reads behind a check that has not
ended, whatever the machine's speed."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RegistryServer, skopeo_digest
from test_import_faults import Bundle, _make_bundle, flip_byte

from airgap.bundle import directio
from airgap.bundle.reader import BundleReader, ChunkCorrupt
from airgap.errors import RegistryError
from airgap.importing import Target, import_bundle, map_images
from airgap.journal import ImportJournal
from airgap.registry import Registries, RegistryOptions
from airgap.registry.client import UploadPolicy
from airgap.repair import Repairer
from airgap.streams import ReadAgain
from scripts.demo_images import DEMO_IMAGE_NAMES

MiB = 1024 * 1024
HOLD_AT = 20 * MiB  # past the medium's speed probe (16 MiB after the first 2 MiB block): the reader may follow
DAMAGE_AT = 22 * MiB  # beyond the hold: read (by the check and the stream) only once the test releases the check


@pytest.fixture(scope="module")
def big_chunks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    """The demo images with a 40 MiB layer, in 24 MiB chunks, with one parity chunk."""
    from scripts.demo_images import build_demo_layout

    workdir = tmp_path_factory.mktemp("big-chunks")
    build_demo_layout(workdir / "layout", large_layer_size=40 * MiB)
    yield from _make_bundle(workdir, workdir / "layout", "--chunk-size", "24MiB", "--parity", "1")


@pytest.fixture
def bundle(big_chunks: Bundle, tmp_path: Path) -> Bundle:
    return big_chunks.copy_to(tmp_path / "bundle")


class Hold:
    """Holds the check of one chunk once it has hashed HOLD_AT bytes, until released (or 20 s)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reached = threading.Event()
        self.released = threading.Event()
        self.ended_at = 0.0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def hold() -> None:
            if not self.released.is_set():
                self.reached.set()
                assert self.released.wait(20), "the test never released the check"

        def ended() -> None:
            self.ended_at = time.monotonic()

        in_check(monkeypatch, self.name, HOLD_AT, hold, ended)


def in_check(monkeypatch: pytest.MonkeyPatch, name: str, at: int, action: Callable[[], None],
             ended: Callable[[], None] = lambda: None) -> None:
    """Run ``action()`` in the check of the chunk called ``name`` after each block from its first ``at`` bytes on
    (it may wait, or raise), and ``ended()`` when that check ends."""
    real = directio.sha256_for_reread

    def checking(path: Path, *, keep: bool | None, slow_below: float,
                 progress: Callable[[int, bool | None], object] | None = None) -> tuple[str, bool | None]:
        def seen(done: int, cached: bool | None) -> None:
            if progress is not None:
                progress(done, cached)
            if path.name == name and done >= at:
                action()

        try:
            return real(path, keep=keep, slow_below=slow_below, progress=seen)
        finally:
            if path.name == name:
                ended()

    monkeypatch.setattr(directio, "sha256_for_reread", checking)


def repairing_reader(bundle: Bundle, state: Path) -> tuple[BundleReader, Repairer]:
    """A reader of the bundle as an import makes it, rebuilding damaged chunks from parity into ``state``."""
    repairer = Repairer.for_import(bundle.manifest, [bundle.dir], state)
    assert repairer is not None
    return BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True, repair=repairer.rebuild), repairer


def big_blob(bundle: Bundle) -> tuple[Any, int]:
    """The 40 MiB layer and the index of the chunk its first bytes are in."""
    blob = max(bundle.manifest.blobs, key=lambda b: b.size)
    return blob, blob.span.offset // bundle.manifest.chunk_size


def consume(reader: BundleReader, digest: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Read a blob on a thread: ``state["got"]`` counts the bytes so far, then "sha256" or "error"."""
    state: dict[str, Any] = {"got": 0}

    def run() -> None:
        h = hashlib.sha256()
        try:
            with reader.open_blob(digest) as chunks:
                for part in chunks:
                    h.update(part)
                    state["got"] += len(part)
            state["sha256"] = h.hexdigest()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            state["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, state


def wait_for(cond: Callable[[], bool], what: str, seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.01)


@pytest.mark.parametrize("medium", ["fast", "slow"])
def test_a_blob_is_read_while_its_chunk_is_checked_and_ends_only_once_the_check_passed(
        medium: str, bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fast medium both read it (with O_DIRECT); on a slow one the check goes on through the page cache and
    the blob's reads follow it there (the medium is read once)."""
    if medium == "slow":
        monkeypatch.setattr("airgap.bundle.reader.SLOW_MEDIA", float(1 << 60))
    buffered: list[int] = []
    real_buffered = directio._read_buffered

    def counting(path: Path, offset: int, length: int, block: int, **kw: Any) -> Iterator[bytes]:
        if kw.get("drop_behind"):
            buffered.append(offset)
        return real_buffered(path, offset, length, block, **kw)

    monkeypatch.setattr(directio, "_read_buffered", counting)
    blob, index = big_blob(bundle)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    try:
        t, state = consume(reader, blob.digest)
        assert hold.reached.wait(20)
        wait_for(lambda: state["got"] >= 8 * MiB, f"nothing read while the chunk was checked: {state}")
        time.sleep(0.2)
        assert state["got"] <= HOLD_AT and "sha256" not in state and "error" not in state, state
        assert bool(buffered) == (medium == "slow"), buffered  # behind the check: through the page cache, or not
        hold.released.set()
        t.join(20)
        assert state.get("sha256") == blob.digest.hex, state
    finally:
        hold.released.set()
        reader.close()


@pytest.mark.parametrize("parity", [False, True])
def test_a_chunk_found_damaged_after_it_was_read_fails_the_stream_before_its_end(
        parity: bool, bundle: Bundle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without parity the stream fails with the chunk's error; with it, with ReadAgain, and read again it gives
    the blob from the rebuilt chunk. Either way the last bytes were never handed out."""
    blob, index = big_blob(bundle)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    reader, repairer = (repairing_reader(bundle, tmp_path / "state") if parity else
                        (BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True), None))
    try:
        t, state = consume(reader, blob.digest)
        wait_for(lambda: state["got"] >= 8 * MiB, f"nothing read while the chunk was checked: {state}")
        hold.released.set()
        t.join(20)
        assert isinstance(state.get("error"), ReadAgain if parity else ChunkCorrupt), state
        assert state["got"] < blob.size
        if repairer is None:
            assert bundle.manifest.chunks[index].name in str(state["error"])
        else:
            t, state = consume(reader, blob.digest)  # again: from the rebuilt copy
            t.join(20)
            assert state.get("sha256") == blob.digest.hex, state
            assert repairer.rebuilt == [bundle.manifest.chunks[index].name]
    finally:
        hold.released.set()
        reader.close()
        if repairer is not None:
            repairer.cleanup()


def _import(bundle: Bundle, host: str, state: Path, reader: BundleReader,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, int, float]]]:
    """Import through the library with 1 MiB PATCHes, recording every upload session the journal is given."""
    recorded: list[tuple[str, int, float]] = []
    real_put = ImportJournal.put

    def put(self: ImportJournal, repository: str, digest: str, location: str, offset: int) -> None:
        recorded.append((digest, offset, time.monotonic()))
        real_put(self, repository, digest, location, offset)

    monkeypatch.setattr(ImportJournal, "put", put)
    to = Target.parse(f"{host}/behind")
    with Registries(RegistryOptions(), upload=UploadPolicy(monolithic_max=MiB, chunk_size=MiB)) as registries:
        result = import_bundle(registries, reader, to, map_images(bundle.manifest, to),
                               ImportJournal.open(state, bundle.manifest.bundle_id, str(to)))
    return result, recorded


def count_new_sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The repositories of the upload sessions started from now on, one entry each."""
    from airgap.registry.client import RegistryClient

    started: list[str] = []
    real_start = RegistryClient.start_upload

    def start_upload(self: RegistryClient, repo: str) -> str:
        started.append(repo)
        return real_start(self, repo)

    monkeypatch.setattr(RegistryClient, "start_upload", start_upload)
    return started


def _import_held(bundle: Bundle, host: str, state: Path, reader: BundleReader, hold: Hold,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[tuple[str, int, float]]]:
    """:func:`_import` with the held check released after 1.5 s: by then PATCHes of what was read behind it were
    accepted. The reader is closed after."""
    release = threading.Timer(1.5, hold.released.set)
    release.start()
    try:
        return _import(bundle, host, state, reader, monkeypatch)
    finally:
        release.cancel()
        hold.released.set()
        reader.close()


def test_import_of_a_chunk_damaged_and_rebuilt_while_read_commits_the_right_bytes(
        bundle: Bundle, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Against the real registry: the upload that sent bytes of the damaged copy is given up and done again from
    the rebuilt chunk; skopeo reads every image with the source's digest."""
    blob, index = big_blob(bundle)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    state = tmp_path / "state"
    reader, repairer = repairing_reader(bundle, state)
    result, recorded = _import_held(bundle, registry.host, state, reader, hold, monkeypatch)
    assert not result.failed, result.failed
    assert repairer.rebuilt == [bundle.manifest.chunks[index].name]
    for name in DEMO_IMAGE_NAMES:
        assert skopeo_digest(registry.ref(f"behind/{name}")) == bundle.digests[name], name


@pytest.mark.parametrize("then", ["chunk-replaced", "parity"])
def test_import_of_a_chunk_found_damaged_while_read_commits_nothing_of_it_and_the_rerun_never_continues_it(
        then: str, bundle: Bundle, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The large blob fails with the damaged chunk's error and is not in the target; its upload session, journaled
    as it grew, holds the damaged bytes. The rerun never commits them: with the chunk replaced by a good copy (as
    `verify` tells the operator), it continues the session and the registry refuses the digest, so the blob goes
    again from a new session; with parity, the chunk is rebuilt and the session is not continued at all."""
    from airgap.registry.client import RegistryClient

    blob, index = big_blob(bundle)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    state = tmp_path / "state"
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)  # no parity used: no repair
    result, _ = _import_held(bundle, registry.host, state, reader, hold, monkeypatch)
    failed = {f.target: f.error for f in result.failed}
    assert any(isinstance(e, ChunkCorrupt) and bundle.manifest.chunks[index].name in str(e) for e in failed.values()), \
        failed
    repository = next(i.repository for i in bundle.manifest.images if blob.digest in i.blobs)
    with registry.client() as http:
        assert http.head(f"/v2/behind/{repository}/blobs/{blob.digest}").status_code == 404
    journal = ImportJournal.open(state, bundle.manifest.bundle_id, f"{registry.host}/behind")
    session = journal.sessions.get((f"behind/{repository}", str(blob.digest)))
    assert session is not None and session[1] > DAMAGE_AT - blob.span.offset, session  # past the damaged byte

    started = count_new_sessions(monkeypatch)
    refused: list[tuple[int | None, tuple[str, ...]]] = []
    real_final = RegistryClient._put_final

    def put_final(self: RegistryClient, *args: Any, **kw: Any) -> None:
        try:
            real_final(self, *args, **kw)
        except RegistryError as exc:
            refused.append((exc.status, exc.codes))
            raise

    monkeypatch.setattr(RegistryClient, "_put_final", put_final)
    repairer = None
    if then == "chunk-replaced":
        shutil.copyfile(bundle.pristine / bundle.manifest.chunks[index].name, bundle.chunk(index))
    else:
        repairer = Repairer.for_import(bundle.manifest, [bundle.dir], state)
        assert repairer is not None
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True,
                          repair=repairer.rebuild if repairer else None)
    try:
        result, _ = _import(bundle, registry.host, state, reader, monkeypatch)
    finally:
        reader.close()
    assert not result.failed, result.failed
    # every image had data in the chunk: its config and the large blob's new session
    assert started.count(f"behind/{repository}") == 2, started
    # replaced: the session was continued, and its content refused; parity: it was not continued
    assert refused == ([(400, ("DIGEST_INVALID",))] if then == "chunk-replaced" else []), refused
    for name in DEMO_IMAGE_NAMES:
        assert skopeo_digest(registry.ref(f"behind/{name}")) == bundle.digests[name], name


def test_close_releases_a_read_waiting_behind_a_check_that_will_not_run(bundle: Bundle) -> None:
    """Ctrl-C: the import closes the reader, which drops the checks not started yet; a read waiting behind one of
    them must end (with the dropped check's error) instead of keeping the process alive."""
    from concurrent.futures import CancelledError, Future

    blob, index = big_blob(bundle)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    queued: Future[Any] = Future()  # a check waiting for a free checker thread
    reader._checks[index] = queued
    t, state = consume(reader, blob.digest)
    time.sleep(0.3)
    assert state["got"] == 0 and t.is_alive(), state
    reader.close()
    queued.cancel()  # what closing does to a check not started
    t.join(10)
    assert not t.is_alive(), "the read still waits behind a check that will never run"
    assert isinstance(state.get("error"), CancelledError), state


def _second_medium(bundle: Bundle, index: int, tmp_path: Path) -> Path:
    """A second medium holding a good copy of chunk ``index`` (only)."""
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(bundle.chunk(index), media / bundle.manifest.chunks[index].name)
    return media


def test_a_blob_read_again_from_a_good_copy_fails_with_the_next_chunks_damage_instead_of_reading_again(
        bundle: Bundle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The first copy of the chunk read early is damaged, another medium has a good one: the stream is read again
    (ReadAgain). The next chunk of the blob is damaged on its only medium: the stream read again must fail with that
    chunk's error. (It said ReadAgain each time, for the chunk read early by the first stream: the upload started
    again from a new session forever.)"""
    blob, index = big_blob(bundle)
    size = bundle.manifest.chunk_size
    assert blob.span.end > (index + 1) * size + 2 * MiB  # the blob goes on into the next chunk
    media = _second_medium(bundle, index, tmp_path)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    flip_byte(bundle.chunk(index + 1), MiB)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    reader = BundleReader(bundle.manifest, [bundle.dir, media], verify_chunks=True)
    try:
        t, state = consume(reader, blob.digest)
        wait_for(lambda: state["got"] >= 8 * MiB, f"nothing read while the chunk was checked: {state}")
        hold.released.set()
        t.join(20)
        assert isinstance(state.get("error"), ReadAgain), state  # the damaged first copy was read
        t, state = consume(reader, blob.digest)  # again, from the good copy: the next chunk's damage ends it
        t.join(20)
        assert isinstance(state.get("error"), ChunkCorrupt), state
        assert bundle.manifest.chunks[index + 1].name in str(state["error"]), state
    finally:
        hold.released.set()
        reader.close()


def test_import_with_a_chunk_good_on_another_medium_and_the_next_one_damaged_fails_the_blob_once(
        bundle: Bundle, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Against the real registry (two media, no parity): the large blob fails with the damaged chunk's error after
    at most two upload sessions (it started a new session again and again, sending 24 MiB each time)."""
    from airgap.registry.client import RegistryClient

    blob, index = big_blob(bundle)
    media = _second_medium(bundle, index, tmp_path)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    flip_byte(bundle.chunk(index + 1), MiB)
    started: list[int] = []  # the offsets the large blob's uploads were sent from
    real_patch = RegistryClient._patch_chunks

    def patch_chunks(self: RegistryClient, repository: str, desc: Any, *args: Any, **kwargs: Any) -> None:
        if desc.digest == blob.digest:
            started.append(args[2])
            if len(started) > 8:
                raise RuntimeError("the upload of the large blob started again and again")
        real_patch(self, repository, desc, *args, **kwargs)

    monkeypatch.setattr(RegistryClient, "_patch_chunks", patch_chunks)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    reader = BundleReader(bundle.manifest, [bundle.dir, media], verify_chunks=True)
    result, _ = _import_held(bundle, registry.host, tmp_path / "state", reader, hold, monkeypatch)
    failed = {f.target: f.error for f in result.failed}
    assert failed and all(isinstance(e, ChunkCorrupt) and bundle.manifest.chunks[index + 1].name in str(e)
                          for e in failed.values()), failed
    assert len(started) <= 2, started


def test_import_resuming_a_session_after_a_refused_patch_starts_again_when_its_chunk_was_rebuilt(
        bundle: Bundle, registry: RegistryServer, fault_proxy_factory: Any, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A PATCH refused (503, as a load balancer or a 429 answers) after PATCHes of the damaged copy's bytes were
    accepted: the client continues the session from the registry's offset. Its chunk was rebuilt from parity
    meanwhile: the session holds damaged bytes, and must not be continued (it was: the final PUT was refused with
    DIGEST_INVALID and the image failed, though parity had rebuilt the chunk)."""
    blob, index = big_blob(bundle)
    flip_byte(bundle.chunk(index), DAMAGE_AT)
    past_damage = DAMAGE_AT - blob.span.offset % bundle.manifest.chunk_size + MiB  # a blob offset
    proxy = fault_proxy_factory(registry.host)
    real_put = ImportJournal.put
    refused: list[int] = []

    def put(self: ImportJournal, repository: str, digest: str, location: str, offset: int) -> None:
        if digest == str(blob.digest) and offset >= past_damage and not refused:
            refused.append(offset)
            proxy.http_error(503, match="^PATCH ")  # the next PATCH
        real_put(self, repository, digest, location, offset)

    monkeypatch.setattr(ImportJournal, "put", put)
    hold = Hold(bundle.manifest.chunks[index].name)
    hold.install(monkeypatch)
    state = tmp_path / "state"
    reader, repairer = repairing_reader(bundle, state)
    result, recorded = _import_held(bundle, proxy.host, state, reader, hold, monkeypatch)
    assert refused and proxy.faults_injected == 1, (refused, proxy.fault_log)
    assert not result.failed, result.failed
    assert repairer.rebuilt == [bundle.manifest.chunks[index].name]
    for name in DEMO_IMAGE_NAMES:
        assert skopeo_digest(registry.ref(f"behind/{name}")) == bundle.digests[name], name


@pytest.fixture(scope="module")
def three_chunks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    """The demo images with a 56 MiB layer, in 24 MiB chunks: the layer's second chunk is whole (read early too)."""
    from scripts.demo_images import build_demo_layout

    workdir = tmp_path_factory.mktemp("three-chunks")
    build_demo_layout(workdir / "layout", large_layer_size=56 * MiB)
    yield from _make_bundle(workdir, workdir / "layout", "--chunk-size", "24MiB")


def test_an_import_stopped_while_reading_behind_a_check_journals_the_session_the_registry_holds(
        three_chunks: Bundle, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ctrl-C (the sink's wind-down) while the large blob is read behind the check of its second chunk: the PATCH in
    flight ends, the session is journaled as the registry holds it, and the next run continues it once that chunk
    passes its check (threat model R5b). distribution refuses a session's earlier Location: journaled as it stood
    before that chunk (as a first version did), the session was lost, and the next run sent the blob again from
    byte 0."""
    from airgap.importing import JournaledSink
    from airgap.model.manifest import Descriptor
    from airgap.model.reference import Reference
    from airgap.registry.client import UploadStopped

    bundle = three_chunks
    blob, index = big_blob(bundle)
    size = bundle.manifest.chunk_size
    stop_at = (index + 1) * size - blob.span.offset + 2 * MiB  # a blob offset, 2 MiB into its second chunk
    assert blob.span.end > (index + 1) * size + 4 * MiB
    repository = next(i.repository for i in bundle.manifest.images if blob.digest in i.blobs)
    ref = Reference.parse(f"{registry.host}/behind/{repository}")
    desc = Descriptor(blob.media_type, blob.digest, blob.size)
    state = tmp_path / "state"
    hold = Hold(bundle.manifest.chunks[index + 1].name)
    hold.install(monkeypatch)
    real_put = ImportJournal.put
    sinks: list[JournaledSink] = []

    def put(self: ImportJournal, repository: str, digest: str, location: str, offset: int) -> None:
        real_put(self, repository, digest, location, offset)
        if offset >= stop_at:
            sinks[0].wind_down()  # Ctrl-C: no PATCH after this one

    monkeypatch.setattr(ImportJournal, "put", put)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    policy = UploadPolicy(monolithic_max=MiB, chunk_size=MiB)
    try:
        with Registries(RegistryOptions(), upload=policy) as registries:
            journal = ImportJournal.open(state, bundle.manifest.bundle_id, f"{registry.host}/behind")
            sinks.append(JournaledSink(registries, journal))
            with pytest.raises(UploadStopped):
                sinks[0].push_blob(ref, desc, lambda offset: reader.open_blob(blob.digest, offset), ())
            assert not hold.ended_at, "the check ended before the stop: nothing was read behind it"
            # the journal names the session as the registry holds it
            record = ImportJournal.open(state, bundle.manifest.bundle_id, f"{registry.host}/behind").sessions.get(
                (ref.repository, str(blob.digest)))
            assert record is not None
            uuid = record[0].split("?")[0].rsplit("/", 1)[1]
            data = registry.storage / "docker/registry/v2/repositories" / ref.repository / "_uploads" / uuid
            assert (data / "data").stat().st_size == record[1], record
    finally:
        hold.released.set()
        reader.close()  # as the CLI does: the check in flight ends
    monkeypatch.setattr(ImportJournal, "put", real_put)
    journal = ImportJournal.open(state, bundle.manifest.bundle_id, f"{registry.host}/behind")
    session = journal.sessions.get((ref.repository, str(blob.digest)))
    assert session is not None and session[1] >= stop_at, session
    # the next run continues that session: no new one
    started = count_new_sessions(monkeypatch)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    try:
        with Registries(RegistryOptions(), upload=policy) as registries:
            assert registries.client(registry.host).upload_offset(ref.repository, session[0]) == session[1]
            sink = JournaledSink(registries, journal)
            assert sink.push_blob(ref, desc, lambda offset: reader.open_blob(blob.digest, offset), ()) == "uploaded"
    finally:
        reader.close()
    assert not started, "the next run did not continue the session"
    with registry.client() as http:
        assert http.head(f"/v2/{ref.repository}/blobs/{blob.digest}").status_code == 200


def test_a_chunk_check_stopped_by_a_read_error_is_not_a_passed_one(
        bundle: Bundle, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The check of the chunk read early stops with an I/O error (a bad sector): the blob read behind it fails,
    and the chunk does not count as passed (it did: the check ended without a problem to return, and a session of
    what was read behind it could be continued unchecked); the rerun completes."""
    import errno

    blob, index = big_blob(bundle)
    real = directio.sha256_for_reread

    def bad_sector() -> None:
        time.sleep(1.0)  # meanwhile PATCHes of what was read behind the check are accepted
        raise OSError(errno.EIO, "Input/output error")

    in_check(monkeypatch, bundle.manifest.chunks[index].name, HOLD_AT, bad_sector)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    try:
        result, _ = _import(bundle, registry.host, tmp_path / "state", reader, monkeypatch)
        assert index not in reader._clean
    finally:
        reader.close()
    assert result.failed
    monkeypatch.setattr(directio, "sha256_for_reread", real)
    reader = BundleReader(bundle.manifest, [bundle.dir], verify_chunks=True)
    try:
        result, _ = _import(bundle, registry.host, tmp_path / "state", reader, monkeypatch)
    finally:
        reader.close()
    assert not result.failed, result.failed
    for name in DEMO_IMAGE_NAMES:
        assert skopeo_digest(registry.ref(f"behind/{name}")) == bundle.digests[name], name
