"""Reliability battery (issue 5), part 1: network faults, registry restarts, process kills and a full disk.

* Every fault of the :class:`~harness.FaultProxy` (reset after N bytes, stall, slow rate, 500/502/503, 429 with
  ``Retry-After``, drop every Nth request) is injected in front of the SOURCE registry during ``export`` and in
  front of the TARGET registry during ``import``. Each run completes in one go: the bundle is byte-identical
  to one exported without faults, and the target holds every image under the source's digest.
* When ``--retries`` is exhausted, the run ends with ONE ``airgap: error:`` line, and a rerun completes.
* The target registry process is stopped and started again in the middle of an import: with ``--retries 10``
  and the shipped backoff (base 0.5 s), the same run completes.
* ``export`` is killed with SIGKILL at random moments (seeded; the seed is printed, ``AIRGAP_KILL_SEED``
  replays it); the rerun completes with chunks byte-identical to an uninterrupted export.
  (The import kill rounds are in ``test_import_faults.py``.)
* The disk fills up during an export (a small tmpfs): one clear line, no partial chunk under a final name, and
  the same command completes in the same directory once space is freed.

Reproduce the numbers of ``docs/threat-model.md``: ``.venv/bin/pytest tests/test_battery_faults.py -s`` (and
``-m slow`` for the long kill trials).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import AIRGAP, FaultProxyFactory, Run, RunAirgap, require_tools
from harness import FaultProxy, RegistryServer, skopeo_digest, start_registry
from test_import_faults import ACCEPT, EXIT_REGISTRY, _cli, assert_error_line

from airgap.bundle.reader import BundleReader, read_signed_manifest
from airgap.model.bundle import BundleManifest
from airgap.signing import load_public_key
from scripts.demo_images import DEMO_IMAGE_NAMES

MiB = 1024 * 1024


# --------------------------------------------------------------------------- shared set-up


def _env(workdir: Path) -> dict[str, str]:
    env = {**os.environ, "DOCKER_CONFIG": str(workdir / "docker-config"), "HOME": str(workdir / "home"),
           "XDG_RUNTIME_DIR": str(workdir / "run"), "AIRGAP_RETRY_BASE_DELAY": "0.05"}
    env.pop("REGISTRY_AUTH_FILE", None)
    return env


@dataclass
class Exported:
    """A source registry, a proxy in front of it, and the bundle exported through that proxy without faults."""

    registry: RegistryServer
    proxy: FaultProxy
    key: Path
    reference: Path
    manifest: BundleManifest
    digests: dict[str, str]  # "demo/large:1.0" -> the source's digest (skopeo)

    @property
    def pub(self) -> Path:
        return Path(f"{self.key}.pub")

    @property
    def refs(self) -> list[str]:
        return [f"{self.proxy.host}/{n}" for n in DEMO_IMAGE_NAMES]

    @property
    def big(self) -> str:
        return str(max(self.manifest.blobs, key=lambda b: b.size).digest)

    def export_args(self, out: Path, *extra: str) -> list[str]:
        return _export_args(self.proxy, self.key, out, *extra)


def _export_args(proxy: FaultProxy, key: Path, out: Path, *extra: str) -> list[str]:
    """Every demo image, through ``proxy``, in 1 MiB chunks."""
    return ["export", *[f"{proxy.host}/{n}" for n in DEMO_IMAGE_NAMES], "--output", str(out), "--key", str(key),
            "--chunk-size", "1MiB", *extra]


def _exported(workdir: Path, layout: Path) -> Iterator[Exported]:
    from scripts.push_layout import push_layout

    require_tools()
    env = _env(workdir)
    registry = start_registry(workdir / "registries")
    proxy = FaultProxy(registry.host).start()
    try:
        push_layout(layout, registry.host)
        key = workdir / "keys" / "signing.key"
        key.parent.mkdir()
        assert _cli(env, "keygen", str(key)).returncode == 0
        reference = workdir / "reference"
        r = _cli(env, *_export_args(proxy, key, reference))
        assert r.returncode == 0, r.output
        manifest = BundleManifest.parse((reference / "manifest.json").read_bytes())
        digests = {n: skopeo_digest(registry.ref(n)) for n in DEMO_IMAGE_NAMES}
        assert {f"{i.repository}:{i.tag}": str(i.digest) for i in manifest.images} == digests
        yield Exported(registry, proxy, key, reference, manifest, digests)
    finally:
        proxy.stop()
        registry.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, demo_layout: tuple[Path, list[Any]]) -> Iterator[Exported]:
    """The demo images (2 MiB large layer) behind a proxy, and their bundle in 1 MiB chunks (3 chunks)."""
    yield from _exported(tmp_path_factory.mktemp("battery-src"), demo_layout[0])


@pytest.fixture
def source(exported: Exported) -> Iterator[Exported]:
    """The module's source, with the proxy's faults and counters cleared before and after the test."""
    exported.proxy.clear()
    exported.proxy.reset_counters()
    try:
        yield exported
    finally:
        exported.proxy.clear()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One target registry for the module; each test imports under its own prefix."""
    require_tools()
    server = start_registry(tmp_path_factory.mktemp("battery-target"))
    try:
        yield server
    finally:
        server.close()


