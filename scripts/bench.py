"""`make bench`: airgap export/import against skopeo on this machine, next to the machine's own limits.

One run builds a realistic image set (>= 1 GiB of unique content: the demo images with a large
incompressible layer, plus ``bench/app:1.0`` with a 256 MiB uncompressed text layer and a 128 MiB gzip
layer) into an OCI layout, pushes it into a source registry, and then, for ``--rounds`` rounds,
alternating which tool goes first:

- export: ``airgap export`` of every image into a bundle vs ``skopeo copy --all --preserve-digests`` of
  every image out of the registry (OCI images into one OCI layout; Docker-typed images into ``dir:``
  directories, because skopeo cannot keep a Docker manifest list's digest in an OCI layout, nor read a
  Docker manifest back from one);
- import: ``airgap import`` of the bundle into a fresh registry vs ``skopeo copy`` of the same images from
  the layout into another fresh registry; both are checked afterwards (every tag has its source digest);
- no-op import: ``airgap import`` again into the complete registry (the registry log tells which
  requests it made);
- the machine's limits: sha256 and zstd throughput, disk write + fsync, one plain streaming upload (POST
  + monolithic PUT) of the large blob into a fresh registry, and one plain download of it.

Peak RSS of each tool process comes from ``os.wait4`` (``ru_maxrss`` is per process, in KiB on Linux).
Prints a table (medians and min-max spread; targets marked PASS/FAIL), writes everything as JSON to
``bench/results/<UTC timestamp>.json``, and exits non-zero only when a run failed (a missed target is
reported, not an error). ``bench/README.md`` explains how to read the output.

Usage::

    python -m scripts.bench [--work DIR] [--rounds N] [--large-size BYTES] [--quick]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import functools
import gzip
import hashlib
import io
import json
import mmap
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import zstandard

from airgap.export import DEFAULT_LEVEL
from scripts.demo_images import (
    _TAR_END,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GZIP_LEVEL,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    DemoImage,
    _base_files,
    _BlobStore,
    _config,
    _gzip_layer,
    _image_manifest,
    _Layer,
    _padding,
    _tar_header,
    _write_layout_files,
    build_demo_layout,
    pseudo_random_bytes,
    pseudo_random_chunks,
)
from scripts.push_layout import push_layout
from tests.harness.registry import RegistryServer, start_registry

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB

LARGE_SIZE = 640 * MiB  # the demo's incompressible layer
TEXT_SIZE = 256 * MiB  # bench/app: uncompressed tar of text files
GZIP_SIZE = 128 * MiB  # bench/app: gzip layer (compressed size) of compressible files
CHUNK_SIZE = "256MiB"
QUICK_FACTOR = 10
QUICK_CHUNK_SIZE = "32MiB"

BENCH_APP = "bench/app:1.0"
TEXT_FILE_SIZE = 4 * MiB
PIECE = 4 * MiB  # hashing, compressing and disk-writing granularity of the limit measurements
READ = 1024 * 1024

TARGETS = {"export_ratio": 0.6, "import_ratio": 0.7, "noop_seconds": 3.0, "rss_mib": 100.0}
DEFAULT_TIMEOUT = 1800.0
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
DOCKER_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_ACCESS_LINE = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


class RunFailed(RuntimeError):
    """A measured run did not succeed (exit code, timeout, or wrong content in the target)."""


# =============================================================================== the image set


@functools.lru_cache(maxsize=4)
def _zipf_table(seed: int) -> tuple[str, ...]:
    """65536 slots filled with 4096 words by Zipf's law (rank r gets a share of 1/r): a word picked by
    a uniform 16-bit number is then as frequent as words are in real text."""
    syllables = (  # noqa: SIM905 - reads better as one string
        "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo fu ga ge gi go gu ka ke ki ko ku la le li lo lu "
        "ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu "
        "za ze zi zo zu th st ch sh tr pr an en in on un er or ar ix ex"
    ).split()
    words = (  # noqa: SIM905
        "the of and to in is for on that with as by this be are from at or an it not which was "
        "image layer registry digest manifest config blob bundle chunk tag platform stream"
    ).split()
    seen = set(words)
    raw = pseudo_random_bytes(seed, "bench-vocabulary", 1 << 17)
    i = 0
    while len(words) < 4096:
        n = 1 + raw[i] % 4
        word = "".join(syllables[b % len(syllables)] for b in raw[i + 1 : i + 1 + n])
        i += 1 + n
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    total = sum(weights)
    table: list[str] = []
    for word, weight in zip(words, weights, strict=True):
        table += [word] * max(1, round(weight / total * 65536))
    return tuple((table * 2)[:65536])


def text_chunks(seed: int, label: str, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of text: Zipf-distributed words, lines of 8 to 15 words (compresses like
    prose: zstd -3 to about a third)."""
    table = _zipf_table(seed)
    left, counter = size, 0
    while left > 0:
        raw = hashlib.shake_256(f"airgap-bench/{label}/{seed}/{counter}".encode()).digest(2 * 65536)
        counter += 1
        idx = memoryview(raw).cast("H")
        words = [table[x] for x in idx]
        lines, pos = [], 0
        while pos < len(words):
            n = 8 + (idx[pos] & 7)
            lines.append(" ".join(words[pos : pos + n]))
            pos += n
        piece = ("\n".join(lines) + "\n").encode()[:left]
        left -= len(piece)
        yield piece


def _binary_chunks(seed: int, label: str, size: int) -> Iterator[bytes]:
    """``size`` bytes that look like machine code to a compressor (6 random bits per byte)."""
    mask = bytes(b & 0x3F for b in range(256))
    for chunk in pseudo_random_chunks(seed, label, size):
        yield chunk.translate(mask)


def _dir_headers(dirs: Iterable[str]) -> list[bytes]:
    return [_tar_header(d if d.endswith("/") else d + "/", 0, 0o755, is_dir=True) for d in dirs]


def _text_tar_chunks(seed: int, size: int) -> Iterator[bytes]:
    """An uncompressed tar of text files of TEXT_FILE_SIZE bytes, about ``size`` bytes in all."""
    yield from _dir_headers(["usr", "usr/share", "usr/share/doc", "usr/share/doc/bench"])
    left, n = size, 0
    while left > 0:
        fsize = min(TEXT_FILE_SIZE, left)
        yield _tar_header(f"usr/share/doc/bench/text-{n:04d}.txt", fsize, 0o644)
        yield from text_chunks(seed, f"app-text-{n}", fsize)
        yield _padding(fsize)
        left -= fsize + 512
        n += 1
    yield _TAR_END


