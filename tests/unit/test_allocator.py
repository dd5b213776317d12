"""The import's allocator settings: 2 MiB buffers freed and made again no longer fault their pages in each time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airgap.cli.allocator import keep_frame_buffers

CHURN = """
import resource, sys, threading
if sys.argv[1] == "tuned":
    from airgap.cli.allocator import keep_frame_buffers
    assert keep_frame_buffers()
def churn():
    block = b"x" * (1 << 20)
    for _ in range(200):  # like the reader: a block, a frame joined from it, a decoded frame
        frame = b"".join([block, block])
        out = bytes(frame[:-1]) + b"y"
        del frame, out
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=churn) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], check=True, capture_output=True, text=True)
    return int(out.stdout)


def test_freed_frame_buffers_are_reused_without_faults() -> None:
    if not keep_frame_buffers():
        pytest.skip("not glibc: no mallopt")
    plain, tuned = _faults("plain"), _faults("tuned")
    # 2 threads x 200 rounds x ~4 MiB: about 400,000 faults when every buffer goes back to the kernel
    assert plain > 50_000
    assert tuned < plain // 10
