"""`airgap keygen / export / verify / inspect` against the real registry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import AIRGAP, RegistryFactory, RunAirgap, started
from harness import RegistryServer, skopeo_copy, skopeo_digest

from airgap.bundle.reader import BundleReader, read_signed_manifest
from airgap.layout import LayoutSource
from airgap.model.bundle import BundleManifest
from airgap.signing import load_public_key
from scripts.demo_images import DEMO_IMAGE_NAMES

MiB = 1024 * 1024
OCI_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json")


@pytest.fixture
def key(tmp_path: Path, run_airgap: RunAirgap) -> Path:
    path = tmp_path / "keys" / "signing.key"
    path.parent.mkdir()
    r = run_airgap("keygen", str(path))
    assert r.returncode == 0, r.output
    return path


def export_demo(run_airgap: RunAirgap, reg: Any, key: Path, out: Path, *extra: str) -> Any:
    refs = [f"{reg.host}/{n}" for n in DEMO_IMAGE_NAMES]
    return run_airgap("export", *refs, "--output", str(out), "--key", str(key), "--chunk-size", "1MiB", *extra)


def chunk_files(d: Path) -> list[Path]:
    return sorted(d.glob("chunk-*.bin"))


def test_export_verify_extract_and_skopeo(demo_registry: RegistryServer, registry2: RegistryServer, key: Path,
                                          tmp_path: Path, run_airgap: RunAirgap,
                                          demo_layout: tuple[Path, list[Any]]) -> None:
    out = tmp_path / "bundle"
    r = export_demo(run_airgap, demo_registry, key, out)
    assert r.returncode == 0, r.output
    assert "8 images" in r.stdout and "signed by ed25519:" in r.stdout
    chunks = chunk_files(out)
    assert len(chunks) >= 3
    assert all(c.stat().st_size == MiB for c in chunks[:-1]) and 0 < chunks[-1].stat().st_size <= MiB
    assert sorted(p.name for p in out.iterdir()) == sorted([c.name for c in chunks] +
                                                           ["manifest.json", "manifest.json.sig"])
    v = run_airgap("verify", str(out), "--pubkey", f"{key}.pub")
    assert v.returncode == 0, v.output
    assert "OK" in v.stdout

    # cat + zstd -d + tar -x gives a plain OCI layout
    layout = tmp_path / "extracted"
    layout.mkdir()
    subprocess.run(f"cat {' '.join(map(str, chunks))} | zstd -d -q | tar -x -C {layout}", shell=True, check=True)
    index = json.loads((layout / "index.json").read_text())
    names = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    digests = {i.name: i.digest for i in demo_layout[1]}
    for name in DEMO_IMAGE_NAMES:
        entry = names[f"{demo_registry.host}/{name}"]
        assert entry["digest"] == digests[name]
        # every blob is a file whose sha256 is its name
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # skopeo copies it into a registry with the original digests (skopeo 1.9's oci: transport only finds
    # OCI-typed entries by name; the Docker-typed images are read back with airgap's own layout reader)
    for name in DEMO_IMAGE_NAMES:
        entry = names[f"{demo_registry.host}/{name}"]
        if entry["mediaType"] in OCI_TYPES:
            skopeo_copy(f"oci:{layout}:{demo_registry.host}/{name}", f"docker://{registry2.host}/{name}")
            assert skopeo_digest(f"{registry2.host}/{name}") == digests[name]
        else:
            source = LayoutSource(layout)
            m = source.get_manifest(source.reference(f"{demo_registry.host}/{name}"), entry["digest"])
            assert str(m.digest) == digests[name]


def test_export_is_reproducible(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                run_airgap: RunAirgap) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert export_demo(run_airgap, demo_registry, key, a).returncode == 0
    assert export_demo(run_airgap, demo_registry, key, b).returncode == 0
    assert [p.read_bytes() for p in chunk_files(a)] == [p.read_bytes() for p in chunk_files(b)]
    ma = BundleManifest.parse((a / "manifest.json").read_bytes())
    mb = BundleManifest.parse((b / "manifest.json").read_bytes())
    assert ma.chunks == mb.chunks and ma.blobs == mb.blobs and ma.images == mb.images
    assert ma.bundle_id != mb.bundle_id


def test_rerun_of_complete_export_does_nothing(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                               run_airgap: RunAirgap) -> None:
    out = tmp_path / "bundle"
    assert export_demo(run_airgap, demo_registry, key, out).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = export_demo(run_airgap, demo_registry, key, out)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_rerun_without_a_level_takes_the_one_the_bundle_was_begun_with(
        demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """An export begun at level 3 (the default of earlier versions) is finished or checked by the same command
    without --compression-level; an explicit other level is a different bundle."""
    from airgap.export import STATE_DIR, recorded_level

    out = tmp_path / "bundle"
    base = ["export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(out), "--key", str(key)]
    assert run_airgap(*base, "--compression-level", "3").returncode == 0
    assert recorded_level(out) == 3
    again = run_airgap(*base)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
    r = run_airgap(*base, "--compression-level", "2")
    assert r.returncode == 2 and "level 3 there, 2 now" in r.stderr, r.output
    # an interrupted export's state says its level first; a damaged one says nothing
    (out / STATE_DIR).mkdir()
    (out / STATE_DIR / "state.json").write_text('{"request": {"level": 9}}')
    assert recorded_level(out) == 9
    (out / STATE_DIR / "state.json").write_text('{"request": {"level": "high"}}')
    assert recorded_level(out) == 3
    assert recorded_level(tmp_path / "nothing") is None


def test_rerun_into_a_complete_bundle_with_other_options_is_refused(demo_registry: RegistryServer, key: Path,
                                                                    tmp_path: Path, run_airgap: RunAirgap) -> None:
    """The directory holds the bundle this run would write, or the rerun is refused: not "nothing to do" for a
    bundle of other platforms, options, key or images, nor after the tag moved at the source."""
    multi = f"{demo_registry.host}/demo/multi:1.0"
    out = tmp_path / "bundle"
    base = ["export", multi, "--output", str(out), "--key", str(key), "--chunk-size", "1MiB"]
    assert run_airgap(*base, "--platform", "linux/amd64").returncode == 0
    other = tmp_path / "other.key"
    assert run_airgap("keygen", str(other)).returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    amd64 = ["--platform", "linux/amd64"]
    for extra, says in [(["--platform", "linux/arm64"], "platforms linux/amd64 there, linux/arm64 now"),
                        ([], "platforms linux/amd64 there, linux/amd64, linux/arm64 now"),
                        ([*amd64, "--compression-level", "5"], "level 2 there, 5 now"),
                        ([*amd64, "--key", str(other)], "signed by key"),
                        ([*amd64, "--chunk-size", "2MiB"], "chunk size 1048576 there, 2097152 now"),
                        ([*amd64, f"{demo_registry.host}/demo/base-a:1.0"], "demo/base-a:1.0 is not in it")]:
        r = run_airgap(*base, *extra)
        assert r.returncode == 2 and "nothing to do" not in r.output, (extra, r.output)
        assert "already holds a complete bundle" in r.stderr and says in r.stderr, (extra, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    dry_base = ["export", multi, "--output", str(out), "--chunk-size", "1MiB", "--dry-run"]
    dry = run_airgap(*dry_base)  # a dry run tells what the run would do with the directory
    assert dry.returncode == 2 and "already holds a complete bundle" in dry.stderr, dry.output
    dry = run_airgap(*dry_base, *amd64)
    assert dry.returncode == 0 and "already holds this complete bundle: the export would do nothing" in dry.stdout
    again = run_airgap(*base, *amd64)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
    # damaged since: not "nothing to do"
    for damage, says in [("chunk", "1 chunk missing or damaged: chunk-000000.bin (missing)"),
                         ("sig", "whose signature does not hold")]:
        copy = tmp_path / f"damaged-{damage}"
        shutil.copytree(out, copy)
        if damage == "chunk":
            (copy / "chunk-000000.bin").unlink()
        else:
            (copy / "manifest.json").write_bytes((copy / "manifest.json").read_bytes().replace(b'"', b' "', 1))
        r = run_airgap("export", multi, "--output", str(copy), "--key", str(key), "--chunk-size", "1MiB", *amd64)
        assert r.returncode == 2 and says in r.stderr and "nothing to do" not in r.output, r.output
    # the tag moves at the source: the bundle is no longer what this command asks for
    skopeo_copy(f"{demo_registry.host}/demo/base-b:1.0", f"{demo_registry.host}/demo/multi:1.0")
    r = run_airgap(*base, *amd64)
    assert r.returncode == 2 and f"{multi} is sha256:" in r.stderr, r.output


def test_rerun_of_a_complete_export_by_digest_does_nothing(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                                           run_airgap: RunAirgap) -> None:
    digest = skopeo_digest(f"{demo_registry.host}/demo/multi:1.0")
    args = ["export", f"{demo_registry.host}/demo/multi@{digest}", "--output", str(tmp_path / "b"), "--key", str(key)]
    first = run_airgap(*args)
    assert first.returncode == 0, first.output
    assert f"exported {demo_registry.host}/demo/multi@{digest}\n" in first.stdout, first.output  # the digest once
    again = run_airgap(*args)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output


def _wait_for_chunks(out: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(chunk_files(out)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"export ended before writing {n} chunks: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    raise AssertionError("export wrote no chunks in time")


def test_killed_export_resumes_to_identical_bundle(registry_factory: RegistryFactory, key: Path, tmp_path: Path,
                                                   run_airgap: RunAirgap, airgap_env: dict[str, str],
                                                   fault_proxy_factory: Any) -> None:
    from scripts.demo_images import build_demo_layout
    from scripts.push_layout import push_layout

    layout = tmp_path / "layout"
    build_demo_layout(layout, large_layer_size=12 * MiB)
    reg = registry_factory()
    push_layout(layout, reg.host)
    proxy = fault_proxy_factory(reg.host)
    # the bundle names images by the host they came from: export through the proxy both times
    reference = tmp_path / "reference"
    assert export_demo(run_airgap, proxy, key, reference).returncode == 0

    proxy.rate_limit(6 * MiB)  # slow enough to kill it part-way
    out = tmp_path / "bundle"
    args = [*[f"{proxy.host}/{n}" for n in DEMO_IMAGE_NAMES], "--output", str(out), "--key", str(key),
            "--chunk-size", "1MiB"]
    for kill_after in (2, 6):
        proc = subprocess.Popen(AIRGAP + ["export", *args], env=airgap_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            _wait_for_chunks(out, kill_after, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert not (out / "manifest.json").exists()
        assert all(p.stat().st_size == MiB for p in chunk_files(out))  # only complete chunks under final names
    # the unfinished bundle is named as such, with what to do, by the commands that read bundles
    for command in (["inspect", str(out)], ["verify", str(out), "--pubkey", f"{key}.pub"],
                    ["import", str(out), "--to", reg.host, "--pubkey", f"{key}.pub", "--state-dir",
                     str(tmp_path / "state")]):
        r = run_airgap(*command)
        assert r.returncode == 6, r.output
        assert r.stderr.strip() == f"airgap: error: {out} holds an unfinished export: its manifest.json is written " \
                                   "last: run the same `airgap export` again to finish it (it resumes)", r.output
    proxy.rate_limit(None)
    r = run_airgap("export", *args)
    assert r.returncode == 0, r.output
    assert "kept from the interrupted run" in r.stdout
    assert [p.read_bytes() for p in chunk_files(out)] == [p.read_bytes() for p in chunk_files(reference)]
    assert not (out / ".airgap-export").exists()
    assert run_airgap("verify", str(out), "--pubkey", f"{key}.pub").returncode == 0


def test_an_interrupted_registry_export_resumes_its_plan_though_the_source_changed(
        demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap,
        airgap_env: dict[str, str], fault_proxy_factory: Any) -> None:
    """--all-repositories of a busy registry: a tag added and a tag moved while the export was stopped. The rerun
    of the same command finishes what it began (it was refused as "an export of something else", the written
    chunks lost) and says what changed; a damaged plan is named, not an internal error."""
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.rate_limit(512 * 1024)
    out = tmp_path / "bundle"
    args = ["export", "--all-repositories", proxy.host, "--output", str(out), "--key", str(key), "--chunk-size",
            "1MiB"]
    proc = subprocess.Popen(AIRGAP + args, env=airgap_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_chunks(out, 1, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proxy.rate_limit(None)
    src = demo_registry.host
    before = skopeo_digest(f"{src}/demo/base-b:1.0")
    skopeo_copy(f"{src}/demo/base-a:1.0", f"{src}/demo/base-a:2.0")  # a new tag
    skopeo_copy(f"{src}/demo/base-a:1.0", f"{src}/demo/base-b:1.0")  # a moved tag
    state = out / ".airgap-export" / "state.json"
    saved = state.read_bytes()
    state.write_bytes(saved[:100])
    r = run_airgap(*args)
    assert r.returncode == 2 and "has a damaged state file" in r.stderr and r.stderr.count("\n") == 1, r.output
    state.write_bytes(saved)
    r = run_airgap(*args)
    assert r.returncode == 0, r.output
    assert f"has 1 new tag not in it ({proxy.host}/demo/base-a:2.0)" in r.stderr, r.stderr
    assert f"{proxy.host}/demo/base-b:1.0 now names {skopeo_digest(f'{src}/demo/base-a:1.0')}" in r.stderr
    m, _ = read_signed_manifest(out, [load_public_key(Path(f"{key}.pub"))])
    assert str(next(i for i in m.images if i.repository == "demo/base-b").digest) == before  # the plan's
    assert run_airgap("verify", str(out), "--pubkey", f"{key}.pub").returncode == 0
    (out / ".manifest.json.tmp-99999").write_bytes(b"left by a run killed while writing the manifest")
    r = run_airgap(*args)  # complete, but not what the source holds now
    assert r.returncode == 2 and "already holds a complete bundle" in r.stderr, r.output
    assert not (out / ".manifest.json.tmp-99999").exists()


def test_verify_reports_each_damage(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                    run_airgap: RunAirgap) -> None:
    good = tmp_path / "good"
    assert export_demo(run_airgap, demo_registry, key, good).returncode == 0
    pub = f"{key}.pub"

    def damaged(name: str, damage: Any) -> Any:
        d = tmp_path / name
        shutil.copytree(good, d)
        damage(d)
        return run_airgap("verify", str(d), "--pubkey", pub)

    def flip(d: Path) -> None:
        p = chunk_files(d)[1]
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x01
        p.write_bytes(bytes(data))

    r = damaged("flip", flip)
    assert r.returncode == 7 and "chunk-000001.bin: corrupt" in r.stderr and "affects" in r.stderr
    assert f"{demo_registry.host}/demo/large:1.0" in r.stderr

    r = damaged("trunc", lambda d: os.truncate(chunk_files(d)[0], 1000))
    assert r.returncode == 7 and "chunk-000000.bin: truncated (1000 of" in r.stderr

    r = damaged("missing", lambda d: chunk_files(d)[-1].unlink())
    assert r.returncode == 7 and ": missing" in r.stderr

    r = damaged("renamed", lambda d: chunk_files(d)[0].rename(d / "renamed.bin"))
    assert r.returncode == 7 and "chunk-000000.bin: missing (found its content as" in r.stderr
    assert "renamed.bin" in r.stderr

    r = damaged("extra", lambda d: (d / "stray.bin").write_bytes(b"x"))
    assert r.returncode == 0 and "stray.bin is not part of the bundle" in r.stderr

    r = damaged("nosig", lambda d: (d / "manifest.json.sig").unlink())
    assert r.returncode != 0 and "unsigned" in r.stderr

    def edit_manifest(d: Path) -> None:
        p = d / "manifest.json"
        p.write_bytes(p.read_bytes().replace(b'"chunk_size": 1048576', b'"chunk_size": 1048577'))

    r = damaged("edited", edit_manifest)
    assert r.returncode == 6 and "does not match its signature" in r.stderr

    other = tmp_path / "other.key"
    assert run_airgap("keygen", str(other)).returncode == 0
    r = run_airgap("verify", str(good), "--pubkey", f"{other}.pub")
    assert r.returncode == 6 and "ed25519:" in r.stderr
    # any one of several trusted keys will do
    assert run_airgap("verify", str(good), "--pubkey", f"{other}.pub", "--pubkey", pub).returncode == 0
    for r in (run_airgap("verify", str(good), "--pubkey", pub),):
        assert "Traceback" not in r.output


def test_inspect(demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap,
                 demo_layout: tuple[Path, list[Any]]) -> None:
    out = tmp_path / "bundle"
    assert export_demo(run_airgap, demo_registry, key, out).returncode == 0
    r = run_airgap("inspect", str(out), "--json", "--pubkey", f"{key}.pub")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["signature_checked_with"] == doc["key_id"]
    assert len(doc["images"]) == 8 and doc["blobs"] > 8
    multi = next(i for i in doc["images"] if i["repository"] == "demo/multi")
    assert multi["platforms"] == ["linux/amd64", "linux/arm64"]
    text = run_airgap("inspect", str(out))
    assert "signature not checked" in text.stdout and "demo/dockerlist:1.0" in text.stdout


def test_platform_subset_export(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                run_airgap: RunAirgap) -> None:
    out = tmp_path / "bundle"
    dry = run_airgap("export", f"{demo_registry.host}/demo/multi:1.0", "--platform", "linux/arm64", "--output",
                     str(out), "--dry-run")
    assert dry.returncode == 0 and "the index digest changes" in dry.stderr, dry.output  # a dry run says so too
    r = run_airgap("export", f"{demo_registry.host}/demo/multi:1.0", "--platform", "linux/arm64", "--output",
                   str(out), "--key", str(key), "--chunk-size", "1MiB")
    assert r.returncode == 0, r.output
    assert "the index digest changes" in r.stderr
    m, _ = read_signed_manifest(out, [load_public_key(Path(f"{key}.pub"))])
    assert m.images[0].platforms == ("linux/arm64",) and m.images[0].source_digest is not None
    reader = BundleReader(m, [out])
    for b in m.blobs:
        with reader.open_blob(b.digest) as chunks:
            assert sum(len(c) for c in chunks) == b.size


def test_export_from_oci_layout_and_images_file(demo_layout: tuple[Path, list[Any]], key: Path, tmp_path: Path,
                                                run_airgap: RunAirgap) -> None:
    images = tmp_path / "images.yaml"
    images.write_text(f"images:\n  - oci:{demo_layout[0]}:demo/base-a:1.0\n"
                      f"  - ref: oci:{demo_layout[0]}:demo/multi:1.0\n    platforms: [linux/amd64]\n")
    out = tmp_path / "bundle"
    r = run_airgap("export", "--images-file", str(images), "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    m = BundleManifest.parse((out / "manifest.json").read_bytes())
    assert [(i.registry, i.repository, i.tag) for i in m.images] == [("", "demo/base-a", "1.0"),
                                                                     ("", "demo/multi", "1.0")]
    assert len(m.chunks) == 1  # default chunk size: 1 GiB


def test_dry_run_writes_nothing(demo_registry: RegistryServer, tmp_path: Path, run_airgap: RunAirgap) -> None:
    out = tmp_path / "bundle"
    r = run_airgap("export", f"{demo_registry.host}/demo/large:1.0", "--output", str(out), "--dry-run",
                   "--chunk-size", "dvd")
    assert r.returncode == 0, r.output
    assert "1 image," in r.stdout and "(1 dvd disc)" in r.stdout
    assert not out.exists()


def test_an_output_where_no_medium_is_mounted_is_said_before_anything_is_written(
        demo_registry: RegistryServer, key: Path, run_airgap: RunAirgap) -> None:
    """`--output /media/usb/bundle` with no stick at /media/usb would fill the disk under it (and the bundle
    would hide under the stick once mounted): said at once, by the dry run too. (On this machine's /media.)"""
    media = Path("/media")
    if not media.is_dir() or os.path.ismount(media):
        pytest.skip("needs a /media directory with nothing mounted on it")
    spot = media / f"airgap-test-{os.getpid()}-{time.monotonic_ns()}"
    out = spot / "bundle"
    want = f"note: nothing is mounted at {spot}: the bundle goes onto the disk under it, not onto a medium"
    try:
        r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(out), "--dry-run")
        assert r.returncode == 0 and want in " ".join(r.stderr.split()), r.output
        assert not spot.exists()
        r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(out), "--key", str(key))
        assert r.returncode == 0, r.output
        assert " ".join(r.stderr.split()).startswith(f"{want}; if one was meant, stop (Ctrl-C), delete {out}")
        assert (out / "manifest.json").is_file()
    finally:
        shutil.rmtree(spot, ignore_errors=True)
    assert "nothing is mounted" not in run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output",
                                                  str(key.parent / "bundle"), "--dry-run").stderr