def text_layer(store: _BlobStore, seed: int, size: int) -> _Layer:
    blob = store.put_stream(_text_tar_chunks(seed, size))
    return _Layer(blob, blob.digest, OCI_LAYER_TAR)


def _gzip_tar_chunks(seed: int, target: int, out: dict[str, str]) -> Iterator[bytes]:
    """A gzip'd tar (level 6, mtime 0, no name) of 2 MiB text files and 1 MiB "libraries", stopped once
    the compressed stream reaches ``target`` bytes. Sets ``out["diff_id"]`` (sha256 of the tar)."""
    buf = io.BytesIO()
    diff = hashlib.sha256()
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=GZIP_LEVEL, mtime=0)

    def feed(data: bytes) -> None:
        diff.update(data)
        gz.write(data)

    def drain() -> bytes:
        data = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return data

    for header in _dir_headers(["usr", "usr/lib", "usr/lib/bench", "usr/share", "usr/share/bench"]):
        feed(header)
    emitted, n = 0, 0
    while emitted < target:
        if n % 3 == 2:
            path, fsize, chunks = f"usr/lib/bench/lib{n:04d}.so", MiB, _binary_chunks(seed, f"app-lib-{n}", MiB)
        else:
            path, fsize, chunks = f"usr/share/bench/data-{n:04d}.txt", 2 * MiB, text_chunks(seed, f"app-gz-{n}",
                                                                                           2 * MiB)
        feed(_tar_header(path, fsize, 0o644))
        for chunk in chunks:
            feed(chunk)
        feed(_padding(fsize))
        data = drain()
        emitted += len(data)
        n += 1
        yield data
    feed(_TAR_END)
    gz.close()
    yield drain()
    out["diff_id"] = "sha256:" + diff.hexdigest()


def gzip_layer(store: _BlobStore, seed: int, size: int) -> _Layer:
    out: dict[str, str] = {}
    blob = store.put_stream(_gzip_tar_chunks(seed, size, out))
    return _Layer(blob, out["diff_id"], OCI_LAYER_GZIP)


@dataclass
class ImageSet:
    layout: Path
    images: list[DemoImage]
    unique_bytes: int  # every blob of the layout (layers, configs, manifests), once
    blobs: int
    large_blob: Path
    large_digest: str
    text_blob: Path
    seconds: float