def assert_same_bundle(out: Path, reference: Path, pub: Path) -> None:
    """Same files (nothing left over: no state directory, no partial chunk), byte-identical chunks, and the same
    manifest apart from the bundle's id and creation time."""
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for chunk in sorted(reference.glob("chunk-*.bin")):
        assert (out / chunk.name).read_bytes() == chunk.read_bytes(), f"{chunk.name} differs"
    a = BundleManifest.parse((out / "manifest.json").read_bytes())
    b = BundleManifest.parse((reference / "manifest.json").read_bytes())
    assert (a.chunks, a.blobs, a.files, a.images) == (b.chunks, b.blobs, b.files, b.images)
    manifest, _ = read_signed_manifest(out, [load_public_key(pub)])
    assert BundleReader(manifest, [out]).check_all().ok


def assert_imported(target: RegistryServer, manifest: BundleManifest, prefix: str, digests: dict[str, str]) -> None:
    """Every image of the bundle is in ``target`` under ``prefix`` with the source's digest (HEAD requests on its
    tag, every manifest and every blob)."""
    with target.client() as client:
        for img in manifest.images:
            repo = f"{prefix}/{img.repository}" if prefix else img.repository
            resp = client.head(f"/v2/{repo}/manifests/{img.tag}", headers={"Accept": ACCEPT})
            assert resp.status_code == 200, f"{repo}:{img.tag} missing"
            assert resp.headers["docker-content-digest"] == digests[f"{img.repository}:{img.tag}"]
            for d in img.manifests:
                assert client.head(f"/v2/{repo}/manifests/{d}", headers={"Accept": ACCEPT}).status_code == 200
            for d in img.blobs:
                assert client.head(f"/v2/{repo}/blobs/{d}").status_code == 200, f"{repo}: blob {d} missing"


def _timed(run_airgap: RunAirgap, *args: str) -> tuple[Run, float]:
    t0 = time.monotonic()
    r = run_airgap(*args)
    return r, time.monotonic() - t0


# --------------------------------------------------------------------------- 1. export through every fault

FAULTS = ["reset", "stall", "slow", "http-500", "http-502", "http-503", "http-429", "drop"]


def _inject_source(proxy: FaultProxy, fault: str, big: str) -> tuple[int, float]:
    """Put ``fault`` on the source side; return how many faults must be injected and the least run time."""
    big_get = rf"^GET /v2/demo/large/blobs/{big}"
    blob_get = r"^GET /v2/demo/\S+/blobs/"
    if fault == "reset":  # the 2 MiB layer is cut three times part-way: resumed with Range each time
        proxy.reset_after(400_000, times=3, match=big_get)
        return 3, 0.0
    if fault == "stall":
        proxy.stall(1.5, times=2, match=blob_get)
        return 2, 1.5
    if fault == "slow":
        proxy.rate_limit(1 * MiB)  # bytes/s per connection: the 2 MiB layer takes 2 s
        return 0, 1.8
    if fault.startswith("http-") and fault != "http-429":
        proxy.http_error(int(fault[5:]), times=3, match=blob_get)
        return 3, 0.0
    if fault == "http-429":  # the same request twice: the two waits add up
        proxy.http_error(429, times=2, retry_after=1, match=big_get)
        return 2, 2.0
    assert fault == "drop"
    proxy.drop_every(3)
    return 1, 0.0