def test_repository_and_catalog_exports(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                        run_airgap: RunAirgap) -> None:
    out = tmp_path / "repo"
    r = run_airgap("export", "--repository", f"{demo_registry.host}/demo/multi", "--output", str(out),
                   "--key", str(key))
    assert r.returncode == 0, r.output
    assert [i.tag for i in BundleManifest.parse((out / "manifest.json").read_bytes()).images] == ["1.0"]
    out2 = tmp_path / "all"
    with demo_registry.client() as c:  # a repository of the catalog that holds no tag (a blob alone)
        blob = b"layer pushed by hand"
        location = c.post("/v2/dr/base/layers/blobs/uploads/").headers["location"]
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        assert c.put(f"{location}&digest={digest}", content=blob).status_code == 201
    r = run_airgap("export", "--all-repositories", demo_registry.host, "--output", str(out2), "--key", str(key))
    assert r.returncode == 0, r.output
    assert "note: 1 repository of the catalog holds no tag and is not exported (content reachable by digest " \
           "only): dr/base/layers" in " ".join(r.stderr.split()), r.output
    m = BundleManifest.parse((out2 / "manifest.json").read_bytes())
    assert sorted(f"{i.repository}:{i.tag}" for i in m.images) == sorted(DEMO_IMAGE_NAMES)
    r = run_airgap("export", "--repository", f"{demo_registry.host}/demo/multi", "--tag-regex", "nope.*",
                   "--output", str(tmp_path / "none"), "--key", str(key))
    assert r.returncode == 2 and "no tags matching" in r.stderr
    for args, says in [(["--repository", f"{demo_registry.host}/demo/multi", "--tag-regex", "["],
                        "--tag-regex '[' is not a valid regular expression"),
                       (["--all-repositories", demo_registry.host, "--tag-regex", "("], "is not a valid regular"),
                       ([f"{demo_registry.host}/demo/multi:1.0", "--tag-regex", "v.*"],
                        "--tag-regex applies to --repository and --all-repositories"),
                       (["--repository", demo_registry.host], f"{demo_registry.host} names no repository"),
                       (["--all-repositories", f"{demo_registry.host}/demo"], "takes a registry HOST[:PORT], not a")]:
        r = run_airgap("export", *args, "--output", str(tmp_path / "none"), "--dry-run")
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (args, r.output)


