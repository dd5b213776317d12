"""The transfer engine's scheduler: large blobs take at most their lanes, small ones go on beside them."""

from __future__ import annotations

import threading
import time

import pytest

from airgap.transfer.engine import _run_all


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.peak_heavy = 0
        self.started: list[int] = []
        self.light_while_heavy_full = 0

    def task(self, n: int, heavy: frozenset[int], seconds: float, fail: bool = False) -> object:
        def run() -> None:
            with self.lock:
                self.running.add(n)
                self.started.append(n)
                now_heavy = len(self.running & heavy)
                self.peak_heavy = max(self.peak_heavy, now_heavy)
                if n not in heavy and now_heavy == 2:
                    self.light_while_heavy_full += 1
            time.sleep(seconds)
            with self.lock:
                self.running.discard(n)
            if fail:
                raise ValueError(f"task {n} failed")
        return run


def test_heavy_tasks_take_at_most_their_lanes_and_light_ones_fill_the_rest() -> None:
    heavy = frozenset(range(5))  # sorted biggest first, as the engine does
    rec = Recorder()
    tasks = [rec.task(n, heavy, 0.15 if n in heavy else 0.02) for n in range(20)]
    assert _run_all(6, tasks, heavy=heavy, heavy_jobs=2) == []
    assert sorted(rec.started) == list(range(20))
    assert rec.peak_heavy == 2
    assert rec.light_while_heavy_full >= 10  # the small blobs did not wait behind the large ones


def test_without_a_limit_heavy_tasks_use_every_thread() -> None:
    heavy = frozenset(range(6))
    rec = Recorder()
    assert _run_all(6, [rec.task(n, heavy, 0.1) for n in range(6)], heavy=heavy) == []
    assert rec.peak_heavy == 6


def test_first_failure_is_raised_and_nothing_more_starts() -> None:
    rec = Recorder()
    heavy: frozenset[int] = frozenset()
    tasks = [rec.task(n, heavy, 0.05, fail=(n == 1)) for n in range(30)]
    with pytest.raises(ValueError, match="task 1 failed"):
        _run_all(2, tasks)
    assert len(rec.started) < 10
    assert not rec.running  # the task in flight on the other thread was let finish


def test_keep_going_runs_everything_and_returns_the_failures_in_order() -> None:
    rec = Recorder()
    heavy = frozenset({0, 3})
    tasks = [rec.task(n, heavy, 0.01, fail=(n in (3, 7))) for n in range(10)]
    out = _run_all(3, tasks, keep_going=True, heavy=heavy, heavy_jobs=1)
    assert [n for n, _ in out] == [3, 7]
    assert all(isinstance(e, ValueError) for _, e in out)
    assert sorted(rec.started) == list(range(10))


def test_progress_counts_each_byte_once_and_the_count_of_bytes_read_counts_every_read() -> None:
    """A blob continued at an offset moves the bar past that offset at once; a retry that reads again from an
    earlier byte does not move it twice; the bytes read (what the summary says was sent) count every read."""
    from contextlib import contextmanager

    from airgap.transfer.engine import _counting
    from airgap.transfer.events import BytesMoved

    data = bytes(range(256)) * 40  # 10240 bytes

    @contextmanager
    def opener(offset: int):  # type: ignore[no-untyped-def]
        yield (data[i:i + 1000] for i in range(offset, len(data), 1000))

    moved: list[int] = []
    read = [0]
    counted = _counting(opener, lambda e: moved.append(e.n) if isinstance(e, BytesMoved) else None, read)
    with counted(4000) as chunks:  # an earlier run's session held 4000 bytes
        first = [next(chunks), next(chunks)]  # then the connection drops at 6000
    assert sum(moved) == 6000 and read[0] == 2000 and b"".join(first) == data[4000:6000]
    with counted(5000) as chunks:  # the registry kept 5000: the retry reads 5000-6000 again
        assert b"".join(chunks) == data[5000:]
    assert sum(moved) == len(data)
    assert read[0] == 2000 + len(data) - 5000