@pytest.mark.parametrize("fault", FAULTS)
def test_export_through_fault(fault: str, source: Exported, run_airgap: RunAirgap, tmp_path: Path) -> None:
    want, least = _inject_source(source.proxy, fault, source.big)
    out = tmp_path / "bundle"
    r, seconds = _timed(run_airgap, *source.export_args(out))
    assert r.returncode == 0, r.output
    assert "Traceback" not in r.output and not r.stderr.strip(), r.stderr
    injected = source.proxy.faults_injected
    assert injected >= want if fault == "drop" else injected == want, source.proxy.fault_log
    assert seconds >= least
    assert_same_bundle(out, source.reference, source.pub)
    print(f"export through {fault}: {injected} faults injected, {seconds:.1f}s, bundle identical")


# --------------------------------------------------------------------------- 2. import through every fault


def _inject_target(proxy: FaultProxy, fault: str, prefix: str) -> tuple[int, float]:
    writes = r"^(POST|PUT|PATCH) /v2/"
    if fault == "reset":
        # the registry applied the request, its answer is lost (monolithic PUT, PATCH of the 2 MiB layer),
        # and answers cut inside their headers (HEAD)
        proxy.reset_after(0, times=2, match=r"^PUT /v2/\S+/blobs/uploads/")
        proxy.reset_after(0, times=1, match=r"^PATCH /v2/\S+/blobs/uploads/")
        proxy.reset_after(40, times=2, match=r"^HEAD /v2/")
        return 5, 0.0
    if fault == "stall":
        proxy.stall(1.5, times=2, match=r"^PUT /v2/\S+/blobs/uploads/")
        return 2, 1.5
    if fault == "slow":
        proxy.rate_limit(1 * MiB)
        return 0, 1.8
    if fault.startswith("http-") and fault != "http-429":
        proxy.http_error(int(fault[5:]), times=3, match=writes)
        return 3, 0.0
    if fault == "http-429":
        proxy.http_error(429, times=2, retry_after=1, match=rf"^PUT /v2/{prefix}/demo/multi/manifests/1\.0")
        return 2, 2.0
    assert fault == "drop"
    proxy.drop_every(3)
    return 1, 0.0


@pytest.mark.parametrize("fault", FAULTS)
def test_import_through_fault(fault: str, exported: Exported, target: RegistryServer,
                              fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap, tmp_path: Path) -> None:
    proxy = fault_proxy_factory(target.host)
    prefix = f"fault-{fault}"
    want, least = _inject_target(proxy, fault, prefix)
    r, seconds = _timed(run_airgap, "import", str(exported.reference), "--to", f"{proxy.host}/{prefix}", "--pubkey",
                        str(exported.pub), "--state-dir", str(tmp_path / "state"), "--upload-chunk-size", "1MiB")
    assert r.returncode == 0, r.output
    assert "Traceback" not in r.output and not r.stderr.strip(), r.stderr
    injected = proxy.faults_injected
    assert injected >= want if fault == "drop" else injected == want, proxy.fault_log
    assert seconds >= least
    assert_imported(target, exported.manifest, prefix, exported.digests)
    print(f"import through {fault}: {injected} faults injected, {seconds:.1f}s, every digest preserved")