def test_an_image_named_twice_with_different_platforms_takes_both(demo_registry: RegistryServer, tmp_path: Path,
                                                                  run_airgap: RunAirgap) -> None:
    multi = f"{demo_registry.host}/demo/multi:1.0"
    listing = tmp_path / "images.yaml"
    listing.write_text(f"images:\n  - ref: {multi}\n    platforms: [linux/amd64]\n"
                       f"  - ref: {multi}\n    platforms: [LINUX/AArch64]\n")
    r = run_airgap("export", "--images-file", str(listing), "--output", str(tmp_path / "b"), "--dry-run")
    assert r.returncode == 0, r.output
    assert f"{multi}  sha256:" in r.stdout and "linux/amd64, linux/arm64" in r.stdout, r.stdout
    import re

    sizes = re.search(r"([0-9.]+ [KMG]?i?B) before dedup, ([0-9.]+ [KMG]?i?B) after", r.stdout)
    assert sizes and sizes[1] == sizes[2], r.stdout  # one image shares nothing: as a run says (not + index.json)
    r = run_airgap("export", "--images-file", str(listing), multi, "--output", str(tmp_path / "b"), "--dry-run")
    assert r.returncode == 0 and "only platforms" not in r.stderr, r.output  # named once for all platforms


def test_debug_and_quiet_work_after_the_sub_command(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                                   run_airgap: RunAirgap) -> None:
    """Operators append ``--debug`` to the command that failed: it must not be refused as an unknown option."""
    ref = f"{demo_registry.host}/demo/base-a:1.0"
    r = run_airgap("export", ref, "--output", str(tmp_path / "b"), "--key", str(key), "--debug")
    assert r.returncode == 0, r.output
    assert f"GET http://{demo_registry.host}/v2/demo/base-a/manifests/1.0 -> 200" in r.stderr  # exchanges logged
    quiet = run_airgap("export", ref, "--output", str(tmp_path / "q"), "--key", str(key), "-q")
    loud = run_airgap("export", ref, "--output", str(tmp_path / "l"), "--key", str(key))
    assert quiet.returncode == loud.returncode == 0, quiet.output + loud.output
    assert loud.stdout and not quiet.stdout and not quiet.stderr
    assert quiet.stdout == run_airgap("--quiet", "export", ref, "--output", str(tmp_path / "q2"), "--key",
                                      str(key)).stdout
    missing = run_airgap("verify", str(tmp_path), "--pubkey", f"{key}.pub", "--debug")  # no bundle there
    assert missing.returncode == 6 and "Traceback" in missing.stderr, missing.output
    assert "Traceback" not in run_airgap("verify", str(tmp_path), "--pubkey", f"{key}.pub").stderr


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--chunk-size", "10K"], 2, "below the minimum"),
    (["--chunk-size", "lots"], 2, "invalid size"),
])
def test_bad_options(demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap,
                     args: list[str], code: int, needle: str) -> None:
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "b"),
                   "--key", str(key), *args)
    assert r.returncode == code and needle in r.stderr and "Traceback" not in r.output


