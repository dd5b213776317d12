"""`airgap import` against the real registry: round trip, mapping, dedup, partial import, output, audit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import FaultProxyFactory, RegistryFactory, RunAirgap
from harness import RegistryServer, make_oci_layout, skopeo_copy, skopeo_digest

from airgap.model.bundle import BundleManifest
from scripts.demo_images import DEMO_IMAGE_NAMES


@pytest.fixture
def key(tmp_path: Path, run_airgap: RunAirgap) -> Path:
    path = tmp_path / "signing.key"
    assert run_airgap("keygen", str(path)).returncode == 0
    return path


@pytest.fixture
def bundle(demo_registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> Path:
    out = tmp_path / "bundle"
    r = run_airgap("export", *[f"{demo_registry.host}/{n}" for n in DEMO_IMAGE_NAMES], "--output", str(out),
                   "--key", str(key), "--chunk-size", "1MiB")
    assert r.returncode == 0, r.output
    return out


def do_import(run_airgap: RunAirgap, bundle: Path, key: Path, to: str, tmp_path: Path, *extra: str) -> Any:
    return run_airgap("import", str(bundle), "--to", to, "--pubkey", f"{key}.pub",
                      "--state-dir", str(tmp_path / "state"), *extra)


def test_round_trip_with_prefix_json_and_noop_rerun(bundle: Path, key: Path, registry2: RegistryServer,
                                                    tmp_path: Path, run_airgap: RunAirgap,
                                                    demo_layout: tuple[Path, list[Any]],
                                                    demo_registry: RegistryServer) -> None:
    r = do_import(run_airgap, bundle, key, f"{registry2.host}/mirror", tmp_path, "--json")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["target"] == f"{registry2.host}/mirror"
    digests = {i.name: i.digest for i in demo_layout[1]}
    for img in doc["images"]:
        name = img["source"].removeprefix(f"{demo_registry.host}/")
        assert img["status"] == "ok" and img["digest"] == digests[name]
        assert img["target"] == f"{registry2.host}/mirror/{name}"
        assert img["target_by_digest"] == f"{registry2.host}/mirror/{name.split(':')[0]}@{digests[name]}"
        assert skopeo_digest(img["target"]) == digests[name] == skopeo_digest(img["target_by_digest"])
    # shared base layers go once and are mounted into the other repositories
    assert doc["blobs"]["mounted"] >= 2 and doc["blobs"]["skipped"] == 0
    # a complete import's journal keeps only that (a nightly import would add a line per blob per night)
    (journal,) = (tmp_path / "state" / "imports").glob("*.jsonl")
    assert journal.read_text() == '{"t":"done"}\n'
    again = do_import(run_airgap, bundle, key, f"{registry2.host}/mirror", tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # a run that finds it all there counts it so: every blob already present, every tag unchanged
    done = json.loads(do_import(run_airgap, bundle, key, f"{registry2.host}/mirror", tmp_path, "--json").stdout)
    assert done["already_done"] and all(i["unchanged"] and i["status"] == "ok" for i in done["images"])
    assert done["blobs"] == {"uploaded": 0, "mounted": 0, "skipped": sum(doc["blobs"].values())}
    # the audit log has every run, and no secrets
    audit = [json.loads(line) for line in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert [a["event"] for a in audit] == ["import"] * 3 and all(a["outcome"] == "ok" for a in audit)
    assert audit[0]["bundle_id"] == doc["bundle_id"] and audit[0]["key_id"].startswith("ed25519:")
    assert {i["digest"] for i in audit[0]["images"]} == set(digests.values()) and audit[0]["unchanged"] == 0
    # a run that pushed nothing lists nothing: a search for a digest finds the import that brought it
    assert audit[2]["images"] == [] and audit[2]["unchanged"] == len(digests)


def test_blobs_already_in_target_are_skipped(bundle: Path, key: Path, demo_registry: RegistryServer,
                                             registry2: RegistryServer, tmp_path: Path, run_airgap: RunAirgap) -> None:
    # the target already holds the large image under the same name
    assert run_airgap("copy", f"{demo_registry.host}/demo/large:1.0", f"{registry2.host}/demo/large").returncode == 0
    link = registry2.storage / "docker/registry/v2/repositories/demo/large/_manifests/tags/1.0/current/link"
    os.utime(link, (1_000_000_000, 1_000_000_000))
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--json")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["blobs"]["skipped"] >= 2
    # its tag named it already: not pushed again (the registry rewrites the tag's link on every PUT)
    assert {i["target"] for i in doc["images"] if i["unchanged"]} == {f"{registry2.host}/demo/large:1.0"}
    assert link.stat().st_mtime == 1_000_000_000
    # the same bundle again with another state directory (no journal to say it is done): every tag unchanged
    r = run_airgap("import", str(bundle), "--to", registry2.host, "--pubkey", f"{key}.pub", "--state-dir",
                   str(tmp_path / "other-state"))
    assert r.returncode == 0, r.output
    assert f"{len(DEMO_IMAGE_NAMES)} images in {registry2.host} ({len(DEMO_IMAGE_NAMES)} of them unchanged" in r.stdout
    assert f"unchanged {registry2.host}/demo/large:1.0@" in r.stdout


def test_last_nights_tags_beside_a_new_build_are_left_alone(demo_registry: RegistryServer,
                                                            registry: RegistryServer, registry2: RegistryServer,
                                                            key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """A nightly bundle of a repository: v1 (in the target since last night) and v2 (tonight's build, with a
    layer the target lacks). v1's tag names its image already: not pushed again, though its repository lacked a
    blob of the run (it was, before: every old tag of a repository with a new build, every night)."""
    for tag, src in (("v1", "demo/base-a:1.0"), ("v2", "demo/base-b:1.0")):
        assert run_airgap("copy", f"{demo_registry.host}/{src}", f"{registry.host}/team/app:{tag}").returncode == 0
    assert run_airgap("copy", f"{registry.host}/team/app:v1", f"{registry2.host}/team/app:v1").returncode == 0
    link = registry2.storage / "docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link"
    os.utime(link, (1_000_000_000, 1_000_000_000))
    out = tmp_path / "nightly"
    r = run_airgap("export", "--repository", f"{registry.host}/team/app", "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    r = do_import(run_airgap, out, key, registry2.host, tmp_path, "--json")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["blobs"]["uploaded"] >= 1  # v2's own layer: the repository lacked a blob of the run
    assert {i["target"].rsplit(":", 1)[1]: i["unchanged"] for i in doc["images"]} == {"v1": True, "v2": False}
    assert link.stat().st_mtime == 1_000_000_000
    assert skopeo_digest(f"{registry2.host}/team/app:v2") == skopeo_digest(f"{demo_registry.host}/demo/base-b:1.0")


def test_partial_import_reads_only_its_chunks(bundle: Path, key: Path, registry2: RegistryServer, tmp_path: Path,
                                              run_airgap: RunAirgap, demo_registry: RegistryServer) -> None:
    m = BundleManifest.parse((bundle / "manifest.json").read_bytes())
    base_a = next(i for i in m.images if i.repository == "demo/base-a")
    needed = {m.chunks[c].name for c in m.chunks_of_image(base_a)}
    for c in m.chunks:
        if c.name not in needed:
            (bundle / c.name).unlink()
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--image", "demo/base-a:1.0")
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{registry2.host}/demo/base-a:1.0") == str(base_a.digest)
    catalog = registry2.client().get("/v2/_catalog").json()["repositories"]
    assert catalog == ["demo/base-a"]
    # without --image the missing chunks are named with the images that need them
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path)
    assert r.returncode != 0 and "missing" in r.stderr and "demo/large:1.0" in r.stderr
    assert "can be imported now with --image" in r.stderr


def test_unknown_image_selection(bundle: Path, key: Path, registry2: RegistryServer, tmp_path: Path,
                                 run_airgap: RunAirgap) -> None:
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--image", "demo/nope:1.0")
    assert r.returncode == 2 and "has no image 'demo/nope:1.0'" in r.stderr


def test_clashing_targets_refused_unless_source_host_kept(registry_factory: RegistryFactory, key: Path,
                                                          tmp_path: Path, run_airgap: RunAirgap) -> None:
    one, two, target = registry_factory(), registry_factory(), registry_factory()
    for reg, seed in ((one, "one"), (two, "two")):
        img = make_oci_layout(tmp_path / f"layout-{seed}", tag="v1", seed=seed)
        skopeo_copy(img.ref, f"docker://{reg.host}/team/app:v1")
    out = tmp_path / "bundle"
    r = run_airgap("export", f"{one.host}/team/app:v1", f"{two.host}/team/app:v1", "--output", str(out),
                   "--key", str(key))
    assert r.returncode == 0, r.output
    r = do_import(run_airgap, out, key, target.host, tmp_path)
    assert r.returncode == 2 and f"would both land on {target.host}/team/app:v1" in r.stderr
    assert "--keep-source-host" in r.stderr
    assert target.client().get("/v2/_catalog").json()["repositories"] == []
    r = do_import(run_airgap, out, key, f"{target.host}/dr", tmp_path, "--keep-source-host")
    assert r.returncode == 0, r.output
    for reg in (one, two):
        host_part = reg.host.replace(":", "-")
        assert skopeo_digest(f"{target.host}/dr/{host_part}/team/app:v1") == skopeo_digest(f"{reg.host}/team/app:v1")


def test_digest_only_images_stay_digest_references(demo_registry: RegistryServer, registry2: RegistryServer,
                                                   key: Path, tmp_path: Path, run_airgap: RunAirgap,
                                                   demo_layout: tuple[Path, list[Any]]) -> None:
    digest = next(i.digest for i in demo_layout[1] if i.name == "demo/multi:1.0")
    out = tmp_path / "bundle"
    r = run_airgap("export", f"{demo_registry.host}/demo/multi@{digest}", "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    r = do_import(run_airgap, out, key, registry2.host, tmp_path, "--json")
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["images"][0]["target"] == f"{registry2.host}/demo/multi@{digest}"
    assert skopeo_digest(f"{registry2.host}/demo/multi@{digest}") == digest
    assert not registry2.client().get("/v2/demo/multi/tags/list").json().get("tags")
    r = do_import(run_airgap, out, key, f"{registry2.host}/again", tmp_path)  # the text says the reference once
    assert r.returncode == 0 and f"imported  {registry2.host}/again/demo/multi@{digest}\n" in r.stdout, r.stdout


def test_disaster_recovery_whole_registry(demo_registry: RegistryServer, registry2: RegistryServer, key: Path,
                                          tmp_path: Path, run_airgap: RunAirgap) -> None:
    out = tmp_path / "backup"
    r = run_airgap("export", "--all-repositories", demo_registry.host, "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    r = do_import(run_airgap, out, key, registry2.host, tmp_path)
    assert r.returncode == 0, r.output
    src = demo_registry.client()
    dst = registry2.client()
    repos = src.get("/v2/_catalog").json()["repositories"]
    assert dst.get("/v2/_catalog").json()["repositories"] == repos
    for repo in repos:
        tags = src.get(f"/v2/{repo}/tags/list").json()["tags"]
        assert dst.get(f"/v2/{repo}/tags/list").json()["tags"] == tags
        for tag in tags:
            want = skopeo_digest(f"{demo_registry.host}/{repo}:{tag}")
            assert skopeo_digest(f"{registry2.host}/{repo}:{tag}") == want


def test_dry_run_pushes_nothing(bundle: Path, key: Path, registry2: RegistryServer, tmp_path: Path,
                                run_airgap: RunAirgap) -> None:
    r = do_import(run_airgap, bundle, key, f"{registry2.host}/x", tmp_path, "--dry-run")
    assert r.returncode == 0, r.output
    assert f"-> {registry2.host}/x/demo/large:1.0" in r.stdout
    assert registry2.client().get("/v2/_catalog").json()["repositories"] == []
    # a chunk of the wrong size is seen without reading it, in the text and the JSON
    m = BundleManifest.parse((bundle / "manifest.json").read_bytes())
    chunk = bundle / m.chunks[1].name
    with chunk.open("r+b") as f:
        f.truncate(10)
    r = do_import(run_airgap, bundle, key, f"{registry2.host}/x", tmp_path, "--dry-run")
    assert r.returncode == 0 and f"DAMAGED {chunk.name} (truncated, 10 of {m.chunks[1].size} bytes)" in r.stdout
    r = do_import(run_airgap, bundle, key, f"{registry2.host}/x", tmp_path, "--dry-run", "--json")
    rows = json.loads(r.stdout)["images"]
    assert any(row["damaged_chunks"] == [{"name": chunk.name, "problem": "truncated",
                                          "detail": f"10 of {m.chunks[1].size} bytes"}] for row in rows), rows
    # a refusal with --json still prints a document (one), with the error and its exit code; a dry run too
    chunk.unlink()
    for extra in ((), ("--dry-run",)):
        r = do_import(run_airgap, bundle, key, f"{registry2.host}/x", tmp_path, "--json", *extra)
        assert r.returncode == 6, r.output
        doc = json.loads(r.stdout)
        assert doc["exit_code"] == 6 and f"{chunk.name}" in doc["error"] and doc["bundle_id"] == m.bundle_id


def test_insecure_skip_signature_is_loud_and_audited(bundle: Path, registry2: RegistryServer, tmp_path: Path,
                                                     run_airgap: RunAirgap) -> None:
    sig = json.loads((bundle / "manifest.json.sig").read_bytes())
    r = run_airgap("import", str(bundle), "--to", f"{registry2.host}/skipped", "--insecure-skip-signature",
                   "--state-dir", str(tmp_path / "state"), "--image", "demo/base-a:1.0")
    assert r.returncode == 0, r.output  # the record names the key the signature file claims, unverified
    assert json.loads((tmp_path / "state" / "audit.jsonl").read_text())["claimed_key_id"] == sig["key_id"]
    (tmp_path / "state" / "audit.jsonl").unlink()
    (bundle / "manifest.json.sig").unlink()
    r = run_airgap("import", str(bundle), "--to", registry2.host, "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2 and "--pubkey" in r.stderr
    r = run_airgap("import", str(bundle), "--to", registry2.host, "--insecure-skip-signature",
                   "--state-dir", str(tmp_path / "state"), "--image", "demo/base-a:1.0")
    assert r.returncode == 0, r.output
    assert "NOT checked" in r.stderr
    records = [json.loads(x) for x in (tmp_path / "state" / "audit.jsonl").read_text().splitlines()]
    assert records[-1]["insecure_skip_signature"] is True and records[-1]["outcome"] == "ok"
    assert records[0]["outcome"] == "failed"
    assert records[-1]["bundle_dir"] == str(bundle.absolute())
    # an import that could not be recorded does not start
    r = run_airgap("import", str(bundle), "--to", f"{registry2.host}/unlogged", "--insecure-skip-signature",
                   "--state-dir", str(tmp_path / "state"), "--audit-log", str(bundle / "manifest.json" / "x"))
    assert r.returncode == 2 and "cannot write the audit log" in r.stderr, r.output
    assert not [x for x in registry2.client().get("/v2/_catalog").json()["repositories"] if "unlogged" in x]


def test_import_from_copied_media_dirs(bundle: Path, key: Path, registry2: RegistryServer, tmp_path: Path,
                                       run_airgap: RunAirgap) -> None:
    disc1, disc2 = tmp_path / "disc1", tmp_path / "disc2"
    disc1.mkdir()
    disc2.mkdir()
    chunks = sorted(bundle.glob("chunk-*.bin"))
    for c in chunks[: len(chunks) // 2]:
        shutil.move(c, disc1 / c.name)
    for c in chunks[len(chunks) // 2:]:
        shutil.move(c, disc2 / c.name)
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--media", str(disc1), "--media", str(disc2))
    assert r.returncode == 0, r.output
    v = run_airgap("verify", str(bundle), "--pubkey", f"{key}.pub", "--media", str(disc1), "--media", str(disc2))
    assert v.returncode == 0, v.output
    # the rerun of a complete import needs no chunk: "nothing to do" with a disc left out
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--media", str(disc1))
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.output


def test_an_image_the_credentials_may_not_push_is_left_out_and_named(bundle: Path, key: Path,
                                                                     token_registry: RegistryServer,
                                                                     demo_registry: RegistryServer, tmp_path: Path,
                                                                     run_airgap: RunAirgap) -> None:
    """No push permission on one repository: the other images are imported and recorded (JSON, audit log), and
    the one left out is named (exit 8); the import does not end as if nothing had been done."""
    server = token_registry.token_server
    assert server is not None
    server.policy = lambda user, kind, name, actions, srv: [
        a for a in actions if not (name == "demo/large" and a == "push")]
    r = run_airgap("import", str(bundle), "--to", token_registry.host, "--pubkey", f"{key}.pub", "--state-dir",
                   str(tmp_path / "state"), "--username", "alice", "--json", env={"AIRGAP_PASSWORD": "s3cret-pass"})
    assert r.returncode == 8, r.output
    doc = json.loads(r.stdout)
    status = {i["source"].split("/", 1)[1]: i["status"] for i in doc["images"]}
    assert status.pop("demo/large:1.0") == "failed" and set(status.values()) == {"ok"}, doc["images"]
    assert f"{token_registry.host}/demo/large" in r.stderr.strip().splitlines()[-1], r.stderr
    record = json.loads((tmp_path / "state" / "audit.jsonl").read_text().splitlines()[-1])
    assert sum(i["status"] == "ok" for i in record["images"]) == len(DEMO_IMAGE_NAMES) - 1
    creds = "alice:s3cret-pass"
    assert skopeo_digest(f"{token_registry.host}/demo/base-a:1.0", creds=creds) == \
        skopeo_digest(f"{demo_registry.host}/demo/base-a:1.0")


def test_a_damaged_copy_does_not_hide_a_good_copy_on_other_media(bundle: Path, key: Path, registry2: RegistryServer,
                                                                  demo_registry: RegistryServer, tmp_path: Path,
                                                                  run_airgap: RunAirgap) -> None:
    """The same chunk in the bundle directory (damaged) and on another medium (good), as `repair --output` on
    read-only media or a second copy of the media leaves it: verify and import use the good copy, and verify
    names the damaged one. Both damaged: each copy is named."""
    other = tmp_path / "copy 2"
    other.mkdir()
    chunk = sorted(bundle.glob("chunk-*.bin"))[1]
    shutil.copy(chunk, other / chunk.name)
    data = bytearray(chunk.read_bytes())
    data[100] ^= 1
    chunk.write_bytes(bytes(data))
    v = run_airgap("verify", str(bundle), "--pubkey", f"{key}.pub", "--media", str(other))
    assert v.returncode == 0, v.output
    assert f"note: {chunk.name}: {chunk} is corrupt (sha256 differs); the good copy {other / chunk.name} is used" \
        in v.stderr, v.stderr
    r = do_import(run_airgap, bundle, key, registry2.host, tmp_path, "--media", str(other))
    assert r.returncode == 0, r.output
    for name in DEMO_IMAGE_NAMES:
        assert skopeo_digest(f"{registry2.host}/{name}") == skopeo_digest(f"{demo_registry.host}/{name}")
    (other / chunk.name).write_bytes(b"short")
    v = run_airgap("verify", str(bundle), "--pubkey", f"{key}.pub", "--media", str(other))
    assert v.returncode == 7, v.output
    assert f"{chunk.name}: corrupt (sha256 differs in {chunk}; truncated, 5 of " in v.stderr, v.stderr
    assert f"bytes in {other / chunk.name})" in v.stderr, v.stderr


@pytest.mark.parametrize("slow", [False, True])
def test_slow_media_are_read_once_through_the_page_cache(bundle: Path, key: Path, registry2: RegistryServer,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         demo_layout: tuple[Path, list[Any]], slow: bool) -> None:
    """On a slow medium each chunk's check goes through the page cache and the blob reads find it there (one
    read from the medium, not two); on a fast one both reads go around the cache. Here the medium is made
    "slow" by a threshold above any disk; the import runs in this process to watch its reads."""
    from click.testing import CliRunner

    from airgap.bundle import directio, reader
    from airgap.cli.main import cli

    monkeypatch.setattr(directio, "HASH_BLOCK", 128 * 1024)  # the test bundle's chunks are 1 MiB
    monkeypatch.setattr(directio, "SPEED_PROBE", 128 * 1024)
    monkeypatch.setattr(reader, "SLOW_MEDIA", 1e18 if slow else 0)
    reads: list[tuple[str, int, bool]] = []
    real = directio.read_range

    def spy(path: Path, offset: int, length: int, **kw: Any) -> Any:
        if "cached" in kw:  # the blob reads (the checks call it without)
            reads.append((path.name, length, kw["cached"]))
        return real(path, offset, length, **kw)

    monkeypatch.setattr(directio, "read_range", spy)
    r = CliRunner().invoke(cli, ["import", str(bundle), "--to", registry2.host, "--pubkey", f"{key}.pub",
                                 "--state-dir", str(tmp_path / "state")])
    assert r.exit_code == 0, r.output
    for img in demo_layout[1]:
        assert skopeo_digest(f"{registry2.host}/{img.name}") == img.digest
    m = BundleManifest.parse((bundle / "manifest.json").read_bytes())
    cached = sum(n for _, n, c in reads if c)
    if slow:  # all but what was read before its chunk's check (manifests, read first and checked by digest)
        assert cached >= sum(b.span.length for b in m.blobs) - sum(
            b.span.length for b in m.blobs if "manifest" in b.media_type or "index" in b.media_type)
    else:
        assert reads and cached == 0


def test_many_tags_of_one_repository_push_and_recheck_each_thing_once(
        demo_registry: RegistryServer, registry: RegistryServer, registry2: RegistryServer, key: Path,
        tmp_path: Path, run_airgap: RunAirgap, fault_proxy_factory: FaultProxyFactory) -> None:
    """Six tags in one repository: four of one manifest, two of another, sharing their layers. The import
    pushes each tagged root once, by its tag (no HEAD or PUT by digest first); the no-op rerun asks about
    each tag and each blob once."""
    for n, src in enumerate(["demo/base-a:1.0"] * 4 + ["demo/base-b:1.0"] * 2):
        assert run_airgap("copy", f"{demo_registry.host}/{src}", f"{registry.host}/team/app:v{n}").returncode == 0
    out = tmp_path / "bundle"
    r = run_airgap("export", "--repository", f"{registry.host}/team/app", "--output", str(out), "--key", str(key))
    assert r.returncode == 0, r.output
    manifest = BundleManifest.parse((out / "manifest.json").read_bytes())
    assert len(manifest.images) == 6
    blobs = {d for i in manifest.images for d in i.blobs}
    proxy = fault_proxy_factory(registry2.host)
    r = do_import(run_airgap, out, key, proxy.host, tmp_path)
    assert r.returncode == 0, r.output
    puts = [x.split("?")[0] for x in proxy.requests if x.startswith("PUT /v2/team/app/manifests/")]
    assert sorted(puts) == [f"PUT /v2/team/app/manifests/v{n}" for n in range(6)]
    # no HEAD before the PUTs; after them, each manifest is asked for once by digest (that it can be served)
    requests = list(proxy.requests)
    last_put = max(n for n, x in enumerate(requests) if x.startswith("PUT /v2/team/app/manifests/"))
    asked = [(n, x) for n, x in enumerate(requests) if x.startswith("HEAD /v2/team/app/manifests/")]
    assert all(n > last_put for n, _ in asked), asked
    assert sorted(x for _, x in asked) == sorted({f"HEAD /v2/team/app/manifests/{i.digest}" for i in manifest.images})
    for n, src in enumerate(["demo/base-a:1.0"] * 4 + ["demo/base-b:1.0"] * 2):
        assert skopeo_digest(f"{registry2.host}/team/app:v{n}") == skopeo_digest(f"{demo_registry.host}/{src}")

    proxy.reset_counters()
    again = do_import(run_airgap, out, key, proxy.host, tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output
    heads = [x for x in proxy.requests if x.startswith("HEAD ")]
    assert sorted(heads) == sorted([f"HEAD /v2/team/app/manifests/v{n}" for n in range(6)]
                                   + [f"HEAD /v2/team/app/blobs/{d}" for d in blobs])


def test_layers_larger_than_an_upload_chunk_at_the_default_settings(
        registry_factory: RegistryFactory, key: Path, tmp_path: Path, run_airgap: RunAirgap,
        fault_proxy_factory: FaultProxyFactory) -> None:
    """Incompressible layers of 70 and 40 MiB (the rest of the suite stays at a few MiB), in chunks of 16 MiB,
    imported with the default upload settings: both take the large-blob lanes, the 70 MiB one goes as PATCHes
    of 64 and 6 MiB, the 40 MiB one as one PATCH (above the 32 MiB of a single PUT), and what lands reads
    back through skopeo byte for byte."""
    from scripts.demo_images import build_demo_layout
    from scripts.push_layout import push_layout

    mib = 1024 * 1024
    sources = [(registry_factory(), 70 * mib, 1), (registry_factory(), 40 * mib, 2)]
    layers: dict[str, bytes] = {}
    for reg, size, seed in sources:
        layout = tmp_path / f"layout-{seed}"
        build_demo_layout(layout, large_layer_size=size, seed=seed)
        push_layout(layout, reg.host)
        big = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        assert big.stat().st_size >= size
        layers[reg.host] = big.read_bytes()
    out = tmp_path / "bundle"
    r = run_airgap("export", *[f"{reg.host}/demo/large:1.0" for reg, _, _ in sources], "--output", str(out),
                   "--key", str(key), "--chunk-size", "16MiB")
    assert r.returncode == 0, r.output
    assert len(list(out.glob("chunk-*.bin"))) >= 7
    target = registry_factory()
    proxy = fault_proxy_factory(target.host)
    r = do_import(run_airgap, out, key, f"{proxy.host}/dr", tmp_path, "--keep-source-host")
    assert r.returncode == 0, r.output
    patches = [x for x in proxy.requests if x.startswith("PATCH /v2/dr/")]
    assert len(patches) == 3, proxy.requests
    for reg, _, seed in sources:
        ref = f"{target.host}/dr/{reg.host.replace(':', '-')}/demo/large:1.0"
        assert skopeo_digest(ref) == skopeo_digest(f"{reg.host}/demo/large:1.0")
        pulled = tmp_path / f"pulled-{seed}"
        skopeo_copy(f"docker://{ref}", f"dir:{pulled}")  # skopeo checks every blob's digest as it reads it
        got = max(pulled.iterdir(), key=lambda p: p.stat().st_size)
        assert got.read_bytes() == layers[reg.host]
