"""Where earlier imports put each blob: a hint file that damage or hostile content cannot turn into a bad request."""

from __future__ import annotations

import stat
from pathlib import Path

from airgap.journal import KnownBlobs

D1, D2, D3 = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


def test_the_latest_repository_per_blob_survives_a_reopen_and_damage_is_skipped(tmp_path: Path) -> None:
    known = KnownBlobs.open(tmp_path, "registry.internal:5000")
    known.add(D1, "mirror/team/app")
    known.add(D2, "mirror/team/app")
    known.add(D1, "mirror/team/web")
    path = known.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open("a") as f:  # a torn last line, names no registry accepts, a query string
        f.write(f"{D3} ../../etc\n{D3} Team/App\n{D3} a/b?mount=x\nsha256:zz x\n{D3} half-writ")
    again = KnownBlobs.open(tmp_path, "registry.internal:5000")
    assert again.where == {D1: "mirror/team/web", D2: "mirror/team/app", D3: "half-writ"}
    assert KnownBlobs.open(tmp_path, "other:5000").where == {}  # per registry


def test_the_file_is_compacted_when_it_holds_far_more_lines_than_blobs(tmp_path: Path) -> None:
    """Every import appends where blobs went (a base layer in a thousand repositories, every night): on open, a
    file with many superseded lines is rewritten with the latest one per blob."""
    known = KnownBlobs.open(tmp_path, "registry.internal:5000")
    for n in range(1200):
        known.add(D1 if n % 2 else D2, f"mirror/app{n}")
    assert len(known.path.read_text().splitlines()) == 1200
    again = KnownBlobs.open(tmp_path, "registry.internal:5000")
    assert again.where == {D1: "mirror/app1199", D2: "mirror/app1198"}
    assert sorted(again.path.read_text().splitlines()) == [f"{D1} mirror/app1199", f"{D2} mirror/app1198"]
    assert stat.S_IMODE(again.path.stat().st_mode) == 0o600
    assert KnownBlobs.open(tmp_path, "registry.internal:5000").where == again.where
    # a dry run reads it without rewriting it
    for n in range(1200):
        again.add(D1 if n % 2 else D2, f"mirror/web{n}")
    size = again.path.stat().st_size
    assert KnownBlobs.open(tmp_path, "registry.internal:5000", compact=False).where == {
        D1: "mirror/web1199", D2: "mirror/web1198"}
    assert again.path.stat().st_size == size


def test_a_relied_on_blob_found_in_the_target_repository_is_not_asked_for_again(tmp_path: Path) -> None:
    """check_relied HEADs each relied-on blob first; the transfer then takes its answer (a delta of a registry
    with 800 repositories asked 2,800 HEADs twice), and records the blob as committed."""
    from airgap.importing import JournaledSink
    from airgap.journal import ImportJournal
    from airgap.model.digest import Digest
    from airgap.model.manifest import Descriptor
    from airgap.model.reference import Reference

    class NoClient:
        def client(self, host: str) -> None:
            raise AssertionError("the registry was asked again")

    digest = Digest.parse(D1)
    journal = ImportJournal.open(tmp_path, "b-1", "reg:5000")
    known = KnownBlobs.open(tmp_path, "reg:5000")
    sink = JournaledSink(NoClient(), journal, {digest: ["mirror/team/app"]}, known)  # type: ignore[arg-type]
    target = Reference("reg:5000", "mirror/team/app", "v1")
    opener = None
    assert sink.push_blob(target, Descriptor("x", digest, 5), opener, ()) == "skipped"  # type: ignore[arg-type]
    assert ("mirror/team/app", D1) in journal.blobs and known.get(D1) == "mirror/team/app"