def test_bad_inputs(demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    base = ["--key", str(key), "--chunk-size", "1MiB"]
    r = run_airgap("export", f"{demo_registry.host}/demo/nope:1.0", "--output", str(tmp_path / "a" / "b"), *base)
    assert r.returncode == 5 and "demo/nope" in r.stderr and "404" in r.stderr
    assert not (tmp_path / "a").exists()  # nothing made for a bundle that was never started
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(busy), *base)
    assert r.returncode == 2 and "is not empty" in r.stderr
    assert (busy / "notes.txt").read_text() == "mine"
    bad = tmp_path / "images.txt"
    bad.write_text(f"{demo_registry.host}/demo/base-a:1.0\n# fine\n{demo_registry.host}/demo/Bad:1.0\n")
    r = run_airgap("export", "--images-file", str(bad), "--output", str(tmp_path / "c"), *base)
    assert r.returncode == 2 and "line 3" in r.stderr
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "d"))
    assert r.returncode == 2 and "--key" in r.stderr
    enc = tmp_path / "enc.key"
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    assert run_airgap("keygen", str(enc), "--passphrase-file", str(pw)).returncode == 0
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "e"),
                   "--key", str(enc))
    assert r.returncode != 0 and "encrypted" in r.stderr
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "e"),
                   "--key", str(enc), env={"AIRGAP_KEY_PASSPHRASE": "wrong"})
    assert r.returncode != 0 and "passphrase" in r.stderr
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "e"),
                   "--key", str(enc), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.output


