"""Thread pools for the many small requests a run makes at once, which stop promptly when the run stops."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


@contextmanager
def worker_pool(jobs: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``jobs`` threads for the block. When the block ends with an exception (an error, Ctrl-C), the tasks
    not started are dropped and those running are not waited for: one request held by a stalled server must not
    hold up a Ctrl-C (``ThreadPoolExecutor``'s own ``with`` waits for every task). A normal end waits for all."""
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


__all__ = ["worker_pool"]
