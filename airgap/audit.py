"""The audit log: one JSON line per export and import (who, where, what, outcome). Never a secret."""

from __future__ import annotations

import json
import os
import pwd
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.errors import InvalidInput


def state_dir() -> Path:
    """Where airgap keeps import journals and, by default, the audit log."""
    base = os.environ.get("AIRGAP_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "airgap"


def default_audit_log(state: Path | None = None) -> Path:
    """Where a run without ``--audit-log`` records itself: ``$AIRGAP_AUDIT_LOG`` (a log an administrator set up
    for every run wins over a per-run ``--state-dir``), else ``audit.jsonl`` in ``state`` or :func:`state_dir`."""
    env = os.environ.get("AIRGAP_AUDIT_LOG")
    return Path(env) if env else (state or state_dir()) / "audit.jsonl"


def _user() -> str:
    """The account running airgap, from the system (not $LOGNAME or $USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, OSError):
        return str(os.getuid())


class AuditLogError(InvalidInput):
    default_hint = "choose a file that can be written with --audit-log FILE or AIRGAP_AUDIT_LOG, or free space there"


def _open(path: Path) -> int:
    """The log open for appending (made 0600, its missing directories 0700), or :class:`AuditLogError`."""
    try:
        for parent in reversed([p for p in path.absolute().parents if not p.exists()]):
            parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise AuditLogError(f"cannot write the audit log {path} ({exc.strerror or exc})") from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)  # a log made by something else: private to the user from now on
    except OSError:
        pass
    return fd


def check(path: Path) -> None:
    """Refuse to start a run whose audit record could not be written (before it changes anything)."""
    os.close(_open(path))


def append(path: Path, event: str, **fields: Any) -> None:
    """Append one record (O_APPEND, fsync). The file and its directory are private to the user."""
    record = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, "user": _user(),
              "host": socket.gethostname(), "tool": f"airgap {__version__}", **fields}
    fd = _open(path)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode())
        os.fsync(fd)
    except OSError as exc:
        raise AuditLogError(f"cannot write the audit log {path} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
