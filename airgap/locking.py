"""One run at a time per bundle directory and per import journal: an advisory lock (``flock``) held for the run.

Two exports into one directory would write the same chunk files, and two imports of one bundle into one target
would each send everything. The lock belongs to the process: a crash or ``kill -9`` leaves no stale lock behind.
Where the file system has no ``flock`` (some network file systems), runs go unlocked, as they did before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from airgap.errors import InUse


@contextlib.contextmanager
def exclusive(path: Path, busy: str, *, create: bool = False) -> Iterator[None]:
    """Hold ``path`` (a directory, or a file made if ``create``) for the block; when another process holds it,
    raise :class:`InUse` with the message ``busy``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except OSError:
        fd = -1  # cannot even open it: the run's own writes will say what is wrong
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InUse(busy) from None
            except OSError:
                pass  # no flock here: unlocked
        yield
    finally:
        if fd >= 0:
            os.close(fd)