def test_stall_beyond_the_timeout_is_retried(source: Exported, target: RegistryServer,
                                             fault_proxy_factory: FaultProxyFactory, tmp_path: Path) -> None:
    """A stall longer than the client's read timeout (120 s in the CLI; 1 s here, through the library) is a
    timeout that is retried, on both sides."""
    from airgap.bundle.reader import BundleReader as Reader
    from airgap.export import ExportOptions, export, make_requests
    from airgap.importing import Target, import_bundle, map_images
    from airgap.journal import ImportJournal
    from airgap.model.reference import Reference
    from airgap.registry import Registries, RegistryOptions, RetryPolicy
    from airgap.signing import load_private_key

    options = RegistryOptions(timeout=1.0, retry=RetryPolicy(tries=4, base_delay=0.05, max_delay=0.2))
    source.proxy.stall(2.5, times=2, match=rf"^GET /v2/demo/large/blobs/{source.big}")
    out = tmp_path / "bundle"
    with Registries(options) as registries:
        requests = make_requests([(Reference.parse(r), ()) for r in source.refs])
        export(registries, requests, out, load_private_key(source.key, passphrase=None),
               ExportOptions(chunk_size=MiB))
    assert source.proxy.faults_injected == 2
    assert_same_bundle(out, source.reference, source.pub)

    proxy = fault_proxy_factory(target.host)
    proxy.stall(2.5, times=2, match=r"^PUT /v2/\S+/blobs/uploads/")
    manifest, _ = read_signed_manifest(out, [load_public_key(source.pub)])
    to = Target.parse(f"{proxy.host}/stall-timeout")
    with Registries(options) as registries:
        result = import_bundle(registries, Reader(manifest, [out], verify_chunks=True), to, map_images(manifest, to),
                               ImportJournal.open(tmp_path / "state", manifest.bundle_id, str(to)))
    assert not result.failed and proxy.faults_injected == 2
    assert_imported(target, manifest, "stall-timeout", source.digests)


# --------------------------------------------------------------------------- 3. retries exhausted


@pytest.mark.parametrize("case", ["export-503", "export-drop", "import-503", "import-drop", "import-429"])
def test_retries_exhausted_is_one_clear_line(case: str, source: Exported, target: RegistryServer,
                                            fault_proxy_factory: FaultProxyFactory, run_airgap: RunAirgap,
                                            tmp_path: Path) -> None:
    side, kind = case.split("-")
    if side == "export":
        proxy = source.proxy
        big_get = rf"^GET /v2/demo/large/blobs/{source.big}"
        if kind == "503":
            proxy.http_error(503, times=1_000_000, match=big_get)
            needles: tuple[str, ...] = (f"{proxy.host}/demo/large", "503", "run again later")
        else:
            proxy.drop_every(1, match=big_get)
            needles = (f"{proxy.host}/demo/large", "after 3 tries", "run the command again")
        out = tmp_path / "bundle"
        args = source.export_args(out)
    else:
        proxy = fault_proxy_factory(target.host)
        prefix = f"exhausted-{kind}"
        if kind == "503":
            proxy.http_error(503, times=1_000_000, match=r"^(PUT|PATCH) /v2/\S+/blobs/uploads/")
            needles = (f"{proxy.host}/{prefix}/demo/", "after 3 tries", "run the command again")
        elif kind == "drop":
            proxy.drop_every(1)
            needles = (proxy.host, "cannot reach", "after 3 tries", "check that the registry is up")
        else:
            proxy.http_error(429, times=1_000_000, retry_after=0, match=r"^PUT /v2/\S+/manifests/")
            needles = (f"{proxy.host}/{prefix}/demo/", "429", "rate-limiting")
        args = ["import", str(source.reference), "--to", f"{proxy.host}/{prefix}", "--pubkey", str(source.pub),
                "--state-dir", str(tmp_path / "state")]
    r = run_airgap(*args, "--retries", "3")
    line = assert_error_line(r, *needles, exit_code=EXIT_REGISTRY)
    assert proxy.faults_injected >= 3
    if side == "export":
        assert not (out / "manifest.json").exists() and not (out / "manifest.json.sig").exists()
        assert proxy.faults_injected == 3  # exactly --retries tries of the one request
    print(f"{case}: {proxy.faults_injected} faults, then: {line}")

    proxy.clear()
    r = run_airgap(*args)
    assert r.returncode == 0, r.output
    if side == "export":
        assert_same_bundle(out, source.reference, source.pub)
    else:
        assert_imported(target, source.manifest, prefix, source.digests)


