"""The audit log: one JSON line per export and import (who, where, what, outcome). Never a secret."""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airgap import __version__


def state_dir() -> Path:
    """Where airgap keeps import journals and, by default, the audit log."""
    base = os.environ.get("AIRGAP_STATE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "airgap"


def default_audit_log() -> Path:
    env = os.environ.get("AIRGAP_AUDIT_LOG")
    return Path(env) if env else state_dir() / "audit.jsonl"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def append(path: Path, event: str, **fields: Any) -> None:
    """Append one record (O_APPEND, fsync). The file and its directory are private to the user."""
    record = {"time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, "user": _user(),
              "host": socket.gethostname(), "tool": f"airgap {__version__}", **fields}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
