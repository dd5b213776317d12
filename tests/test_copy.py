"""`airgap copy` and `airgap login` against the real registry: digests, auth modes, TLS, platforms."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import RegistryFactory, RunAirgap
from harness import RegistryServer, skopeo_digest, skopeo_inspect_raw

from scripts.demo_images import DEMO_IMAGE_NAMES

LOGIN_PW = "s3cret-pass"


def copy_all(run_airgap: RunAirgap, src: RegistryServer, dst: RegistryServer, *extra: str,
             prefix: str = "") -> None:
    for name in DEMO_IMAGE_NAMES:
        r = run_airgap("copy", f"{src.host}/{name}", f"{dst.host}/{prefix}{name}", *extra)
        assert r.returncode == 0, r.output
        assert f"copied {src.host}/{name}" in r.stdout


def assert_same_digests(src: RegistryServer, dst: RegistryServer, images: list[Any], *, prefix: str = "",
                        creds: str | None = None, cert_dir: Path | None = None) -> None:
    for img in images:
        got = skopeo_digest(f"{dst.host}/{prefix}{img.name}", creds=creds, cert_dir=cert_dir,
                            tls_verify=cert_dir is not None)
        assert got == img.digest == skopeo_digest(f"{src.host}/{img.name}"), img.name


def test_copy_every_demo_image_plain(demo_registry: RegistryServer, registry2: RegistryServer,
                                     run_airgap: RunAirgap, demo_layout: tuple[Path, list[Any]]) -> None:
    copy_all(run_airgap, demo_registry, registry2)
    assert_same_digests(demo_registry, registry2, demo_layout[1])
    # children of both indexes are there, by digest, with identical bytes
    for name in ("demo/multi:1.0", "demo/dockerlist:1.0"):
        index = json.loads(skopeo_inspect_raw(f"{demo_registry.host}/{name}"))
        for child in index["manifests"]:
            repo = name.split(":")[0]
            assert skopeo_digest(f"{registry2.host}/{repo}@{child['digest']}") == child["digest"]


def test_rerun_skips_everything(demo_registry: RegistryServer, registry2: RegistryServer,
                                run_airgap: RunAirgap) -> None:
    src, dst = f"{demo_registry.host}/demo/multi:1.0", f"{registry2.host}/demo/multi"
    first = run_airgap("copy", src, dst)
    assert first.returncode == 0, first.output
    assert "5 uploaded" in first.stdout
    again = run_airgap("copy", src, dst)
    assert again.returncode == 0 and "0 uploaded" in again.stdout and "5 already present" in again.stdout


def test_copy_by_digest_without_tag(demo_registry: RegistryServer, registry2: RegistryServer,
                                    run_airgap: RunAirgap, demo_layout: tuple[Path, list[Any]]) -> None:
    img = next(i for i in demo_layout[1] if i.name == "demo/dockerlist:1.0")
    r = run_airgap("copy", f"{demo_registry.host}/demo/dockerlist@{img.digest}", f"{registry2.host}/bydigest")
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{registry2.host}/bydigest@{img.digest}") == img.digest
    tags = json.loads(registry2.client().get("/v2/bydigest/tags/list").text)
    assert not tags.get("tags")  # pushed by digest only: no tag invented
    # a destination that names a digest gets that digest or nothing
    other = next(i for i in demo_layout[1] if i.name == "demo/base-a:1.0")
    r = run_airgap("copy", f"{demo_registry.host}/demo/dockerlist:1.0", f"{registry2.host}/named@{other.digest}")
    assert r.returncode == 3 and f"not {other.digest} as the destination" in r.stderr, r.output
    assert "named" not in registry2.client().get("/v2/_catalog").json()["repositories"]
    r = run_airgap("copy", f"{demo_registry.host}/demo/dockerlist:1.0", f"{registry2.host}/named@{img.digest}")
    assert r.returncode == 0 and skopeo_digest(f"{registry2.host}/named@{img.digest}") == img.digest, r.output
    # NAME:TAG@DIGEST whose tag names another manifest at the source: the digest decides, and the tool says so
    child = json.loads(skopeo_inspect_raw(f"{demo_registry.host}/demo/dockerlist:1.0"))["manifests"][0]["digest"]
    r = run_airgap("copy", f"{demo_registry.host}/demo/dockerlist:1.0@{child}", f"{registry2.host}/pinned")
    assert r.returncode == 0, r.output
    assert f"the tag 1.0 names {img.digest} at the source, not {child}; the digest decides" in r.stderr, r.output
    assert skopeo_digest(f"{registry2.host}/pinned:1.0") == child


def test_platform_subset_says_digest_changes(demo_registry: RegistryServer, registry2: RegistryServer,
                                             run_airgap: RunAirgap) -> None:
    src = f"{demo_registry.host}/demo/multi:1.0"
    r = run_airgap("copy", "--platform", "linux/arm64", src, f"{registry2.host}/sub/multi")
    assert r.returncode == 0, r.output
    assert "only platforms linux/arm64 kept; the index digest changes" in r.stderr
    index = json.loads(skopeo_inspect_raw(f"{registry2.host}/sub/multi:1.0"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["arm64"]
    assert skopeo_digest(f"{registry2.host}/sub/multi:1.0") != skopeo_digest(src)
    bad = run_airgap("copy", "--platform", "windows/amd64", src, f"{registry2.host}/sub/none")
    assert bad.returncode == 2 and "has no manifest for platform windows/amd64" in bad.stderr
    assert "linux/amd64, linux/arm64" in bad.stderr
    # a single-platform image: its config names the platform, which must be one of those asked for
    single = f"{demo_registry.host}/demo/base-a:1.0"
    bad = run_airgap("copy", "--platform", "linux/arm64", single, f"{registry2.host}/sub/base-a")
    assert bad.returncode == 2, bad.output
    assert bad.stderr.splitlines() == [f"airgap: error: {single} is an image for linux/amd64 only, not for "
                                       "linux/arm64: leave it out of the list, or ask for its platform too"]
    r = run_airgap("copy", "--platform", "linux/arm64", "--platform", "linux/x86_64", single,
                   f"{registry2.host}/sub/base-a")
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{registry2.host}/sub/base-a:1.0") == skopeo_digest(single)


def login(run_airgap: RunAirgap, server: RegistryServer, *extra: str) -> None:
    r = run_airgap("login", server.host, "-u", "alice", "--password-stdin", *extra, input=LOGIN_PW + "\n")
    assert r.returncode == 0, r.output
    assert "Login succeeded" in r.stdout


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_copy_with_auth_after_login(auth: str, demo_registry: RegistryServer, registry_factory: RegistryFactory,
                                    run_airgap: RunAirgap, airgap_env: dict[str, str],
                                    demo_layout: tuple[Path, list[Any]]) -> None:
    target = registry_factory(auth=auth)
    login(run_airgap, target)
    config = Path(airgap_env["DOCKER_CONFIG"]) / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert target.host in json.loads(config.read_text())["auths"]
    copy_all(run_airgap, demo_registry, target)
    assert_same_digests(demo_registry, target, demo_layout[1], creds=target.creds)
    # and back out of the authenticated registry, as a source
    out = registry_factory()
    r = run_airgap("copy", f"{target.host}/demo/multi:1.0", f"{out.host}/back/multi")
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{out.host}/back/multi:1.0") == skopeo_digest(f"{demo_registry.host}/demo/multi:1.0")


def test_token_auth_caches_tokens_and_mounts(demo_registry: RegistryServer, token_registry: RegistryServer,
                                             run_airgap: RunAirgap) -> None:
    server = token_registry.token_server
    assert server is not None
    login(run_airgap, token_registry)
    server.reset_counters()
    r = run_airgap("copy", f"{demo_registry.host}/demo/many-layers:1.0", f"{token_registry.host}/a/many",
                   "--jobs", "4")
    assert r.returncode == 0, r.output
    # 13 blobs and a manifest, but tokens only per scope set (not per request)
    assert 1 <= len(server.requests) <= 4, server.requests
    # a second repository of the same target: tokens with two scopes, blobs already there elsewhere
    r = run_airgap("copy", f"{token_registry.host}/a/many:1.0", f"{token_registry.host}/b/many")
    assert r.returncode == 0, r.output
    assert "0 uploaded" in r.stdout and "13 mounted" in r.stdout
    assert any(len(req.scopes) == 2 for req in server.requests), server.requests
    # short-lived tokens (8 s) are still reused: a quarter of their life as the margin, not a fixed 10 s
    server.expires_in = 8
    server.reset_counters()
    r = run_airgap("copy", f"{demo_registry.host}/demo/many-layers:1.0", f"{token_registry.host}/c/many",
                   "--jobs", "4")
    assert r.returncode == 0, r.output
    assert 1 <= len(server.requests) <= 4, server.requests


def test_explicit_credentials_without_login(demo_registry: RegistryServer, htpasswd_registry: RegistryServer,
                                            run_airgap: RunAirgap) -> None:
    r = run_airgap("copy", "--dest-username", "alice", "--password-stdin", f"{demo_registry.host}/demo/base-a:1.0",
                   f"{htpasswd_registry.host}/x/base-a", input=LOGIN_PW + "\n")
    assert r.returncode == 0, r.output
    r = run_airgap("copy", "--dest-username", "alice", f"{demo_registry.host}/demo/base-b:1.0",
                   f"{htpasswd_registry.host}/x/base-b", env={"AIRGAP_DEST_PASSWORD": LOGIN_PW})
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{htpasswd_registry.host}/x/base-b:1.0", creds=htpasswd_registry.creds) == \
        skopeo_digest(f"{demo_registry.host}/demo/base-b:1.0")
    # both user names and --password-stdin: the password goes to the destination, and the source's is asked for
    # by its variable alone (the hint offered --password-stdin, already taken)
    r = run_airgap("copy", "--src-username", "bob", "--dest-username", "alice", "--password-stdin",
                   f"{demo_registry.host}/demo/base-b:1.0", f"{htpasswd_registry.host}/x/base-c", input=LOGIN_PW + "\n")
    assert r.returncode == 2 and "set the AIRGAP_SRC_PASSWORD variable" in r.stderr, r.output


def test_copy_over_tls_with_custom_ca(demo_registry: RegistryServer, tls_registry: RegistryServer,
                                      run_airgap: RunAirgap, demo_layout: tuple[Path, list[Any]]) -> None:
    assert tls_registry.ca_cert is not None
    copy_all(run_airgap, demo_registry, tls_registry, "--ca-cert", str(tls_registry.ca_cert))
    assert_same_digests(demo_registry, tls_registry, demo_layout[1], cert_dir=tls_registry.cert_dir)


def test_tls_with_htpasswd_and_login(demo_registry: RegistryServer, registry_factory: RegistryFactory,
                                     run_airgap: RunAirgap) -> None:
    target = registry_factory(auth="htpasswd", tls=True)
    assert target.ca_cert is not None
    login(run_airgap, target, "--ca-cert", str(target.ca_cert))
    r = run_airgap("copy", f"{demo_registry.host}/demo/dockerlist:1.0", f"{target.host}/t/dockerlist",
                   "--ca-cert", str(target.ca_cert))
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{target.host}/t/dockerlist:1.0", creds=target.creds, cert_dir=target.cert_dir,
                         tls_verify=True) == skopeo_digest(f"{demo_registry.host}/demo/dockerlist:1.0")


def test_ctrl_c_stops_promptly_and_resumes(demo_registry: RegistryServer, registry2: RegistryServer,
                                           run_airgap: RunAirgap, airgap_env: dict[str, str],
                                           fault_proxy_factory: Any) -> None:
    import signal
    import subprocess
    import time

    from conftest import AIRGAP

    proxy = fault_proxy_factory(demo_registry.host)
    proxy.rate_limit(256 * 1024)  # the 2 MiB layer takes ~8 s
    src, dst = f"{proxy.host}/demo/large:1.0", f"{registry2.host}/demo/large"
    proc = subprocess.Popen(AIRGAP + ["copy", src, dst], env=airgap_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 3.0
    assert "interrupted; run the same command again to resume" in err and "Traceback" not in err
    proxy.rate_limit(None)
    r = run_airgap("copy", src, dst)
    assert r.returncode == 0, r.output
    assert skopeo_digest(f"{registry2.host}/demo/large:1.0") == skopeo_digest(f"{demo_registry.host}/demo/large:1.0")
