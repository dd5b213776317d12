"""Deltas against the real registry: inventory, --exclude-inventory, --since, and import's base check."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RegistryFactory, RunAirgap
from tests.harness.registry import RegistryServer
from tests.harness.skopeo import skopeo_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: the bundle compresses it


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(reg: RegistryServer, repo: str, data: bytes) -> None:
    with reg.client() as c:
        resp = c.post(f"/v2/{repo}/blobs/uploads/")
        assert resp.status_code == 202, resp.text
        url = httpx.URL(str(resp.url.join(resp.headers["location"]))).copy_add_param("digest", digest_of(data))
        assert c.put(url, content=data).status_code == 201


def push_image(reg: RegistryServer, repo: str, tag: str, layers: list[bytes]) -> str:
    """An OCI image of ``layers`` (config names the tag, so every tag has its own config)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": f"{repo}:{tag}"}},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(x) for x in layers]}}).encode()
    for blob in [config, *layers]:
        push_blob(reg, repo, blob)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                           "layers": [{"mediaType": LAYER, "digest": digest_of(x), "size": len(x)}
                                      for x in layers]}).encode()
    with reg.client() as c:
        resp = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert resp.status_code == 201, resp.text
    return digest_of(manifest)


def layer(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


BASE, APP1, APP2, WEB, NEW = (layer("base", 600_000), layer("app1", 200_000), layer("app2", 210_000),
                              layer("web", 150_000), layer("new", 50_000))


@pytest.fixture
def key(tmp_path: Path, run_airgap: RunAirgap) -> Path:
    path = tmp_path / "keys" / "k"
    path.parent.mkdir()
    assert run_airgap("keygen", str(path)).returncode == 0
    return path


def export(run_airgap: RunAirgap, key: Path, out: Path, refs: list[str], *extra: str) -> Any:
    r = run_airgap("export", *refs, "--output", str(out), "--key", str(key), "--chunk-size", "1MiB", *extra)
    assert r.returncode == 0, r.output
    return r


def do_import(run_airgap: RunAirgap, bundle: Path, key: Path, to: str, state: Path) -> Any:
    return run_airgap("import", str(bundle), "--to", to, "--pubkey", f"{key}.pub", "--state-dir", str(state))


def stored(bundle: Path) -> set[str]:
    return {b["digest"] for b in json.loads((bundle / "manifest.json").read_bytes())["blobs"]}


def test_delta_round_trip_with_inventory_and_since(registry: RegistryServer, registry2: RegistryServer,
                                                   registry_factory: RegistryFactory, key: Path, tmp_path: Path,
                                                   run_airgap: RunAirgap) -> None:
    src = registry
    v1 = {"team/app:v1": push_image(src, "team/app", "v1", [BASE, APP1]),
          "team/web:v1": push_image(src, "team/web", "v1", [BASE, WEB])}
    full = tmp_path / "v1"
    export(run_airgap, key, full, [f"{src.host}/{r}" for r in v1])
    r = do_import(run_airgap, full, key, f"{registry2.host}/mirror", tmp_path / "state")
    assert r.returncode == 0, r.output

    # the disconnected side takes an inventory (signed) and carries it back
    inv = tmp_path / "inventory.json"
    r = run_airgap("inventory", "--registry", f"{registry2.host}/mirror", "--output", str(inv), "--key", str(key))
    assert r.returncode == 0, r.output
    doc = json.loads(inv.read_bytes())
    assert {(i["repository"], i["tag"], i["digest"]) for i in doc["images"]} == {
        ("team/app", "v1", v1["team/app:v1"]), ("team/web", "v1", v1["team/web:v1"])}
    assert {b["digest"]: b["repositories"] for b in doc["blobs"]}[digest_of(BASE)] == ["team/app", "team/web"]
    assert (tmp_path / "inventory.json.sig").is_file()

    # v2: a changed top layer on the shared base, an image with a new config only, and a new repository
    v2 = {"team/app:v2": push_image(src, "team/app", "v2", [BASE, APP2]),
          "team/web:v2": push_image(src, "team/web", "v2", [BASE, WEB]),
          "team/new:v1": push_image(src, "team/new", "v1", [BASE, NEW])}
    refs = [f"{src.host}/{r}" for r in v2]
    delta = tmp_path / "v2-delta"
    export(run_airgap, key, delta, refs, "--exclude-inventory", str(inv), "--inventory-pubkey", f"{key}.pub")
    have = stored(delta)
    assert digest_of(APP2) in have and digest_of(NEW) in have
    assert digest_of(BASE) not in have and digest_of(WEB) not in have
    m = json.loads((delta / "manifest.json").read_bytes())
    assert [b["kind"] for b in m["base"]] == ["inventory"] and m["base"][0]["id"] == doc["inventory_id"]
    assert {r["digest"] for r in m["relies_on"]} == {digest_of(BASE), digest_of(WEB)}
    full2 = tmp_path / "v2-full"
    export(run_airgap, key, full2, refs)
    delta_size = sum(p.stat().st_size for p in delta.glob("chunk-*"))
    full_size = sum(p.stat().st_size for p in full2.glob("chunk-*"))
    assert delta_size < full_size / 2, (delta_size, full_size)
    shown = run_airgap("inspect", str(delta))
    assert "relies on 2 blobs" in shown.stdout and doc["inventory_id"] in shown.stdout, shown.stdout

    # --since the v1 bundle leaves out the same blobs
    since = tmp_path / "v2-since"
    export(run_airgap, key, since, refs, "--since", str(full))
    assert stored(since) == have
    assert json.loads((since / "manifest.json").read_bytes())["base"][0]["id"] == json.loads(
        (full / "manifest.json").read_bytes())["bundle_id"]

    # a registry without the base: refused before any push, naming the blobs and the base (a dry run too)
    empty = registry_factory()
    r = run_airgap("import", str(delta), "--to", f"{empty.host}/mirror", "--pubkey", f"{key}.pub", "--dry-run")
    assert r.returncode == 8 and "relies on 2 blobs" in r.stderr, r.output
    r = run_airgap("import", str(delta), "--to", f"{registry2.host}/mirror", "--pubkey", f"{key}.pub", "--dry-run")
    assert r.returncode == 0 and "holds every blob this delta relies on" in r.stdout, r.output
    r = do_import(run_airgap, delta, key, f"{empty.host}/mirror", tmp_path / "state-empty")
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "relies on 2 blobs" in line and digest_of(BASE)[:19] in line and doc["inventory_id"] in line, line
    with empty.client() as c:
        assert c.get("/v2/_catalog").json()["repositories"] == []

    # a new repository alone: the base layer is found through the inventory's hints and mounted
    r = run_airgap("import", str(delta), "--to", f"{registry2.host}/mirror", "--pubkey", f"{key}.pub",
                   "--state-dir", str(tmp_path / "state-new"), "--image", "team/new:v1", "--json")
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{registry2.host}/mirror/team/new:v1") == v2["team/new:v1"]
    assert json.loads(r.stdout)["blobs"]["mounted"] == 1, r.stdout

    # the target that has the base: every v2 image complete, with its original digest
    r = do_import(run_airgap, delta, key, f"{registry2.host}/mirror", tmp_path / "state")
    assert r.returncode == 0, r.output
    for ref, digest in v2.items():
        assert skopeo_digest(f"{registry2.host}/mirror/{ref}") == digest
    with registry2.client() as c:  # the new repository got the base by a mount, not an upload
        assert c.head(f"/v2/mirror/team/new/blobs/{digest_of(BASE)}").status_code == 200
    r = do_import(run_airgap, since, key, f"{registry2.host}/mirror", tmp_path / "state")
    assert r.returncode == 0, r.output


def test_since_delta_into_a_target_that_keeps_the_source_host(
        registry: RegistryServer, registry2: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """With --keep-source-host the base's images land below their registry's path component, which a bundle
    base's hints (repositories) lack: the relied-on blobs are found there, and a new repository mounts them."""
    src = registry
    push_image(src, "team/app", "v1", [BASE, APP1])
    full, delta = tmp_path / "v1", tmp_path / "delta"
    export(run_airgap, key, full, [f"{src.host}/team/app:v1"])
    to = f"{registry2.host}/mirror"
    r = run_airgap("import", str(full), "--to", to, "--pubkey", f"{key}.pub", "--keep-source-host")
    assert r.returncode == 0, r.output
    new = push_image(src, "team/new", "v1", [BASE, NEW])
    export(run_airgap, key, delta, [f"{src.host}/team/new:v1"], "--since", str(full))
    assert digest_of(BASE) not in stored(delta)
    r = run_airgap("import", str(delta), "--to", to, "--pubkey", f"{key}.pub", "--keep-source-host", "--json")
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["blobs"]["mounted"] == 1, r.stdout
    host = src.host.replace(":", "-")
    assert skopeo_digest(f"{registry2.host}/mirror/{host}/team/new:v1") == new


def test_a_blob_an_earlier_bundle_put_in_another_repository_is_mounted(
        registry: RegistryServer, registry2: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """Two full bundles (no delta) whose images share a layer, imported one after the other into the same
    registry: the second mounts the shared layer from the repository the first put it in."""
    app = push_image(registry, "team/app", "v1", [BASE, APP1])
    web = push_image(registry, "team/web", "v1", [BASE, WEB])
    one, two = tmp_path / "one", tmp_path / "two"
    export(run_airgap, key, one, [f"{registry.host}/team/app:v1"])
    export(run_airgap, key, two, [f"{registry.host}/team/web:v1"])
    state = tmp_path / "state"
    r = run_airgap("import", str(one), "--to", f"{registry2.host}/m", "--pubkey", f"{key}.pub", "--state-dir",
                   str(state), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["blobs"] == {"uploaded": 3, "mounted": 0, "skipped": 0}
    r = run_airgap("import", str(two), "--to", f"{registry2.host}/m", "--pubkey", f"{key}.pub", "--state-dir",
                   str(state), "--json")
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["blobs"] == {"uploaded": 2, "mounted": 1, "skipped": 0}, r.stdout
    assert skopeo_digest(f"{registry2.host}/m/team/web:v1") == web
    assert skopeo_digest(f"{registry2.host}/m/team/app:v1") == app
    # the hint is only a hint: the blob gone from that repository, the upload happens as before
    other = tmp_path / "state2"
    (other / "imports").mkdir(parents=True)
    for f in (state / "imports").glob("blobs-*.txt"):  # every blob said to be in a repository that has none
        lines = {line.split(" ")[0] + " m/team/gone" for line in f.read_text().splitlines()}
        (other / "imports" / f.name).write_text("\n".join(sorted(lines)) + "\n")
    r = run_airgap("import", str(two), "--to", f"{registry2.host}/n", "--pubkey", f"{key}.pub", "--state-dir",
                   str(other), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["blobs"]["uploaded"] == 3, r.output
    assert skopeo_digest(f"{registry2.host}/n/team/web:v1") == web


def test_a_hint_to_a_repository_the_credentials_may_not_read_falls_back_to_an_upload(
        registry: RegistryServer, token_registry: RegistryServer, key: Path, tmp_path: Path,
        run_airgap: RunAirgap) -> None:
    """A mount names the repository to mount from, and a token that may not pull from it is refused (401): the
    blob is then uploaded, as without the hint."""
    push_image(registry, "team/app", "v1", [BASE, APP1])
    web = push_image(registry, "team/web", "v1", [BASE, WEB])
    one, two = tmp_path / "one", tmp_path / "two"
    export(run_airgap, key, one, [f"{registry.host}/team/app:v1"])
    export(run_airgap, key, two, [f"{registry.host}/team/web:v1"])
    args = ["--to", f"{token_registry.host}/m", "--pubkey", f"{key}.pub", "--state-dir", str(tmp_path / "state"),
            "--username", "alice", "--json"]
    env = {"AIRGAP_PASSWORD": "s3cret-pass"}
    assert run_airgap("import", str(one), *args, env=env).returncode == 0
    server = token_registry.token_server
    assert server is not None
    server.policy = lambda user, kind, name, actions, srv: [] if name == "m/team/app" else list(actions)
    r = run_airgap("import", str(two), *args, env=env)
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["blobs"] == {"uploaded": 3, "mounted": 0, "skipped": 0}, r.stdout
    assert skopeo_digest(f"{token_registry.host}/m/team/web:v1", creds="alice:s3cret-pass") == web


def test_inventory_of_named_repositories_and_its_signature(registry: RegistryServer, key: Path, tmp_path: Path,
                                                          run_airgap: RunAirgap) -> None:
    app = push_image(registry, "dr/team/app", "v1", [BASE, APP1])
    push_image(registry, "dr/team/web", "v1", [BASE, WEB])
    push_image(registry, "other/x", "v1", [NEW])
    inv = tmp_path / "inv.json"
    r = run_airgap("inventory", "--registry", f"{registry.host}/dr", "--repo", "team/app", "--output", str(inv),
                   "--json")
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["images"] == 1 and not json.loads(r.stdout)["signed"]
    doc = json.loads(inv.read_bytes())
    assert doc["prefix"] == "dr" and [(i["repository"], i["digest"]) for i in doc["images"]] == [("team/app", app)]
    assert {b["digest"] for b in doc["blobs"]} == {digest_of(BASE), digest_of(APP1)} | {
        b["digest"] for b in doc["blobs"] if b["size"] < 1000}  # the config
    # a --repo that names no repository with tags (a typo) is refused: its images would go whole in the delta
    typo = tmp_path / "typo.json"
    r = run_airgap("inventory", "--registry", f"http://{registry.host}/dr", "--repo", "team/app", "--repo",
                   "team/apq", "--output", str(typo))
    assert r.returncode == 5 and not typo.exists(), r.output
    assert r.stderr.splitlines() == [f"airgap: error: {registry.host}: no repository dr/team/apq with tagged images: "
                                     "check the --repo names (relative to the prefix): an inventory without them "
                                     "would make the next delta carry their images whole"]
    r = run_airgap("inventory", "--registry", f"{registry.host}/Dr", "--output", str(typo))
    assert r.returncode == 2 and "invalid prefix 'Dr' in --registry" in r.stderr, r.output
    push_image(registry, "sg/team/sigs", "sha256-" + "a" * 64 + ".sig", [NEW])  # a signature's tag, no image
    r = run_airgap("inventory", "--registry", f"{registry.host}/sg", "--repo", "team/sigs", "--output", str(typo))
    assert r.returncode == 5 and "no repository sg/team/sigs with tagged images" in r.stderr, r.output
    # a prefix with nothing under it (a fresh target, or a typo): taken, and said
    r = run_airgap("inventory", "--registry", f"{registry.host}/dr-typo", "--output", str(typo))
    assert r.returncode == 0 and f"{registry.host}/dr-typo holds no repository: the inventory is empty" in r.stderr
    # the whole prefix: the catalog, filtered by the prefix
    r = run_airgap("inventory", "--registry", f"{registry.host}/dr", "--output", str(inv), "--key", str(key))
    assert r.returncode == 0, r.output
    assert {i["repository"] for i in json.loads(inv.read_bytes())["images"]} == {"team/app", "team/web"}
    unsigned = tmp_path / "unsigned.json"  # taken again without --key: no stale signature is left beside it
    (tmp_path / "unsigned.json.sig").write_bytes((tmp_path / "inv.json.sig").read_bytes())
    assert run_airgap("inventory", "--registry", f"{registry.host}/dr", "--output", str(unsigned)).returncode == 0
    assert not (tmp_path / "unsigned.json.sig").exists()
    out = tmp_path / "bundle"
    args = ["export", f"{registry.host}/dr/team/app:v1", "--output", str(out), "--key", str(key),
            "--exclude-inventory", str(inv), "--inventory-pubkey", f"{key}.pub"]
    data = inv.read_bytes()
    inv.write_bytes(data.replace(b'"team/web"', b'"team/wed"'))  # edited after signing
    r = run_airgap(*args)
    assert r.returncode == 6 and "does not match its signature" in r.stderr, r.output  # as a bundle's
    assert not out.exists()
    inv.write_bytes(data)
    r = run_airgap(*args[:-2], "--dry-run")  # signed, but no key given to check it: said so
    assert r.returncode == 0, r.output
    assert f"note: the inventory {inv} is signed, but its signature is not checked" in r.stderr, r.output
    (tmp_path / "inv.json.sig").unlink()
    r = run_airgap(*args)
    assert r.returncode == 6 and "has no signature inv.json.sig" in r.stderr, r.output
    r = run_airgap(*args[:-2])  # without --inventory-pubkey the signature is not required
    assert r.returncode == 0 and "is signed" not in r.stderr, r.output
    assert "delta: relies on 2 blobs" in r.stdout, r.stdout
    assert "days ago" not in r.stderr
    # a month-old inventory: what the target got since travels again, and that is said
    doc = json.loads(unsigned.read_bytes())
    unsigned.write_text(json.dumps({**doc, "created": "2020-01-01T00:00:00Z"}))
    r = run_airgap("export", f"{registry.host}/dr/team/app:v1", "--output", str(tmp_path / "old"),
                   "--exclude-inventory", str(unsigned), "--dry-run")
    assert r.returncode == 0, r.output
    assert f"note: the inventory {unsigned} of {registry.host}/dr was taken " in r.stderr, r.output
    assert "days ago: what the target got since then travels again" in " ".join(r.stderr.split()), r.output
    (tmp_path / "images.txt").write_text("registry.example.com/team/app:1.4\n")
    for wrong in (inv, tmp_path / "images.txt"):  # --since names something that is not a bundle
        r = run_airgap("export", f"{registry.host}/dr/team/app:v1", "--output", str(tmp_path / "x"), "--since",
                       str(wrong), "--dry-run")
        assert r.returncode == 2 and f"--since {wrong}: " in r.stderr and "export it again" not in r.stderr, r.output
        assert r.stderr.count("\n") == 1


def test_ctrl_c_on_inventory_leaves_no_file_and_does_not_speak_of_resuming(
        registry: RegistryServer, tmp_path: Path, airgap_env: dict[str, str], fault_proxy_factory: Any) -> None:
    """inventory keeps nothing to continue from: interrupted, it says so (not "resume") and writes no file."""
    import signal
    import time

    from tests.conftest import started

    push_image(registry, "dr/team/app", "v1", [BASE, APP1])
    proxy = fault_proxy_factory(registry.host)
    proxy.stall(60, times=10, match="/manifests/")
    inv = tmp_path / "inv.json"
    with started(["inventory", "--registry", f"{proxy.host}/dr", "--output", str(inv)], airgap_env) as proc:
        deadline = time.monotonic() + 20
        while proxy.pending_faults == 10 and time.monotonic() < deadline:  # until the manifest GET is held
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["airgap: interrupted; nothing was left half-done: run the same command again"]
    assert not inv.exists() and list(tmp_path.glob("inv.json*")) == []


def test_inventory_where_the_catalog_is_not_allowed(token_registry: RegistryServer, tmp_path: Path,
                                                    run_airgap: RunAirgap) -> None:
    """A token that never grants registry:catalog:*: one line that says to name the repositories with --repo;
    with --repo the inventory is taken (an unknown repository is refused: a typo, most likely)."""
    server = token_registry.token_server
    assert server is not None
    server.policy = lambda user, kind, name, actions, srv: [] if kind == "registry" else list(actions)
    out = tmp_path / "inv.json"
    r = run_airgap("inventory", "--registry", token_registry.host, "--output", str(out))  # no credentials at all
    assert r.returncode == 5 and "airgap login" in r.stderr and "--repo" not in r.stderr, r.output
    env = {"AIRGAP_PASSWORD": "s3cret-pass"}
    r = run_airgap("inventory", "--registry", token_registry.host, "--username", "alice", "--output", str(out),
                   env=env)
    assert r.returncode == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not let us list its repositories" in lines[0] and "--repo" in lines[0], r.stderr
    assert not out.exists()
    r = run_airgap("inventory", "--registry", token_registry.host, "--username", "alice", "--output", str(out),
                   "--repo", "team/app", env=env)
    assert r.returncode == 5 and "no repository team/app with tagged images" in r.stderr, r.output
    assert not out.exists()


def test_a_delta_finds_what_it_relies_on_where_an_earlier_import_put_it(
        registry: RegistryServer, registry2: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """The base went to one prefix, the delta goes to another: the relied-on blobs are in the target registry,
    under the base's prefix, which the state directory's record of earlier imports names (they are mounted)."""
    push_image(registry, "team/app", "v1", [BASE, APP1])
    full, delta = tmp_path / "v1", tmp_path / "delta"
    export(run_airgap, key, full, [f"{registry.host}/team/app:v1"])
    r = do_import(run_airgap, full, key, f"{registry2.host}/a", tmp_path / "state")
    assert r.returncode == 0, r.output
    new = push_image(registry, "team/new", "v1", [BASE, NEW])
    r = export(run_airgap, key, delta, [f"{registry.host}/team/new:v1"], "--since", str(full))
    assert digest_of(BASE) not in stored(delta)
    # what the delta carries, "before dedup" as inspect counts it "in images": not the base it relies on
    carried = re.search(r"([0-9.]+ [KMG]?i?B) before dedup", r.stdout)
    assert carried and f"{carried.group(1)} in images" in run_airgap("inspect", str(delta)).stdout, r.output
    # without that record (another state directory) the delta cannot know: refused before any push
    r = do_import(run_airgap, delta, key, f"{registry2.host}/b", tmp_path / "other-state")
    assert r.returncode == 8 and "relies on 1 blob " in r.stderr, r.output
    r = run_airgap("import", str(delta), "--to", f"{registry2.host}/b", "--pubkey", f"{key}.pub", "--state-dir",
                   str(tmp_path / "state"), "--dry-run")
    assert r.returncode == 0 and "holds every blob this delta relies on" in r.stdout, r.output
    r = run_airgap("import", str(delta), "--to", f"{registry2.host}/b", "--pubkey", f"{key}.pub", "--state-dir",
                   str(tmp_path / "new-state"), "--dry-run")  # a dry run writes nothing, in the state directory too
    assert r.returncode == 8 and not (tmp_path / "new-state").exists(), r.output
    r = run_airgap("import", str(delta), "--to", f"{registry2.host}/b", "--pubkey", f"{key}.pub", "--state-dir",
                   str(tmp_path / "state"), "--json")
    assert r.returncode == 0, r.output
    assert json.loads(r.stdout)["blobs"]["mounted"] == 1, r.stdout
    assert skopeo_digest(f"{registry2.host}/b/team/new:v1") == new