def build_image_set(dest: Path, *, large: int, text: int, gz: int, seed: int = 0) -> ImageSet:
    """The demo layout (large layer of ``large`` bytes) plus ``bench/app:1.0``: the demo's base layer, a
    ``text``-byte uncompressed text layer and a ``gz``-byte gzip layer. Deterministic, like the demo."""
    t0 = time.monotonic()
    images = build_demo_layout(dest, large_layer_size=large, seed=seed)
    store = _BlobStore(dest)
    base = _gzip_layer(store, _base_files(seed))  # the same blob the demo images share
    text_l = text_layer(store, seed, text)
    gzip_l = gzip_layer(store, seed, gz)
    layers = [base, text_l, gzip_l]
    cfg = _config(layers, arch="amd64", cmd=["/usr/bin/hello"], labels={"demo.image": "bench-app"},
                  comment="bench-app")
    blob, _ = _image_manifest(store, layers, cfg)
    app = DemoImage(BENCH_APP, blob.digest, OCI_MANIFEST,
                    f"OCI manifest: shared base, {text_l.blob.size}-byte text tar, {gzip_l.blob.size}-byte gzip tar")
    images.append(app)
    top = [(img, store.path_of(img.digest).stat().st_size) for img in images]
    _write_layout_files(dest, store, top)
    large_manifest = json.loads(store.path_of(images[-2].digest).read_bytes())
    large_digest = large_manifest["layers"][0]["digest"]
    files = [p for p in store.blob_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
    return ImageSet(dest, images, sum(p.stat().st_size for p in files), len(files), store.path_of(large_digest),
                    large_digest, store.path_of(text_l.blob.digest), time.monotonic() - t0)


# ============================================================================ running processes


@dataclass
class Measured:
    argv: list[str]
    seconds: float
    maxrss_kib: int
    returncode: int
    cpu_seconds: float  # user + system


# The tool processes are not started with subprocess.Popen from this process: Popen starts children with
# vfork (or posix_spawn), and on exec Linux sets the new program's ru_maxrss to at least the high-water RSS
# of the address space it replaces -- here this benchmark's own peak (hundreds of MiB after it has built
# the images and read a layer for the zstd limit). A tiny launcher process, started first, forks and execs
# each tool instead; a forked child's floor is the launcher's *current* RSS (~6 MiB), measured by running
# /bin/true through it (JSON "rss_floor_kib").
_LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    fd = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execvpe(req["argv"][0], req["argv"], req["env"])
        except BaseException as exc:
            os.write(2, ("launcher: cannot run %r: %s\n" % (req["argv"][0], exc)).encode())
        finally:
            os._exit(127)
    os.close(fd)
    sys.stdout.write(json.dumps({"pid": pid}) + "\n")
    sys.stdout.flush()
    _, status, usage = os.wait4(pid, 0)
    sys.stdout.write(json.dumps({"pid": pid, "status": status, "maxrss": usage.ru_maxrss,
                                 "cpu": usage.ru_utime + usage.ru_stime,
                                 "seconds": time.monotonic() - t0}) + "\n")
    sys.stdout.flush()
"""


class MediaThrottle:
    """Reads from the disk that holds ``path``, throttled to ``bps`` bytes/s for the processes put in a cgroup
    (v1 ``blkio.throttle.read_bps_device``, or v2 ``io.max``): removable media (a USB stick, a DVD) on the
    bench machine. Writes are not throttled. Needs root and a cgroup hierarchy with the controller."""

    NAME = "airgap-bench-media"

    def __init__(self, path: Path, bps: int) -> None:
        st = os.stat(path)
        node = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
        if (node / "partition").exists():  # throttles apply to the whole disk
            node = node.resolve().parent
        dev = (node / "dev").read_text().strip()
        v1, v2 = Path("/sys/fs/cgroup/blkio"), Path("/sys/fs/cgroup")
        if (v1 / "tasks").exists():
            self.group, self.root = v1 / self.NAME, v1
            self.group.mkdir(exist_ok=True)
            (self.group / "blkio.throttle.read_bps_device").write_text(f"{dev} {bps}\n")
            self.procs = "tasks"
        elif "io" in (v2 / "cgroup.controllers").read_text().split():
            self.group, self.root = v2 / self.NAME, v2
            self.group.mkdir(exist_ok=True)
            (self.group / "io.max").write_text(f"{dev} rbps={bps}\n")
            self.procs = "cgroup.procs"
        else:
            raise OSError("no cgroup controller for block I/O (blkio or io)")
        self.dev = dev

    def enter(self, pid: int) -> None:
        (self.group / self.procs).write_text(str(pid))

    def leave(self, pid: int) -> None:
        (self.root / self.procs).write_text(str(pid))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.group.rmdir()


class Launcher:
    """Runs one command at a time through the launcher process; wall time and ``os.wait4`` rusage."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.running: int | None = None  # pid (= process group) of the command in flight
        threading.Thread(target=self._read, name="launcher-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # EOF

    def _next(self, timeout: float | None) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if not line:
            raise RunFailed("the launcher process died")
        return dict(json.loads(line))

    def run(self, argv: list[str], *, log: Path, env: dict[str, str], timeout: float) -> Measured:
        """Run ``argv`` (output appended to ``log``). On timeout its process group is killed and RunFailed
        raised; a non-zero exit raises RunFailed too."""
        assert self.proc.stdin is not None
        with log.open("ab") as fh:
            fh.write(f"\n$ {shlex.join(argv)}\n".encode())
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        pid = int(self._next(60)["pid"])
        self.running = pid
        timed_out = False
        try:
            try:
                done = self._next(timeout)
            except queue.Empty:
                timed_out = True
                self.kill()
                done = self._next(60)
            self.running = None
        finally:
            if self.running is not None:  # interrupted while waiting: stop it, and take its result line
                self.kill()
                with contextlib.suppress(queue.Empty, RunFailed):
                    self._next(30)
        with contextlib.suppress(ProcessLookupError):  # anything the tool left in its group
            os.killpg(pid, signal.SIGKILL)
        if timed_out:
            raise RunFailed(f"timed out after {timeout:g}s: {shlex.join(argv)} (the tail of {log.name} is in the "
                            "results JSON)")
        code = os.waitstatus_to_exitcode(int(done["status"]))
        if code != 0:
            raise RunFailed(f"exit code {code}: {shlex.join(argv)}; its output is in {log}:\n{_tail(log)}")
        return Measured(argv, float(done["seconds"]), int(done["maxrss"]), code, float(done["cpu"]))

    def kill(self) -> None:
        pid, self.running = self.running, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _tail(path: Path, limit: int = 2000) -> str:
    data = path.read_bytes()
    return data[-limit:].decode("utf-8", "replace")


def _version(argv: list[str], env: dict[str, str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


# ============================================================================ registries


def registry_requests(reg: RegistryServer, start: int) -> Counter[str]:
    """Requests in the registry's access log after byte ``start``: "METHOD status" -> count
    (``GET /v2/`` pings counted apart as "PING")."""
    with reg.log.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode("utf-8", "replace")
    counts: Counter[str] = Counter()
    for method, path, status in _ACCESS_LINE.findall(text):
        counts["PING" if path == "/v2/" else f"{method} {status}"] += 1
    return counts


def registry_cpu(reg: RegistryServer) -> float:
    """CPU seconds (user + system) the registry process has used so far."""
    if reg.process is None:
        return 0.0
    try:
        fields = Path(f"/proc/{reg.process.pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs; not idle, not waiting for I/O) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU used during one measure by the registry, and by everything else on the machine (other users'
    processes: the machine is shared) besides the tool and the registry."""

    def __init__(self, reg: RegistryServer) -> None:
        self.reg, self.reg0, self.busy0 = reg, registry_cpu(reg), machine_busy()

    def result(self, tool_cpu: float) -> dict[str, float]:
        reg = registry_cpu(self.reg) - self.reg0
        return {"registry_cpu_s": reg, "other_cpu_s": max(0.0, machine_busy() - self.busy0 - reg - tool_cpu)}


def log_size(reg: RegistryServer) -> int:
    return reg.log.stat().st_size if reg.log.exists() else 0


def check_digests(reg: RegistryServer, images: list[DemoImage]) -> list[str]:
    """Every image's tag in ``reg`` points at its source digest; returns the problems."""
    problems = []
    with httpx.Client(base_url=reg.url, timeout=30, trust_env=False) as client:
        for img in images:
            repo, _, tag = img.name.rpartition(":")
            resp = client.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
            got = resp.headers.get("docker-content-digest")
            if resp.status_code != 200 or got != img.digest:
                problems.append(f"{img.name}: {resp.status_code} {got} (expected {img.digest})")
    return problems


# ============================================================================ the machine's limits


def limit_sha256(size: int) -> float:
    buf = bytearray(pseudo_random_bytes(0, "bench-sha", PIECE)) * max(1, size // PIECE)
    view = memoryview(buf)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for start in range(0, len(view), PIECE):
        h.update(view[start : start + PIECE])
    h.hexdigest()
    return len(buf) / MiB / (time.perf_counter() - t0)


def limit_zstd(path: Path, threads: int) -> tuple[float, float]:
    """zstd at the export's default level over the file in PIECE-sized frames (as airgap frames it) on ``threads``
    threads: (MiB/s of input, compressed/original)."""
    data = path.read_bytes()
    pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
    local = threading.local()

    def compress(piece: bytes) -> int:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = zstandard.ZstdCompressor(level=DEFAULT_LEVEL, write_content_size=True)
        return len(c.compress(piece))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        out = sum(pool.map(compress, pieces))
    seconds = time.perf_counter() - t0
    return len(data) / MiB / seconds, out / len(data)


def limit_disk(directory: Path, size: int, *, direct: bool = False) -> float | None:
    """``size`` bytes in 4 MiB blocks, then ``fsync``: buffered, or with ``O_DIRECT`` as the export writes its
    chunks (None where the file system refuses ``O_DIRECT``)."""
    data = pseudo_random_bytes(0, "bench-disk", PIECE)
    block: bytes | mmap.mmap = data
    if direct:
        block = mmap.mmap(-1, PIECE)  # page-aligned, as O_DIRECT needs
        block.write(data)
    path = directory / "disk-write.bin"
    try:
        t0 = time.perf_counter()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o600)
        except OSError:
            if direct:
                return None
            raise
        try:
            for _ in range(max(1, size // PIECE)):
                os.write(fd, block)
            os.fsync(fd)
        except OSError:
            if direct:
                return None
            raise
        finally:
            os.close(fd)
        seconds = time.perf_counter() - t0
    finally:
        path.unlink(missing_ok=True)
        if isinstance(block, mmap.mmap):
            block.close()
    return max(1, size // PIECE) * PIECE / MiB / seconds


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(READ):
            yield block


def limit_plain_put(reg: RegistryServer, path: Path, digest: str) -> float:
    """One POST + one monolithic PUT streaming ``path``: the fastest an uploader can push one blob here."""
    size = path.stat().st_size
    with httpx.Client(base_url=reg.url, timeout=600, trust_env=False) as client:
        t0 = time.perf_counter()
        resp = client.post("/v2/bench/plain/blobs/uploads/", headers={"Content-Length": "0"})
        if resp.status_code != 202:
            raise RunFailed(f"plain upload: POST answered {resp.status_code}")
        url = httpx.URL(str(resp.request.url.join(resp.headers["location"]))).copy_add_param("digest", digest)
        resp = client.put(url, content=_file_chunks(path),
                          headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
        seconds = time.perf_counter() - t0
        if resp.status_code != 201:
            raise RunFailed(f"plain upload: PUT answered {resp.status_code}: {resp.text[:200]}")
    return size / MiB / seconds


def limit_plain_get(reg: RegistryServer, repo: str, digest: str, size: int) -> float:
    """One streaming GET of a blob, discarded: the fastest anything reads it from the source registry."""
    got = 0
    with httpx.Client(base_url=reg.url, timeout=600, trust_env=False) as client:
        t0 = time.perf_counter()
        with client.stream("GET", f"/v2/{repo}/blobs/{digest}") as resp:
            for chunk in resp.iter_raw():
                got += len(chunk)
        seconds = time.perf_counter() - t0
    if got != size:
        raise RunFailed(f"plain download: {got} of {size} bytes")
    return size / MiB / seconds


# ============================================================================ the benchmark


@dataclass
class Config:
    work: Path
    rounds: int
    large: int
    text: int
    gzip: int
    chunk_size: str
    limit_scale: int  # divides the sizes of the limit measurements
    timeout: float
    quick: bool
    warm_imports: bool = False  # --warm-imports: leave the import inputs in the page cache
    media_mibps: int = 0  # --media-mibps N: also import once from "media" whose reads are throttled to N MiB/s
    warmup: bool = True  # --no-warm-up: no unmeasured export per tool before the rounds


@dataclass
class Bench:
    cfg: Config
    work: Path
    env: dict[str, str]
    airgap_bin: str
    launcher: Launcher
    key: Path = field(init=False)
    registries: list[RegistryServer] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    limits: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = self.work / "keys" / "bench.key"
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.policy = self.work / "skopeo-policy.json"
        self.policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
        self.authfile = self.work / "skopeo-auth.json"
        self.authfile.write_text('{"auths": {}}\n')

    # -- helpers ---------------------------------------------------------------------------------
    def registry(self) -> RegistryServer:
        reg = start_registry(self.work / "registries")
        self.registries.append(reg)
        return reg

    def drop_registry(self, reg: RegistryServer) -> None:
        reg.close()
        shutil.rmtree(reg.workdir, ignore_errors=True)

    def close(self) -> None:
        self.launcher.close()
        for reg in reversed(self.registries):
            with contextlib.suppress(Exception):
                reg.close()

    def airgap(self, *argv: str, log: str) -> Measured:
        return self.launcher.run([self.airgap_bin, *argv], log=self.logs / log, env=self.env,
                                 timeout=self.cfg.timeout)

    def skopeo(self, src: str, dest: str, *, log: str, tls: str) -> Measured:
        argv = ["skopeo", "--policy", str(self.policy), "copy", "--authfile", str(self.authfile), "--all",
                "--preserve-digests", tls, src, dest]
        return self.launcher.run(argv, log=self.logs / log, env=self.env, timeout=self.cfg.timeout)

    # -- the measures ----------------------------------------------------------------------------
    def export_airgap(self, src: RegistryServer, images: list[DemoImage], bundle: Path, r: int) -> dict[str, Any]:
        self.even_start(src)
        watch = CpuWatch(src)
        m = self.airgap("export", *[src.ref(i.name) for i in images], "--output", str(bundle), "--key",
                        str(self.key), "--chunk-size", self.cfg.chunk_size, log=f"r{r}-airgap-export.log")
        stream = sum(p.stat().st_size for p in bundle.glob("chunk-*.bin"))
        return {"seconds": m.seconds, "maxrss_kib": m.maxrss_kib, "cpu_s": m.cpu_seconds,
                **watch.result(m.cpu_seconds), "bundle_bytes": stream,
                "chunks": len(list(bundle.glob("chunk-*.bin")))}

    def skopeo_dest(self, img: DemoImage, layout: Path, dirs: Path) -> str:
        if img.media_type in DOCKER_TYPES:  # see the module docstring
            return f"dir:{dirs / img.name.replace('/', '_').replace(':', '_')}"
        return f"oci:{layout}:{img.name}"

    def export_skopeo(self, src: RegistryServer, images: list[DemoImage], layout: Path, dirs: Path,
                      r: int) -> dict[str, Any]:
        dirs.mkdir(parents=True)
        self.even_start(src)
        watch = CpuWatch(src)
        runs = []
        for img in images:
            dest = self.skopeo_dest(img, layout, dirs)
            if dest.startswith("dir:"):
                Path(dest[4:]).mkdir()
            runs.append(self.skopeo(f"docker://{src.ref(img.name)}", dest, log=f"r{r}-skopeo-export.log",
                                    tls="--src-tls-verify=false"))
        size = sum(p.stat().st_size for d in (layout, dirs) for p in d.rglob("*") if p.is_file())
        total = _sum_runs(runs)
        return {**total, **watch.result(total["cpu_s"]), "output_bytes": size}

    def warm_up(self, images: ImageSet, src: RegistryServer) -> None:
        """One export per tool before the rounds, not measured: the first request for each blob costs the
        source registry more (its blob descriptor cache is cold; in the first round it used 1.3-1.7 CPU-s
        against 0.7-0.9 later) and each tool's files come from the disk once. Without it the first round's
        exports, whichever tool went first, were 1-4 s slower than the others."""
        rd = self.work / "warm-up"
        step("warm-up (not measured): one export per tool")
        try:
            self.export_airgap(src, images.images, rd / "bundle", 0)
            self.export_skopeo(src, images.images, rd / "oci-layout", rd / "dirs", 0)
        finally:
            shutil.rmtree(rd, ignore_errors=True)

    def slow_media_imports(self, images: ImageSet, bundle: Path, layout: Path, dirs: Path, state: Path,
                           order: list[str], result: dict[str, Any]) -> None:
        """Each tool imports once more, into a fresh registry, reading its input (bundle or OCI layout) from the
        disk throttled to ``--media-mibps`` (the launcher, and so the tool, in a throttled cgroup)."""
        bps = self.cfg.media_mibps * MiB
        try:
            throttle = MediaThrottle(bundle, bps)
        except OSError as exc:
            result["slow_media"] = {"skipped": str(exc)}
            print(f"    slow-media imports skipped: {exc}")
            return
        result["slow_media"] = {"mibps": self.cfg.media_mibps, "device": throttle.dev}
        shutil.rmtree(state, ignore_errors=True)
        r, pid = len(self.rounds), self.launcher.proc.pid
        try:
            for tool in order:
                step(f"round {r}: {tool} import from media read at {self.cfg.media_mibps} MiB/s")
                dst = self.registry()
                try:
                    throttle.enter(pid)
                    try:
                        out = (self.import_airgap(bundle, dst, state, r, noop=False) if tool == "airgap" else
                               self.import_skopeo(images.images, layout, dirs, dst, r))
                    finally:
                        throttle.leave(pid)
                    problems = check_digests(dst, images.images)
                    out["digests_ok"] = not problems
                    if problems:
                        raise RunFailed(f"{tool} import from slow media left wrong content: " + "; ".join(problems))
                finally:
                    self.drop_registry(dst)
                result["slow_media"][tool] = out
                show(out)
        finally:
            throttle.close()

    def even_start(self, src: RegistryServer) -> None:
        """Before an export: the same start for both tools, whichever goes first in its round. What the step
        before wrote is flushed first (else an export pays for writing back the other tool's output, or the
        image set just pushed), and the source registry's storage is read into the page cache (the source
        stands for a registry across the network: its disk is not what is measured, and without this the
        tool that goes first after an import, which dropped the cache, pays for reading it)."""
        os.sync()
        for path in sorted(src.storage.rglob("*")):
            if path.is_file():
                with path.open("rb", buffering=0) as f:
                    while f.read(MiB):
                        pass

    def cold(self) -> bool:
        """Before an import: drop the page cache, so that each tool reads its input (bundle or OCI layout) from
        the disk, as an import reads removable media. False when that is not allowed (not root, a container)."""
        if self.cfg.warm_imports:
            return False
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            return False
        return True

    def import_airgap(self, bundle: Path, dst: RegistryServer, state: Path, r: int, *, noop: bool) -> dict[str, Any]:
        cold = False if noop else self.cold()
        start, watch = log_size(dst), CpuWatch(dst)
        name = "noop" if noop else "import"
        log = f"r{r}-airgap-{name}.log"
        before = log_size_path(self.logs / log)
        m = self.airgap("import", str(bundle), "--to", dst.host, "--pubkey", f"{self.key}.pub", "--state-dir",
                        str(state), log=log)
        requests = registry_requests(dst, start)
        out = {"seconds": m.seconds, "maxrss_kib": m.maxrss_kib, "cpu_s": m.cpu_seconds,
               **watch.result(m.cpu_seconds), "requests": dict(sorted(requests.items())), "cold_cache": cold}
        if noop:
            said = (self.logs / log).read_bytes()[before:].decode("utf-8", "replace")
            out["said_nothing_to_do"] = "nothing to do" in said
            out["only_head"] = all(k == "PING" or k.startswith("HEAD ") for k in requests)
        return out

    def import_skopeo(self, images: list[DemoImage], layout: Path, dirs: Path, dst: RegistryServer,
                      r: int) -> dict[str, Any]:
        cold = self.cold()
        start, watch = log_size(dst), CpuWatch(dst)
        runs = [self.skopeo(self.skopeo_dest(img, layout, dirs), f"docker://{dst.ref(img.name)}",
                            log=f"r{r}-skopeo-import.log", tls="--dest-tls-verify=false") for img in images]
        total = _sum_runs(runs)
        return {**total, **watch.result(total["cpu_s"]),
                "requests": dict(sorted(registry_requests(dst, start).items())), "cold_cache": cold}

    def measure_limits(self, images: ImageSet, src: RegistryServer) -> dict[str, float]:
        scale = self.cfg.limit_scale
        nproc = os.cpu_count() or 1
        out: dict[str, float] = {}
        out["sha256_mibps"] = limit_sha256(256 * MiB // scale)
        out["zstd_mibps_1thread"], out["zstd_ratio"] = limit_zstd(images.text_blob, 1)
        out[f"zstd_mibps_{nproc}threads"], _ = limit_zstd(images.text_blob, nproc)
        out["disk_write_fsync_mibps"] = limit_disk(self.work, GiB // scale) or 0.0
        direct = limit_disk(self.work, GiB // scale, direct=True)
        if direct is not None:
            out["disk_write_direct_mibps"] = direct
        reg = self.registry()
        try:
            out["plain_put_mibps"] = limit_plain_put(reg, images.large_blob, images.large_digest)
        finally:
            self.drop_registry(reg)
        self.even_start(src)  # as for the exports: the imports before it dropped the page cache
        out["plain_get_mibps"] = limit_plain_get(src, "demo/large", images.large_digest,
                                                 images.large_blob.stat().st_size)
        return out

    def round(self, r: int, images: ImageSet, src: RegistryServer) -> None:
        imgs = images.images
        order = ["airgap", "skopeo"] if r % 2 else ["skopeo", "airgap"]
        rd = self.work / f"round-{r}"
        bundle, layout, dirs, state = rd / "bundle", rd / "oci-layout", rd / "dirs", rd / "state"
        result: dict[str, Any] = {"round": r, "order": order}
        self.rounds.append(result)
        for tool in order:
            step(f"round {r}: {tool} export")
            if tool == "airgap":
                result["airgap_export"] = self.export_airgap(src, imgs, bundle, r)
            else:
                result["skopeo_export"] = self.export_skopeo(src, imgs, layout, dirs, r)
            show(result[f"{tool}_export"])
        for tool in order:
            step(f"round {r}: {tool} import into a fresh registry")
            dst = self.registry()
            try:
                if tool == "airgap":
                    result["airgap_import"] = self.import_airgap(bundle, dst, state, r, noop=False)
                else:
                    result["skopeo_import"] = self.import_skopeo(imgs, layout, dirs, dst, r)
                show(result[f"{tool}_import"])
                problems = check_digests(dst, imgs)
                result[f"{tool}_import"]["digests_ok"] = not problems
                if problems:
                    raise RunFailed(f"{tool} import left wrong content in the target: " + "; ".join(problems))
                if tool == "airgap":
                    step(f"round {r}: airgap no-op import into the complete registry")
                    result["airgap_noop"] = self.import_airgap(bundle, dst, state, r, noop=True)
                    show(result["airgap_noop"])
            finally:
                self.drop_registry(dst)
        if self.cfg.media_mibps and r == self.cfg.rounds:
            self.slow_media_imports(images, bundle, layout, dirs, state, order, result)
        shutil.rmtree(rd, ignore_errors=True)
        step(f"round {r}: the machine's limits")
        lim = self.measure_limits(images, src)
        self.limits.append(lim)
        result["limits"] = lim
        show(lim)


def _sum_runs(runs: list[Measured]) -> dict[str, Any]:
    """Several processes run one after the other, as one measure: summed time and CPU, largest RSS."""
    return {"seconds": sum(m.seconds for m in runs), "maxrss_kib": max(m.maxrss_kib for m in runs),
            "cpu_s": sum(m.cpu_seconds for m in runs), "processes": len(runs)}


def log_size_path(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def show(d: dict[str, Any]) -> None:
    parts = []
    for k, v in d.items():
        parts.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
    print("    " + " ".join(parts), flush=True)


# ============================================================================ summary


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def summarize(bench: Bench, images: ImageSet) -> dict[str, Any]:
    rounds = [r for r in bench.rounds if "airgap_noop" in r and "skopeo_import" in r]

    def col(key: str, field_: str, scale: float = 1.0) -> dict[str, float] | None:
        vals = [r[key][field_] / scale for r in rounds if key in r]
        return spread(vals) if vals else None

    def cpu_floor(key: str) -> float:
        """The wall time if every core were busy all along with the run's own CPU work and the registry's
        (median over the rounds of (tool + registry CPU s) / cores)."""
        return statistics.median((r[key]["cpu_s"] + r[key]["registry_cpu_s"]) / (os.cpu_count() or 1)
                                 for r in rounds)

    s: dict[str, Any] = {"rounds_complete": len(rounds)}
    if not rounds:
        return s
    mib = images.unique_bytes / MiB
    for phase in ("export", "import"):
        a, k = col(f"airgap_{phase}", "seconds"), col(f"skopeo_{phase}", "seconds")
        assert a is not None and k is not None
        ratio = a["median"] / k["median"]
        target = TARGETS[f"{phase}_ratio"]
        s[phase] = {"airgap_s": a, "skopeo_s": k, "ratio": ratio, "target_ratio": target, "pass": ratio <= target,
                    "airgap_mibps": mib / a["median"], "skopeo_mibps": mib / k["median"],
                    "airgap_cpu_floor_mibps": mib / cpu_floor(f"airgap_{phase}"),
                    "airgap_cpu_s": col(f"airgap_{phase}", "cpu_s"), "skopeo_cpu_s": col(f"skopeo_{phase}", "cpu_s"),
                    "airgap_registry_cpu_s": col(f"airgap_{phase}", "registry_cpu_s"),
                    "skopeo_registry_cpu_s": col(f"skopeo_{phase}", "registry_cpu_s"),
                    "airgap_other_cpu_s": col(f"airgap_{phase}", "other_cpu_s"),
                    "skopeo_other_cpu_s": col(f"skopeo_{phase}", "other_cpu_s")}
    written = col("airgap_export", "bundle_bytes", MiB)
    assert written is not None
    s["export"]["airgap_written_mibps"] = written["median"] / s["export"]["airgap_s"]["median"]
    noop = col("airgap_noop", "seconds")
    assert noop is not None
    s["noop_import"] = {"airgap_s": noop, "target_s": TARGETS["noop_seconds"],
                        "pass": noop["max"] < TARGETS["noop_seconds"],
                        "said_nothing_to_do": all(r["airgap_noop"]["said_nothing_to_do"] for r in rounds),
                        "only_head": all(r["airgap_noop"]["only_head"] for r in rounds),
                        "requests": rounds[-1]["airgap_noop"]["requests"]}
    for phase in ("export", "import", "noop"):
        a = col(f"airgap_{phase}", "maxrss_kib", 1024)
        k = col(f"skopeo_{phase}", "maxrss_kib", 1024) if phase != "noop" else None
        assert a is not None
        s[f"rss_{phase}"] = {"airgap_mib": a, "skopeo_mib": k, "target_mib": TARGETS["rss_mib"],
                             "pass": a["max"] <= TARGETS["rss_mib"]}
    lims = {k: spread([lim[k] for lim in bench.limits]) for k in bench.limits[0]} if bench.limits else {}
    s["limits"] = lims
    slow = next((r["slow_media"] for r in bench.rounds if "airgap" in r.get("slow_media", {})
                 and "skopeo" in r.get("slow_media", {})), None)
    if slow is not None:
        a, k = slow["airgap"]["seconds"], slow["skopeo"]["seconds"]
        s["slow_media_import"] = {"mibps": slow["mibps"], "airgap_s": a, "skopeo_s": k, "ratio": a / k}
    return s


def print_table(s: dict[str, Any], images: ImageSet, cfg: Config) -> None:
    if not s.get("rounds_complete"):
        print("no complete round: nothing to tabulate")
        return
    mib = images.unique_bytes / MiB
    rows = [("measure", "airgap median (min-max)", "skopeo median (min-max)", "airgap/skopeo", "target", "result")]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for phase in ("export", "import"):
        p = s[phase]
        rows.append((f"{phase} (s)", _fmt(p["airgap_s"], 2), _fmt(p["skopeo_s"], 2), f"{p['ratio']:.2f}",
                     f"ratio <= {p['target_ratio']}", verdict(p["pass"])))
    n = s["noop_import"]
    rows.append(("no-op import (s)", _fmt(n["airgap_s"], 2), "-", "-", f"< {n['target_s']:.0f} s (max)",
                 verdict(n["pass"])))
    for phase, label in (("export", "export"), ("import", "import"), ("noop", "no-op import")):
        p = s[f"rss_{phase}"]
        rows.append((f"peak RSS {label} (MiB)", _fmt(p["airgap_mib"], 0), _fmt(p["skopeo_mib"], 0),
                     f"{p['airgap_mib']['median'] / p['skopeo_mib']['median']:.2f}" if p["skopeo_mib"] else "-",
                     f"<= {p['target_mib']:.0f} MiB (max)", verdict(p["pass"])))
    for phase in ("export", "import"):
        p = s[phase]
        a_cpu, k_cpu = p["airgap_cpu_s"]["median"], p["skopeo_cpu_s"]["median"]
        a_reg, k_reg = p["airgap_registry_cpu_s"]["median"], p["skopeo_registry_cpu_s"]["median"]
        rows.append((f"{phase} CPU s: tool + registry", f"{a_cpu:.1f} + {a_reg:.1f}", f"{k_cpu:.1f} + {k_reg:.1f}",
                     f"{(a_cpu + a_reg) / (k_cpu + k_reg):.2f}", "", ""))
        rows.append((f"{phase}: other processes' CPU s", _fmt(p["airgap_other_cpu_s"]), _fmt(p["skopeo_other_cpu_s"]),
                     "", "noise; ~0 is clean", ""))
    for phase in ("export", "import"):
        p = s[phase]
        rows.append((f"{phase} throughput (MiB/s)", f"{p['airgap_mibps']:.1f}", f"{p['skopeo_mibps']:.1f}",
                     f"{p['airgap_mibps'] / p['skopeo_mibps']:.2f}", "", ""))
    _print_rows(rows)
    print(f"\n{len(images.images)} images, {images.blobs} unique blobs, {mib:.0f} MiB unique content "
          f"(throughput = unique content / wall time); {s['rounds_complete']} round(s); chunk size {cfg.chunk_size}")
    print("exports read from a source registry whose storage is in the page cache (read in before each export, "
          "both tools, after a sync)")
    print("imports read their input " + ("from the page cache (--warm-imports)" if cfg.warm_imports else
          "from the disk (page cache dropped before each import, both tools)"))
    if "slow_media_import" in s:
        sm = s["slow_media_import"]
        print(f"import from media read at {sm['mibps']} MiB/s (once, last round): airgap {sm['airgap_s']:.2f} s, "
              f"skopeo {sm['skopeo_s']:.2f} s, ratio {sm['ratio']:.2f}")
    print(f"no-op import: said 'nothing to do': {n['said_nothing_to_do']}; only HEAD requests (+ /v2/ ping): "
          f"{n['only_head']}; requests {n['requests']}")

    lim = s["limits"]
    if not lim:
        return
    nproc = os.cpu_count() or 1

    def med(key: str) -> float:
        return float(lim[key]["median"])

    rows = [("limit (median of rounds)", "measured", "airgap figure", "airgap / limit")]
    rows.append(("sha256, 1 thread (MiB/s)", _fmt(lim["sha256_mibps"], 0), "", ""))
    rows.append((f"zstd -{DEFAULT_LEVEL} on the text layer, 1 thread (MiB/s)", _fmt(lim["zstd_mibps_1thread"], 0),
                 f"ratio {med('zstd_ratio'):.2f}", ""))
    rows.append((f"zstd -{DEFAULT_LEVEL} on the text layer, {nproc} threads (MiB/s)",
                 _fmt(lim[f"zstd_mibps_{nproc}threads"], 0), "", ""))
    ex, im = s["export"]["airgap_mibps"], s["import"]["airgap_mibps"]
    wr = s["export"]["airgap_written_mibps"]
    rows.append(("disk write 4 MiB blocks + fsync (MiB/s)", _fmt(lim["disk_write_fsync_mibps"], 0),
                 f"export writes {wr:.1f} MiB/s", f"{wr / med('disk_write_fsync_mibps'):.0%}"))
    if "disk_write_direct_mibps" in lim:
        rows.append(("the same with O_DIRECT, as the export writes (MiB/s)", _fmt(lim["disk_write_direct_mibps"], 0),
                     f"export writes {wr:.1f} MiB/s", f"{wr / med('disk_write_direct_mibps'):.0%}"))
    rows.append(("plain GET of the large blob (MiB/s)", _fmt(lim["plain_get_mibps"], 0),
                 f"export {ex:.1f} MiB/s", f"{ex / med('plain_get_mibps'):.0%}"))
    rows.append(("plain POST + streamed PUT of the large blob (MiB/s)", _fmt(lim["plain_put_mibps"], 0),
                 f"import {im:.1f} MiB/s", f"{im / med('plain_put_mibps'):.0%}"))
    for phase, figure in (("export", ex), ("import", im)):
        floor = s[phase]["airgap_cpu_floor_mibps"]
        rows.append((f"{phase}: all {nproc} cores busy with its CPU work (MiB/s)", f"{floor:.0f}",
                     f"{phase} {figure:.1f} MiB/s", f"{figure / floor:.0%}"))
    print()
    _print_rows(rows)


def _print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def airgap_source() -> dict[str, Any]:
    """Which airgap code runs: the commit, the files that differ from it, and a hash of every airgap/*.py
    (the repository is shared: if the hash changes during a run, the rounds measured different code)."""
    def git(*argv: str) -> str:
        try:
            out = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
            return out.stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    h = hashlib.sha256()
    for path in sorted((ROOT / "airgap").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "uncommitted": git("status", "--porcelain", "--", "airgap").splitlines(), "sources_sha256": h.hexdigest()}


def machine_info(env: dict[str, str], airgap_bin: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1]) * 1024
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "airgap": _version([airgap_bin, "--version"], env),
        "skopeo": _version(["skopeo", "--version"], env),
        "docker_registry": _version(["docker-registry", "--version"], env),
        "zstandard": zstandard.__version__,
        "loadavg_at_start": os.getloadavg(),
        "httpx": httpx.__version__,
    }


# ============================================================================ main


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work",
                        help="parent of the run's temporary work directory (default bench/work)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds of each measure (default 6: each tool goes first in half of them)")
    parser.add_argument("--large-size", type=int, default=None, metavar="BYTES",
                        help=f"size of the large layer (default {LARGE_SIZE // MiB} MiB, "
                             f"{LARGE_SIZE // MiB // QUICK_FACTOR} MiB with --quick)")
    parser.add_argument("--quick", action="store_true", help="everything ~10x smaller: a smoke run")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds any one tool run may take (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--warm-imports", action="store_true",
                        help="leave the import inputs in the page cache (default: drop it before each import, so "
                             "that both tools read their input from the disk, as from removable media)")
    parser.add_argument("--no-warm-up", dest="warmup", action="store_false",
                        help="start measuring at once (default: one unmeasured export per tool first)")
    parser.add_argument("--media-mibps", type=int, default=0, metavar="N",
                        help="also import once (last round, both tools) with the input's reads throttled to N MiB/s, "
                             "as from a USB stick or a DVD (needs root and the blkio or io cgroup controller)")
    args = parser.parse_args(argv)
    if args.media_mibps < 0:
        parser.error("--media-mibps must be >= 0")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    div = QUICK_FACTOR if args.quick else 1
    large = args.large_size if args.large_size is not None else LARGE_SIZE // div
    if large < 0:
        parser.error("--large-size must be >= 0")
    return Config(work=args.work, rounds=args.rounds, large=large, text=TEXT_SIZE // div, gzip=GZIP_SIZE // div,
                  chunk_size=QUICK_CHUNK_SIZE if args.quick else CHUNK_SIZE, limit_scale=div, timeout=args.timeout,
                  quick=args.quick, warm_imports=args.warm_imports, media_mibps=args.media_mibps,
                  warmup=args.warmup)


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    t_start = time.monotonic()
    cfg.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"run-{stamp}-", dir=cfg.work))
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS and not k.startswith("AIRGAP_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "DOCKER_CONFIG": str(work / "docker-config"),
                "REGISTRY_AUTH_FILE": str(work / "skopeo-auth.json"), "XDG_STATE_HOME": str(work / "xdg-state"),
                "AIRGAP_STATE_DIR": str(work / "airgap-state")})
    (work / "docker-config").mkdir()
    airgap_bin = str(Path(sys.executable).parent / "airgap")
    # airgap runs as installed: with its modules' bytecode (see bench/README.md)
    compileall.compile_dir(str(ROOT / "airgap"), quiet=1)
    bench = Bench(cfg, work, env, airgap_bin, Launcher())
    doc: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "config": {
        **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, "targets": TARGETS}}
    images: ImageSet | None = None
    failure: str | None = None
    try:
        doc["machine"] = machine_info(env, airgap_bin)
        doc["airgap_source"] = doc["airgap_source_at_end"] = airgap_source()
        src_info = doc["airgap_source"]
        print(f"airgap {src_info['commit']} ({src_info['subject'][:60]})"
              + (f", {len(src_info['uncommitted'])} uncommitted file(s) in airgap/" if src_info["uncommitted"] else ""),
              flush=True)
        busy0 = machine_busy()
        time.sleep(2.0)
        busy = (machine_busy() - busy0) / 2.0 / (os.cpu_count() or 1)
        doc["machine"]["busy_before_start"] = busy
        if busy > 0.1:
            print(f"note: other processes keep the machine {busy:.0%} busy before the bench starts: timings will be "
                  "noisy (see 'other CPU' in the table)", flush=True)
        floor = bench.launcher.run(["/bin/true"], log=bench.logs / "floor.log", env=env, timeout=60)
        doc["machine"]["rss_floor_kib"] = floor.maxrss_kib  # what any command measured here shows at least
        step(f"building the image set in {work} (large layer {cfg.large / MiB:.0f} MiB, text layer "
             f"{cfg.text / MiB:.0f} MiB, gzip layer ~{cfg.gzip / MiB:.0f} MiB)")
        images = build_image_set(work / "layout", large=cfg.large, text=cfg.text, gz=cfg.gzip)
        print(f"    {len(images.images)} images, {images.blobs} blobs, {images.unique_bytes / MiB:.0f} MiB unique, "
              f"built in {images.seconds:.1f}s")
        doc["images"] = {"unique_bytes": images.unique_bytes, "blobs": images.blobs,
                         "build_seconds": images.seconds,
                         "list": [{"name": i.name, "digest": i.digest, "media_type": i.media_type,
                                   "description": i.description} for i in images.images]}
        src = bench.registry()
        step(f"pushing it into the source registry {src.host}")
        t0 = time.monotonic()
        push_layout(images.layout, src.host)
        doc["images"]["push_seconds"] = time.monotonic() - t0
        problems = check_digests(src, images.images)
        if problems:
            raise RunFailed("the source registry does not hold the image set: " + "; ".join(problems))
        bench.airgap("keygen", str(bench.key), log="keygen.log")
        if cfg.warmup:
            bench.warm_up(images, src)
        for r in range(1, cfg.rounds + 1):
            bench.round(r, images, src)
    except Exception as exc:  # noqa: BLE001 - any error fails the run, and is reported with the results
        failure = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, RunFailed):
            traceback.print_exc()
        print(f"\nbench FAILED: {failure}", file=sys.stderr)
    except KeyboardInterrupt:
        failure = "interrupted"
        print("\nbench interrupted", file=sys.stderr)
    finally:
        bench.close()
        if failure is not None:
            for log in sorted(bench.logs.glob("*.log")) if bench.logs.exists() else []:
                doc.setdefault("log_tails", {})[log.name] = _tail(log, 3000)
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            cfg.work.rmdir()  # only when no other run uses it
    doc["rounds"] = bench.rounds
    doc["failure"] = failure
    doc["seconds_total"] = time.monotonic() - t_start
    doc["loadavg_at_end"] = os.getloadavg()
    if "airgap_source" in doc:
        doc["airgap_source_at_end"] = airgap_source()
        if doc["airgap_source_at_end"]["sources_sha256"] != doc["airgap_source"]["sources_sha256"]:
            print("\nWARNING: airgap's code changed during the run (someone edited airgap/): the rounds measured "
                  "different code; run again", file=sys.stderr)
    if images is not None:
        doc["summary"] = summarize(bench, images)
        print()
        print_table(doc["summary"], images, cfg)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{stamp}.json"
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\ntotal {doc['seconds_total']:.0f}s; results in {out.relative_to(ROOT)}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