# --------------------------------------------------------------------------- 4. registry restart mid-import


def test_registry_restart_mid_import_completes_in_one_run(exported: Exported, registry: RegistryServer,
                                                          fault_proxy_factory: FaultProxyFactory,
                                                          airgap_env: dict[str, str], tmp_path: Path) -> None:
    """The target registry is stopped while the 2 MiB layer is being uploaded, and started again 1.5 s later.
    With ``--retries 10`` and the shipped backoff (AIRGAP_RETRY_BASE_DELAY unset: base 0.5 s, full jitter) the
    retries span the restart and the same run completes. (With a short backoff or a long outage the retries can
    run out first: then the run ends with one error line and the rerun completes, as
    test_import_faults.py::test_target_stops_mid_run_then_comes_back shows.)"""
    proxy = fault_proxy_factory(registry.host)
    proxy.rate_limit(1 * MiB)  # the 2 MiB layer takes 2 s to upload
    env = {k: v for k, v in airgap_env.items() if k != "AIRGAP_RETRY_BASE_DELAY"}
    args = ["import", str(exported.reference), "--to", proxy.host, "--pubkey", str(exported.pub), "--state-dir",
            str(tmp_path / "state"), "--retries", "10", "--upload-chunk-size", "1MiB"]
    proc = subprocess.Popen(AIRGAP + ["--debug", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(re.match(r"^PATCH /v2/demo/large/blobs/uploads/", x) for x in list(proxy.requests)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        time.sleep(0.3)
        before = len(proxy.requests)
        registry.stop()
        stopped = time.monotonic()
        time.sleep(1.5)
        registry.start()
        down = time.monotonic() - stopped
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err[-3000:]
    assert "Traceback" not in err
    # the outage was seen (connection errors or the proxy's 502 for a refused upstream) and retried
    assert re.search(r"retry \d+/9", err), err[-3000:]
    assert len(proxy.requests) > before
    assert_imported(registry, exported.manifest, "", exported.digests)
    print(f"registry down for {down:.1f}s mid-upload; the import completed in the same run")


# --------------------------------------------------------------------------- 5. export killed at random moments


@pytest.fixture(scope="module")
def exported_12m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """The demo images with a 12 MiB large layer: 13 chunks of 1 MiB."""
    from scripts.demo_images import build_demo_layout

    workdir = tmp_path_factory.mktemp("battery-kill")
    build_demo_layout(workdir / "layout", large_layer_size=12 * MiB)
    yield from _exported(workdir, workdir / "layout")


def _seed() -> int:
    seed = int(os.environ.get("AIRGAP_KILL_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"kill seed: {seed} (rerun with AIRGAP_KILL_SEED={seed})")
    return seed


def _left_behind(out: Path) -> str:
    if not out.exists():
        return "nothing"
    chunks = len(list(out.glob("chunk-*.bin")))
    state = (out / ".airgap-export" / "state.json").exists()
    signed = (out / "manifest.json").exists()
    return f"{chunks} chunks, state {'saved' if state else 'absent'}{', manifest written' if signed else ''}"


def run_export_kill_rounds(src: Exported, airgap_env: dict[str, str], run_airgap: RunAirgap, tmp_path: Path,
                           rounds: int, seed: int) -> dict[str, int]:
    """Each round: a fresh directory, 1 to 3 runs of the same export killed with SIGKILL after a random delay,
    then a run that completes; its bundle must be byte-identical to the uninterrupted one. The delays are
    stratified: the n-th kill falls uniformly in the n-th quarter (cyclically) of an uninterrupted run's
    duration, so that start-up, planning, writing and signing all get their share. The source is slowed to
    8 MiB/s per connection while the killed runs go, so that writing the chunks takes a good part of a run."""
    rng = random.Random(seed)
    stats = {"rounds": 0, "kills": 0, "finished_before_kill": 0, "identical": 0, "with_chunks": 0}
    src.proxy.rate_limit(8 * MiB)
    try:
        t0 = time.monotonic()
        r = run_airgap(*src.export_args(tmp_path / "uninterrupted"))
        duration = time.monotonic() - t0
        assert r.returncode == 0, r.output
        assert_same_bundle(tmp_path / "uninterrupted", src.reference, src.pub)
        print(f"an uninterrupted run takes {duration:.2f}s")
        for n in range(rounds):
            _kill_round(src, airgap_env, run_airgap, tmp_path / f"round-{n}", n, rng, duration * 1.05, stats)
    finally:
        src.proxy.rate_limit(None)
    print(f"export kill rounds: {stats}")
    return stats


def _kill_round(src: Exported, airgap_env: dict[str, str], run_airgap: RunAirgap, out: Path, n: int,
                rng: random.Random, duration: float, stats: dict[str, int]) -> None:
    for k in range(rng.choice([1, 1, 2, 3])):
        quarter = stats["kills"] + stats["finished_before_kill"]
        delay = duration * (quarter % 4 + rng.random()) / 4
        proc = subprocess.Popen(AIRGAP + src.export_args(out), env=airgap_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        if proc.returncode == -signal.SIGKILL:
            stats["kills"] += 1
            stats["with_chunks"] += bool(list(out.glob("chunk-*.bin")))
            # a file under a final chunk name is always a complete chunk
            for chunk in out.glob("chunk-*.bin"):
                assert chunk.read_bytes() == (src.reference / chunk.name).read_bytes(), chunk.name
            print(f"  round {n + 1} kill {k + 1}: after {delay:.2f}s, left {_left_behind(out)}")
        else:
            assert proc.returncode == 0, err
            stats["finished_before_kill"] += 1
            print(f"  round {n + 1} run {k + 1}: finished before the kill at {delay:.2f}s")
    src.proxy.rate_limit(None)
    r = run_airgap(*src.export_args(out))
    src.proxy.rate_limit(8 * MiB)
    assert r.returncode == 0, r.output
    assert_same_bundle(out, src.reference, src.pub)
    stats["rounds"] += 1
    stats["identical"] += 1
    shutil.rmtree(out)


def test_export_killed_at_random_moments(exported_12m: Exported, airgap_env: dict[str, str], run_airgap: RunAirgap,
                                         tmp_path: Path) -> None:
    stats = run_export_kill_rounds(exported_12m, airgap_env, run_airgap, tmp_path, 3, _seed())
    assert stats["identical"] == 3 and stats["kills"] >= 3


@pytest.mark.slow
def test_export_killed_at_random_moments_twenty_rounds(exported_12m: Exported, airgap_env: dict[str, str],
                                                       run_airgap: RunAirgap, tmp_path: Path) -> None:
    stats = run_export_kill_rounds(exported_12m, airgap_env, run_airgap, tmp_path, 20, _seed())
    assert stats["identical"] == 20 and stats["kills"] >= 20


def test_kill_while_cleaning_up_after_signing_leaves_nothing_behind(source: Exported, run_airgap: RunAirgap,
                                                                     tmp_path: Path) -> None:
    """A moment random kills rarely hit: the bundle is signed and written, and the run dies while removing its
    resume state (state.json already gone, the journal not). The rerun says "nothing to do" and tidies up."""
    out = tmp_path / "bundle"
    shutil.copytree(source.reference, out)
    (out / ".airgap-export").mkdir()
    (out / ".airgap-export" / "journal.jsonl").write_text('{"chunk":0}\n')
    r = run_airgap(*source.export_args(out))
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.output
    assert_same_bundle(out, source.reference, source.pub)


STOP_EARLY = """
import os, sys, time
from contextlib import contextmanager
from airgap.bundle.stream import Member, encoded_frames
from airgap.bundle.tarfmt import blob_path
from airgap.model.digest import Digest
from airgap.streams import verified

big = os.urandom(10 * 1024 * 1024)  # 3 segments of 4 MiB
d = Digest.of(big)

@contextmanager
def opener(offset):
    yield verified((big[i:i + 65536] for i in range(0, len(big), 65536)), d, len(big), "big")

frames = encoded_frames([(0, Member(blob_path(d.hex), len(big), "application/vnd.oci.image.layer.v1.tar+gzip", d,
                                    opener=opener), 0)], segment=4 * 1024 * 1024, level=3, jobs=4)
next(frames)      # the writer takes the first frame, then fails (a full disk, say) and stops reading
time.sleep(1.0)   # meanwhile the reader has queued the other two frames and finished
frames.close()
print("stopped")
"""


def test_export_stopped_early_does_not_hang(tmp_path: Path) -> None:
    """The writer stops consuming the stream (an error of its own: disk full, a resume mismatch) while the
    member at the head has been read to its end: the pipeline must still stop."""
    proc = subprocess.Popen([AIRGAP[0], "-c", STOP_EARLY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the export pipeline hangs when its consumer stops early") from None
    assert out.strip() == "stopped"


# --------------------------------------------------------------------------- 6. full disk


@contextlib.contextmanager
def small_disk(path: Path, size: int) -> Iterator[bool]:
    """A tmpfs of ``size`` bytes at ``path`` (True), or a plain directory (False) when mounting is not allowed
    (or AIRGAP_TEST_NO_MOUNT is set, to try the fallback); always unmounted."""
    path.mkdir(parents=True)
    mounted = not os.environ.get("AIRGAP_TEST_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
        check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    written = 0
    block = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        # the last pages of the file system
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    written += f.write(block[:size])
    return written


def _one_line(r: Run, *needles: str) -> str:
    return assert_error_line(r, *needles, exit_code=6)


def test_full_disk_on_export(exported_12m: Exported, airgap_env: dict[str, str], run_airgap: RunAirgap,
                             tmp_path: Path) -> None:
    src = exported_12m
    stream = src.manifest.stream_size
    mnt = tmp_path / "disk"
    with small_disk(mnt, stream + 3 * MiB) as mounted:
        if not mounted:
            pytest.skip("filling a disk needs a tmpfs (mount is not allowed here)")
        out = mnt / "bundle"
        filler = mnt / "filler"

        # 1. not enough room from the start: refused before anything is written
        filler.write_bytes(b"\0" * (stream // 2 + 2 * MiB))
        r = run_airgap(*src.export_args(out))
        line = _one_line(r, str(out), "free but the bundle needs up to", "free some space")
        assert not out.exists()  # not even the state of an export that never began
        assert "resumes" not in line  # nothing to resume
        print(f"precheck: {line}")
        filler.unlink()

        # 2. the disk fills up while the chunks are written (another process takes the space)
        src.proxy.rate_limit(4 * MiB)
        proc = subprocess.Popen(AIRGAP + src.export_args(out), env=airgap_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (out / "chunk-000001.bin").exists():
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.005)
            took = fill(filler)
            out_text, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            src.proxy.rate_limit(None)
        r = Run(proc.returncode, out_text, err)
        line = _one_line(r, "no space left", "chunk-", str(out), "run the same command again")
        assert "Traceback" not in r.output
        assert not (out / "manifest.json").exists()
        chunks = sorted(out.glob("chunk-*.bin"))
        assert 2 <= len(chunks) < len(src.manifest.chunks)
        for chunk in chunks:  # only complete, correct chunks under final names
            assert chunk.read_bytes() == (src.reference / chunk.name).read_bytes(), chunk.name
        assert not list(out.glob(".chunk-*.partial"))  # the unfinished chunk gave its space back
        print(f"disk filled ({took} bytes taken) after {len(chunks)} chunks: {line}")

        # 3. space freed: the same command, in the same directory, completes
        filler.unlink()
        r = run_airgap(*src.export_args(out))
        assert r.returncode == 0, r.output
        assert "kept from the interrupted run" in r.stdout
        assert_same_bundle(out, src.reference, src.pub)


def test_a_chunk_larger_than_the_file_system_takes_is_named(exported_12m: Exported, airgap_env: dict[str, str],
                                                            run_airgap: RunAirgap, tmp_path: Path) -> None:
    """FAT32 holds at most 4 GiB less a byte per file: a chunk above that fails with EFBIG, which freeing space
    would not cure (it was taken for a full disk). Here a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) below
    the chunk size stands in for the file system."""
    src = exported_12m
    out = tmp_path / "bundle"

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB // 2, resource.RLIM_INFINITY))

    proc = subprocess.run(AIRGAP + src.export_args(out), env=airgap_env, capture_output=True, text=True,
                          preexec_fn=limit, timeout=300, check=False)
    line = assert_error_line(Run(proc.returncode, proc.stdout, proc.stderr), "cannot hold a file this large",
                             "--chunk-size", exit_code=2)
    assert "free some space" not in line
    assert not list(out.glob("chunk-*.bin"))
    r = run_airgap(*src.export_args(out))  # without the limit, the same command completes
    assert r.returncode == 0, r.output
    assert_same_bundle(out, src.reference, src.pub)



def test_full_registry_storage_on_import(exported_12m: Exported, registry_factory: Any, run_airgap: RunAirgap,
                                         tmp_path: Path) -> None:
    """The target's disk fills up mid-import: distribution answers 500 with ENOSPC in the error's detail. One line
    says so (not "run again later"), at once: a full disk is not retried. Once space is freed the rerun completes."""
    src = exported_12m
    mnt = tmp_path / "registry-disk"
    with small_disk(mnt, 40 * MiB) as mounted:  # room for the bundle twice: a refused upload leaves its part
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        filler = mnt / "filler"
        fill(filler)
        os.truncate(filler, filler.stat().st_size - 4 * MiB)  # 4 MiB free: less than the 12 MiB layer
        target = registry_factory(extra_config={"storage": {"filesystem": {"rootdirectory": str(mnt / "storage")}}})
        args = ["import", str(src.reference), "--to", target.host, "--pubkey", str(src.pub), "--state-dir",
                str(tmp_path / "state"), "--retries", "20", "--upload-chunk-size", "1MiB"]
        r = run_airgap(*args)
        line = assert_error_line(r, target.host, "500", exit_code=EXIT_REGISTRY)
        assert "no space left on the registry's storage" in line and "free space there" in line
        refused = len(re.findall(r'" 500 ', target.log_text()))  # with retries: 20 for each blob refused
        assert 1 <= refused <= len(src.manifest.blobs), f"{refused} answers 500: the full disk was retried"
        filler.unlink()
        r = run_airgap(*args)
        damaged = re.findall(r"docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data", r.stderr)
        if damaged:  # manifests whose write the full disk cut short: named, all at once
            assert_error_line(r, "cannot serve it", exit_code=EXIT_REGISTRY)
            for path in damaged:
                (mnt / "storage" / path).unlink()
            r = run_airgap(*args)
        assert r.returncode == 0, r.output
        for name in DEMO_IMAGE_NAMES:
            assert skopeo_digest(f"{target.host}/{name}") == src.digests[name], name


def test_journal_on_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    """The export journal's own writes (a chunk's record, the rewrite on resume) on a full disk raise the same
    clear DiskFull error as the chunk writes, not a bare OSError."""
    from airgap.bundle.chunks import FrameRecord, Journal
    from airgap.bundle.files import DiskFull
    from airgap.model.bundle import Chunk

    mnt = tmp_path / "disk"
    with small_disk(mnt, 64 * 1024) as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        journal = Journal(mnt / "journal.jsonl")
        journal.append(0, Chunk("chunk-000000.bin", 1, "0" * 64), [FrameRecord(0, 0, 1)])
        fill(mnt / "filler")
        with pytest.raises(DiskFull, match="no space left"):
            for n in range(1, 200):  # until the journal's last page is full
                journal.append(n, Chunk(f"chunk-{n:06d}.bin", 1, "0" * 64), [FrameRecord(n, 0, 1)])
        with pytest.raises(DiskFull, match="no space left"):
            Journal.load(mnt / "journal.jsonl", mnt, 1, lambda p, c: True)