def test_interrupted_export_of_other_options_is_not_mixed(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                                          run_airgap: RunAirgap, fault_proxy_factory: Any) -> None:
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.http_error(500, times=1000, match=r"GET /v2/demo/large/blobs/")
    out = tmp_path / "bundle"
    args = [f"{proxy.host}/demo/base-a:1.0", f"{proxy.host}/demo/large:1.0", "--output", str(out), "--key", str(key)]
    r = run_airgap("export", *args, "--chunk-size", "1MiB", "--retries", "2")
    assert r.returncode == 5 and "demo/large" in r.stderr and "Traceback" not in r.output
    assert not (out / "manifest.json").exists()
    r = run_airgap("export", *args, "--chunk-size", "2MiB")
    assert r.returncode == 2 and "interrupted export of something else (chunk size 1048576 there" in r.stderr
    proxy.clear()
    r = run_airgap("export", *args, "--chunk-size", "1MiB")
    assert r.returncode == 0, r.output


def test_export_is_audited(demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    log = tmp_path / "audit.jsonl"
    out = tmp_path / "bundle"
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(out), "--key", str(key),
                   "--audit-log", str(log))
    assert r.returncode == 0, r.output
    bad = run_airgap("export", f"{demo_registry.host}/demo/nope:1.0", "--output", str(tmp_path / "b2"),
                     "--key", str(key), "--audit-log", str(log))
    assert bad.returncode == 5
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(x["event"], x["outcome"]) for x in records] == [("export", "ok"), ("export", "failed")]
    manifest = BundleManifest.parse((out / "manifest.json").read_bytes())
    assert records[0]["bundle_id"] == manifest.bundle_id
    assert records[0]["images"][0]["digest"] == str(manifest.images[0].digest)
    assert "demo/nope" in records[1]["error"] and records[1]["user"] and records[1]["host"]
    import pwd

    assert records[0]["user"] == pwd.getpwuid(os.getuid()).pw_name and records[0]["output"] == str(out.absolute())
    # a log that cannot be written: refused before anything is made, in one line (it was an internal error at the
    # end, after the work)
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "b3"), "--key",
                   str(key), "--audit-log", str(log / "x"), env={"LOGNAME": "mallory", "USER": "mallory"})
    assert r.returncode == 2 and f"cannot write the audit log {log / 'x'}" in r.stderr, r.output
    assert r.stderr.count("\n") == 1 and not (tmp_path / "b3").exists()
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(tmp_path / "b3"), "--key",
                   str(key), "--audit-log", str(log), env={"LOGNAME": "mallory", "USER": "mallory"})
    assert r.returncode == 0 and json.loads(log.read_text().splitlines()[-1])["user"] != "mallory"


