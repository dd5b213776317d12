"""Referrers (signatures, SBOMs, attestations) and every manifest format, export → import, real registries.

Distribution 2.8 has no referrers API, so subject-based referrers live in the tag schema's index
``sha256-<hex>`` on both ends; cosign-style signatures are tags ``sha256-<hex>.sig``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RegistryFactory, RunAirgap
from harness import RegistryServer, make_oci_layout, skopeo_copy, skopeo_digest, skopeo_inspect_raw

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SPDX = "application/spdx+json"
VULN = "application/vnd.example.vulnerability-report+json"
NOTARY = "application/vnd.cncf.notary.signature"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


# --------------------------------------------------------------------------- pushing raw content

def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(reg: RegistryServer, repo: str, data: bytes) -> dict[str, Any]:
    with reg.client() as c:
        resp = c.post(f"/v2/{repo}/blobs/uploads/")
        assert resp.status_code == 202, resp.text
        url = httpx.URL(str(resp.url.join(resp.headers["location"]))).copy_add_param("digest", digest_of(data))
        resp = c.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 201, resp.text
    return {"digest": digest_of(data), "size": len(data)}


def push_manifest(reg: RegistryServer, repo: str, doc: dict[str, Any] | bytes, ref: str | None = None,
                  media_type: str | None = None) -> dict[str, Any]:
    data = doc if isinstance(doc, bytes) else json.dumps(doc, separators=(",", ":")).encode()
    mt = media_type or (doc.get("mediaType") if isinstance(doc, dict) else None) or OCI_MANIFEST
    with reg.client() as c:
        resp = c.put(f"/v2/{repo}/manifests/{ref or digest_of(data)}", content=data, headers={"Content-Type": mt})
        assert resp.status_code == 201, resp.text
    return {"mediaType": mt, "digest": digest_of(data), "size": len(data)}


def artifact(reg: RegistryServer, repo: str, subject: dict[str, Any] | None, artifact_type: str, payload: bytes,
             layer_type: str, *, annotations: dict[str, str] | None = None, tag: str | None = None,
             config_type: str = EMPTY) -> dict[str, Any]:
    """An OCI 1.1 artifact (empty config, one layer) with ``subject``, pushed by digest (or ``tag``)."""
    config = b"{}" if config_type == EMPTY else b'{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": config_type, **push_blob(reg, repo, config)},
                           "layers": [{"mediaType": layer_type, **push_blob(reg, repo, payload),
                                       **({"annotations": annotations} if annotations else {})}]}
    if artifact_type and config_type == EMPTY:
        doc["artifactType"] = artifact_type
    if subject is not None:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    desc = push_manifest(reg, repo, doc, tag)
    return {**desc, "artifactType": artifact_type, **({"annotations": annotations} if annotations else {})}


def fallback_index(reg: RegistryServer, repo: str, subject: str, entries: list[dict[str, Any]]) -> None:
    push_manifest(reg, repo, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                  subject.replace(":", "-"))


def listed(reg: RegistryServer, repo: str, subject: str) -> list[str]:
    with reg.client() as c:
        resp = c.get(f"/v2/{repo}/manifests/{subject.replace(':', '-')}", headers={"Accept": OCI_INDEX})
    return [] if resp.status_code == 404 else [m["digest"] for m in resp.json()["manifests"]]


def image(reg: RegistryServer, tmp_path: Path, repo: str, tag: str, seed: str) -> dict[str, Any]:
    img = make_oci_layout(tmp_path / f"layout-{seed}", tag=tag, seed=seed)
    skopeo_copy(img.ref, f"docker://{reg.host}/{repo}:{tag}")
    return {"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest)}


@pytest.fixture
def key(tmp_path: Path, run_airgap: RunAirgap) -> Path:
    path = tmp_path / "signing.key"
    assert run_airgap("keygen", str(path)).returncode == 0
    return path


def export(run_airgap: RunAirgap, key: Path, out: Path, *args: str) -> Any:
    r = run_airgap("export", *args, "--output", str(out), "--key", str(key), "--chunk-size", "1MiB")
    assert r.returncode == 0, r.output
    return r


def do_import(run_airgap: RunAirgap, bundle: Path, key: Path, to: str, state: Path, *extra: str) -> Any:
    r = run_airgap("import", str(bundle), "--to", to, "--pubkey", f"{key}.pub", "--state-dir", str(state), *extra)
    assert r.returncode == 0, r.output
    return r


@pytest.fixture
def signed(registry: RegistryServer, tmp_path: Path) -> dict[str, Any]:
    """team/app:v1 with an SBOM (subject, fallback tag index), a cosign .sig tag, and a Notation-style
    signature on the SBOM (a referrer of a referrer)."""
    repo = "team/app"
    subject = image(registry, tmp_path, repo, "v1", "signed")
    sbom = artifact(registry, repo, subject, SPDX, b'{"spdxVersion":"SPDX-2.3","name":"app"}', SPDX,
                    annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    fallback_index(registry, repo, subject["digest"], [sbom])
    sig_tag = subject["digest"].replace(":", "-") + ".sig"
    sig = artifact(registry, repo, None, "", b'{"critical":{"image":{"docker-manifest-digest":"x"}}}', SIMPLESIGNING,
                   annotations={"dev.cosignproject.cosign/signature": "MEUCIQ=="}, tag=sig_tag,
                   config_type="application/vnd.oci.image.config.v1+json")
    sbom_sig = artifact(registry, repo, {k: sbom[k] for k in ("mediaType", "digest", "size")}, NOTARY,
                        b"jws-envelope", "application/jose+json")
    fallback_index(registry, repo, sbom["digest"], [sbom_sig])
    return {"repo": repo, "subject": subject, "sbom": sbom, "sig": sig, "sig_tag": sig_tag, "sbom_sig": sbom_sig}


def test_referrers_travel_and_merge_into_the_fallback_index(registry: RegistryServer, registry2: RegistryServer,
                                                           signed: dict[str, Any], key: Path, tmp_path: Path,
                                                           run_airgap: RunAirgap) -> None:
    repo, subject = signed["repo"], signed["subject"]["digest"]
    out = tmp_path / "bundle"
    dry = run_airgap("export", f"{registry.host}/{repo}:v1", "--dry-run", "-o", str(out))
    planned = [line.split()[2] for line in dry.stdout.splitlines() if line.startswith("  referrer ")]
    assert sorted(planned) == sorted(signed[k]["digest"] for k in ("sbom", "sig", "sbom_sig")), dry.output  # nested too
    r = export(run_airgap, key, out, f"{registry.host}/{repo}:v1")
    assert "with 3 referrers" in r.stdout
    doc = json.loads(run_airgap("inspect", str(out), "--json").stdout)
    refs = {x["digest"]: x for x in doc["images"][0]["referrers"]}
    assert set(refs) == {signed["sbom"]["digest"], signed["sig"]["digest"], signed["sbom_sig"]["digest"]}
    assert refs[signed["sig"]["digest"]]["tag"] == signed["sig_tag"]
    assert refs[signed["sig"]["digest"]]["artifact_type"] == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert refs[signed["sbom"]["digest"]]["artifact_type"] == SPDX and refs[signed["sbom"]["digest"]]["tag"] is None
    assert refs[signed["sbom_sig"]["digest"]]["subject"] == signed["sbom"]["digest"]
    text = run_airgap("inspect", str(out)).stdout
    assert f"referrer {SPDX}  {signed['sbom']['digest']}" in text and f"(tag {signed['sig_tag']})" in text

    r = do_import(run_airgap, out, key, registry2.host, tmp_path / "state", "--json")
    assert json.loads(r.stdout)["referrers"] == {"pushed": 3, "fallback_indexes": 2}
    target = f"{registry2.host}/{repo}"
    assert skopeo_digest(f"{target}:v1") == subject
    assert skopeo_digest(f"{target}:{signed['sig_tag']}") == signed["sig"]["digest"]
    for name in ("sbom", "sbom_sig"):
        assert skopeo_digest(f"{target}@{signed[name]['digest']}") == signed[name]["digest"]
    assert listed(registry2, repo, subject) == [signed["sbom"]["digest"]]
    assert listed(registry2, repo, signed["sbom"]["digest"]) == [signed["sbom_sig"]["digest"]]
    entry = json.loads(skopeo_inspect_raw(f"{target}:{subject.replace(':', '-')}"))["manifests"][0]
    assert entry["artifactType"] == SPDX and entry["annotations"] == signed["sbom"]["annotations"]
    again = run_airgap("import", str(out), "--to", registry2.host, "--pubkey", f"{key}.pub", "--state-dir",
                       str(tmp_path / "state"))
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.output

    # a later bundle brings another referrer of the same subject: the target's index ends listing both
    vuln = artifact(registry, repo, signed["subject"], VULN, b'{"vulnerabilities":[]}', VULN)
    fallback_index(registry, repo, subject, [vuln])  # the source now lists only the new one
    out2 = tmp_path / "bundle2"
    export(run_airgap, key, out2, f"{registry.host}/{repo}:v1")
    do_import(run_airgap, out2, key, registry2.host, tmp_path / "state2")
    assert listed(registry2, repo, subject) == [signed["sbom"]["digest"], vuln["digest"]]
    assert skopeo_digest(f"{target}@{vuln['digest']}") == vuln["digest"]


def test_referrer_options_and_require_signature(registry: RegistryServer, registry2: RegistryServer,
                                                signed: dict[str, Any], key: Path, tmp_path: Path,
                                                run_airgap: RunAirgap) -> None:
    repo, subject = signed["repo"], signed["subject"]["digest"]
    out = tmp_path / "none"
    export(run_airgap, key, out, f"{registry.host}/{repo}:v1", "--no-referrers")
    assert json.loads(run_airgap("inspect", str(out), "--json").stdout)["images"][0]["referrers"] == []
    do_import(run_airgap, out, key, registry2.host, tmp_path / "state")
    assert listed(registry2, repo, subject) == []
    with registry2.client() as c:
        assert c.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]

    out = tmp_path / "sbom-only"
    export(run_airgap, key, out, f"{registry.host}/{repo}:v1", "--referrer-type", SPDX, "--require-signature",
           "--referrer-type", "application/vnd.dev.cosign.artifact.sig.v1+json")
    refs = json.loads(run_airgap("inspect", str(out), "--json").stdout)["images"][0]["referrers"]
    assert {r["digest"] for r in refs} == {signed["sbom"]["digest"], signed["sig"]["digest"]}

    image(registry, tmp_path, "team/unsigned", "v1", "unsigned")
    r = run_airgap("export", f"{registry.host}/{repo}:v1", f"{registry.host}/team/unsigned:v1", "--dry-run",
                   "--require-signature", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and f"1 image carries no signature: {registry.host}/team/unsigned:v1" in r.stderr
    assert f"{repo}:v1" not in r.stderr.split("carries no signature:")[1]
    r = run_airgap("export", f"{registry.host}/{repo}:v1", "--dry-run", "--require-signature",
                   "-o", str(tmp_path / "x"))
    assert r.returncode == 0 and f"referrer {SPDX}" in r.stdout, r.output
    r = run_airgap("export", f"{registry.host}/{repo}:v1", "--dry-run", "--no-referrers", "--require-signature",
                   "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "cannot be combined" in r.stderr


def test_a_whole_repository_carries_referrer_tags_as_referrers_not_as_images(
        registry: RegistryServer, registry2: RegistryServer, signed: dict[str, Any], key: Path, tmp_path: Path,
        run_airgap: RunAirgap) -> None:
    """--repository lists the tags sha256-<hex>.sig and sha256-<hex> (the fallback index) too: they are not
    images. They travel with their subject as its referrers, and --no-referrers leaves them out."""
    repo = signed["repo"]
    out = tmp_path / "all"
    r = export(run_airgap, key, out, "--repository", f"{registry.host}/{repo}")
    assert "3 tags in the form sha256-<digest>" in r.stderr, r.output  # the .sig and two fallback indexes
    images = json.loads(run_airgap("inspect", str(out), "--json").stdout)["images"]
    assert [i["tag"] for i in images] == ["v1"] and len(images[0]["referrers"]) == 3
    out = tmp_path / "none"
    r = export(run_airgap, key, out, "--repository", f"{registry.host}/{repo}", "--no-referrers")
    assert "(not at all, with --no-referrers)" in r.stderr, r.output
    do_import(run_airgap, out, key, registry2.host, tmp_path / "state")
    with registry2.client() as c:
        assert c.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]


def test_every_manifest_format_round_trips(registry: RegistryServer, registry2: RegistryServer, key: Path,
                                           tmp_path: Path, run_airgap: RunAirgap) -> None:
    """What tests/test_import.py does not cover already (OCI and Docker manifests and lists, digest-only
    images): annotations, an index nesting an index, several tags on one digest, any OCI artifact, and an
    artifact with artifactType and subject exported as an image."""
    base = image(registry, tmp_path, "fmt/base", "v1", "fmt")
    ann = {"org.opencontainers.image.source": "https://example.com/app", "com.example.note": "ünïcode"}
    raw = json.loads(skopeo_inspect_raw(f"{registry.host}/fmt/base:v1"))
    annotated = push_manifest(registry, "fmt/base", {**raw, "annotations": ann}, "annotated")
    inner = push_manifest(registry, "fmt/base", {"schemaVersion": 2, "mediaType": OCI_INDEX, "annotations": ann,
                                                 "manifests": [{**annotated, "platform": {"os": "linux",
                                                                                          "architecture": "amd64"}}]})
    outer = push_manifest(registry, "fmt/base", {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                 "manifests": [inner, base]}, "nested")
    for tag in ("same-1", "same-2"):
        push_manifest(registry, "fmt/base", skopeo_inspect_raw(f"{registry.host}/fmt/base:v1"), tag,
                      base["mediaType"])
    chart = artifact(registry, "fmt/chart", None, "", b"chart-bytes",
                     "application/vnd.cncf.helm.chart.content.v1.tar+gzip", tag="0.1.0",
                     config_type="application/vnd.cncf.helm.config.v1+json")
    sbom = artifact(registry, "fmt/base", base, SPDX, b'{"spdxVersion":"SPDX-2.3"}', SPDX, tag="sbom",
                    annotations=ann)
    refs = {"fmt/base:v1": base, "fmt/base:annotated": annotated, "fmt/base:nested": outer,
            "fmt/base:same-1": base, "fmt/base:same-2": base, "fmt/chart:0.1.0": chart, "fmt/base:sbom": sbom}
    out = tmp_path / "bundle"
    export(run_airgap, key, out, *[f"{registry.host}/{r}" for r in refs])
    do_import(run_airgap, out, key, f"{registry2.host}/m", tmp_path / "state")
    for ref, desc in refs.items():
        assert skopeo_digest(f"{registry2.host}/m/{ref}") == desc["digest"] == skopeo_digest(f"{registry.host}/{ref}")
    assert skopeo_digest(f"{registry2.host}/m/fmt/base@{inner['digest']}") == inner["digest"]


def test_schema1_is_refused_with_a_clear_message(registry_factory: RegistryFactory, key: Path, tmp_path: Path,
                                                 run_airgap: RunAirgap) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    data = json.dumps({"schemaVersion": 1, "name": "old/app", "tag": "v1", "architecture": "amd64",
                       "fsLayers": [], "history": []}).encode()
    (layout / "blobs" / "sha256" / digest_of(data).split(":")[1]).write_bytes(data)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.docker.distribution.manifest.v1+json", "digest": digest_of(data),
        "size": len(data), "annotations": {"org.opencontainers.image.ref.name": "old/app:v1"}}]}))
    r = run_airgap("export", f"oci:{layout}", "--output", str(tmp_path / "out"), "--key", str(key))
    assert r.returncode == 4 and "is a Docker schema1 manifest" in r.stderr and "re-push" in r.stderr, r.output


def test_platform_subset_says_which_referrers_of_the_full_index_stay_behind(
        registry: RegistryServer, key: Path, tmp_path: Path, run_airgap: RunAirgap) -> None:
    """A signature on a two-platform index signs that index; a one-platform export replaces the index, so
    the signature cannot come along: the export says so (and keeps the referrers of the kept manifest)."""
    repo = "cut/app"
    amd = image(registry, tmp_path, repo, "amd", "cut-amd")
    arm = image(registry, tmp_path, repo, "arm", "cut-arm")
    index = push_manifest(registry, repo, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**amd, "platform": {"os": "linux", "architecture": "amd64"}},
        {**arm, "platform": {"os": "linux", "architecture": "arm64"}}]}, "v1")
    sig = artifact(registry, repo, index, NOTARY, b"index-signature", "application/jose+json")
    fallback_index(registry, repo, index["digest"], [sig])
    counter = artifact(registry, repo, sig, VULN, b'{"countersigned":true}', VULN)  # a referrer of the referrer
    fallback_index(registry, repo, sig["digest"], [counter])
    sbom = artifact(registry, repo, amd, SPDX, b'{"spdxVersion":"SPDX-2.3"}', SPDX)
    fallback_index(registry, repo, amd["digest"], [sbom])
    out = tmp_path / "bundle"
    r = export(run_airgap, key, out, f"{registry.host}/{repo}:v1", "--platform", "linux/amd64")
    said = " ".join(r.output.split())
    assert f"2 referrers of the full index {index['digest']} left out ({NOTARY}, {VULN})" in said, r.output
    doc = json.loads(run_airgap("inspect", str(out), "--json").stdout)
    assert [x["digest"] for x in doc["images"][0]["referrers"]] == [sbom["digest"]]
    # signed, but not the subset: --require-signature says why, not "sign them upstream"
    r = run_airgap("export", f"{registry.host}/{repo}:v1", "--platform", "linux/amd64", "--require-signature",
                   "--dry-run", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "its signature covers the full index, which --platform replaces" in r.stderr
    # an inventory records the referrer tags too, but does not count them as images
    r = run_airgap("inventory", "--registry", f"{registry.host}/cut", "--output", str(tmp_path / "inv.json"), "--json")
    assert r.returncode == 0, r.output
    assert (json.loads(r.stdout)["images"], json.loads(r.stdout)["referrer_tags"]) == (3, 3)  # amd, arm, v1
    r = run_airgap("inventory", "--registry", f"{registry.host}/cut", "--output", str(tmp_path / "inv.json"))
    assert ": 3 images (and 3 tags of signatures, SBOMs or referrers) in 1 repository, " in r.stdout, r.output
    assert "sign them upstream" not in r.stderr, r.output
    r = run_airgap("export", f"{registry.host}/{repo}:v1", "--referrer-type", SPDX, "--require-signature",
                   "--dry-run", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and f"--referrer-type keeps only {SPDX}, which leaves signatures out" in r.stderr


def test_copy_carries_referrers(registry: RegistryServer, registry2: RegistryServer, signed: dict[str, Any],
                                run_airgap: RunAirgap) -> None:
    """copy takes the image's SBOM (fallback index), its cosign .sig tag and the signature on the SBOM."""
    repo = signed["repo"]
    r = run_airgap("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/copied/app")
    assert r.returncode == 0, r.output
    assert "with 3 referrers" in r.stdout, r.stdout
    dst = "copied/app"
    assert skopeo_digest(f"{registry2.host}/{dst}:v1") == signed["subject"]["digest"]
    assert listed(registry2, dst, signed["subject"]["digest"]) == [signed["sbom"]["digest"]]
    assert listed(registry2, dst, signed["sbom"]["digest"]) == [signed["sbom_sig"]["digest"]]
    assert skopeo_digest(f"{registry2.host}/{dst}:{signed['sig_tag']}") == signed["sig"]["digest"]
    r = run_airgap("copy", f"{registry.host}/{repo}:v1", f"{registry2.host}/bare/app", "--no-referrers")
    assert r.returncode == 0 and "referrer" not in r.stdout, r.output
    assert listed(registry2, "bare/app", signed["subject"]["digest"]) == []
