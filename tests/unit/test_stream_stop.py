"""The export pipeline stops at once on Ctrl-C, wherever the main thread waits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

SCENARIO = textwrap.dedent("""
    import signal, threading, time
    from contextlib import contextmanager
    from airgap.bundle.stream import Member, encoded_frames

    @contextmanager
    def slow(offset):
        def gen():
            time.sleep(1.0)  # the head member's source is slow: the main thread waits for its first frame
            yield b"x" * 1000
        yield gen()

    # the members read ahead fill the 1 MiB budget at once, and their producers wait for budget
    members = [(0, Member("slow", 1000, opener=slow), 0)]
    members += [(i, Member(f"m{i}", 4 << 20, data=bytes(4 << 20)), 0) for i in (1, 2, 3)]
    threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
    try:
        for _ in encoded_frames(members, segment=1 << 20, level=1, jobs=4, budget_bytes=1 << 20):
            pass
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_while_waiting_for_the_head_member_does_not_wait_for_producers_blocked_on_budget() -> None:
    """Ctrl-C raised inside the ordering generator ended it (and joined its threads) before the consumer could
    cancel the budget: the producers waiting for budget were never woken, and the export hung."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "interrupted", proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 10