def test_a_second_export_into_the_same_directory_is_refused_while_the_first_runs(
        demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap,
        airgap_env: dict[str, str], fault_proxy_factory: Any) -> None:
    """Two runs would write the same chunk files (a cron job overlapping a manual run): the second one is refused,
    touches nothing, and the first completes."""
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.rate_limit(2 * MiB)  # the 2 MiB layer: about a second
    out = tmp_path / "bundle"
    args = ["export", *[f"{proxy.host}/{n}" for n in DEMO_IMAGE_NAMES], "--output", str(out), "--key", str(key),
            "--chunk-size", "1MiB"]
    with started(args, airgap_env) as first:
        deadline = time.monotonic() + 30
        while not (out / ".airgap-export").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.02)
        second = run_airgap(*args)
        assert second.returncode == 2 and "Traceback" not in second.output, second.output
        assert f"another airgap run is writing to output directory {out}" in second.stderr
        assert first.poll() is None, "the first run ended before the second started: no overlap was tested"
        out_, err = first.communicate(timeout=120)
    assert first.returncode == 0, out_ + err
    r = run_airgap("verify", str(out), "--pubkey", f"{key}.pub")
    assert r.returncode == 0, r.output


@pytest.mark.parametrize("held", ["/manifests/", "/blobs/"])
def test_ctrl_c_while_the_source_holds_a_request_stops_at_once(
        demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap,
        airgap_env: dict[str, str], fault_proxy_factory: Any, held: str) -> None:
    """Planning resolves several images at once, and blobs are read ahead on several threads: a Ctrl-C while a
    stalled source holds one of those requests stops the run then, not when the request times out (120 s), and
    the next run completes."""
    proxy = fault_proxy_factory(demo_registry.host)
    proxy.stall(60, times=50, match=held)
    out = tmp_path / "bundle"
    args = ["export", *[f"{proxy.host}/{n}" for n in DEMO_IMAGE_NAMES], "--output", str(out), "--key", str(key)]
    with started(args, airgap_env) as proc:
        deadline = time.monotonic() + 20
        while proxy.pending_faults == 50 and time.monotonic() < deadline:  # until a manifest request is held
            time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 5, err
    assert err.strip().splitlines() == ["airgap: interrupted; run the same command again to resume"]
    proxy.clear()
    r = run_airgap(*args)
    assert r.returncode == 0, r.output
    assert run_airgap("verify", str(out), "--pubkey", f"{key}.pub").returncode == 0


def test_unwritable_output_is_a_clear_error(demo_registry: RegistryServer, key: Path, tmp_path: Path,
                                            run_airgap: RunAirgap) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(blocker / "bundle"),
                   "--key", str(key))
    assert r.returncode == 2 and "Traceback" not in r.output and "internal error" not in r.stderr
    assert r.stderr.count("\n") == 1 and f"{blocker}/bundle: a part of its path is a file" in r.stderr
    r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(blocker), "--key", str(key))
    assert r.returncode == 2 and "is a file" in r.stderr and r.stderr.count("\n") == 1
    from test_parity import read_only  # an existing directory on read-only media (an internal error, exit 70)

    media = tmp_path / "media"
    media.mkdir()
    with read_only(media) as ro:
        if ro:
            r = run_airgap("export", f"{demo_registry.host}/demo/base-a:1.0", "--output", str(media), "--key",
                           str(key))
            assert r.returncode == 2 and "permission denied" in r.stderr and r.stderr.count("\n") == 1, r.output
