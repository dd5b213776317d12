"""The import journal: what an import committed to which target, and its open upload sessions.

It saves work (a large blob resumes from the registry's offset after a crash) and lets a finished
import say so quickly; the registry stays the truth, so everything the journal claims is confirmed
with HEAD requests before it is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airgap import atomic
from airgap.errors import InvalidInput
from airgap.model.delta import check_repository


@dataclass
class ImportJournal:
    path: Path
    sessions: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    blobs: set[tuple[str, str]] = field(default_factory=set)
    done: bool = False
    _torn: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, state_dir: Path, bundle_id: str, target: str) -> ImportJournal:
        key = hashlib.sha256(f"{bundle_id}\n{target}".encode()).hexdigest()[:16]
        directory = state_dir / "imports"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the id comes from manifest.json (untrusted even when signed): only safe characters reach the file name
        name = re.sub(r"[^A-Za-z0-9_-]", "_", bundle_id[:40])
        journal = cls(directory / f"{name}-{key}.jsonl")
        journal._load()
        return journal

    def _load(self) -> None:
        if not self.path.exists():
            return
        text = self.path.read_bytes().decode("utf-8", "replace")
        self._torn = bool(text) and not text.endswith("\n")  # a crash mid-write: end that line first
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                kind = rec["t"]
                if kind == "session":
                    self.sessions[(rec["repo"], rec["digest"])] = (str(rec["location"]), int(rec["offset"]))
                elif kind == "blob":
                    self.blobs.add((rec["repo"], rec["digest"]))
                    self.sessions.pop((rec["repo"], rec["digest"]), None)
                elif kind == "drop":
                    self.sessions.pop((rec["repo"], rec["digest"]), None)
                elif kind == "done":
                    self.done = True
                elif kind == "start":
                    self.done = False
            except (ValueError, KeyError, TypeError, OverflowError):
                continue  # a line torn by a crash: the records before and after it stand

    def _append(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self._lock:
            if self._torn:
                line, self._torn = "\n" + line, False
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- upload sessions (airgap.registry.client.UploadSessions) ------------------------------
    def get(self, repository: str, digest: str) -> tuple[str, int] | None:
        with self._lock:
            return self.sessions.get((repository, digest))

    def put(self, repository: str, digest: str, location: str, offset: int) -> None:
        with self._lock:
            self.sessions[(repository, digest)] = (location, offset)
        self._append({"t": "session", "repo": repository, "digest": digest, "location": location, "offset": offset})

    def drop(self, repository: str, digest: str) -> None:
        with self._lock:
            present = self.sessions.pop((repository, digest), None)
        if present is not None:
            self._append({"t": "drop", "repo": repository, "digest": digest})

    # -- progress -----------------------------------------------------------------------------
    def started(self) -> None:
        self.done = False
        self._append({"t": "start"})

    def blob_committed(self, repository: str, digest: str) -> None:
        with self._lock:
            self.blobs.add((repository, digest))
            self.sessions.pop((repository, digest), None)
        self._append({"t": "blob", "repo": repository, "digest": digest})

    def finished(self) -> None:
        """The import is complete. Nothing of the journal is needed any more but that (a later run asks the
        registry anyway), so it shrinks to that one line, in place (the file is also the run's lock): a registry
        restored from a nightly bundle would otherwise keep a line per blob per night. A crash in between leaves
        it empty, which a later run reads as an import to check again: as safe, only slower."""
        with self._lock:
            self.done = True
            self.sessions.clear()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, b'{"t":"done"}\n')
                os.fsync(fd)
            finally:
                os.close(fd)
            self._torn = False


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class KnownBlobs:
    """Where earlier imports into a registry committed each blob (any bundle): one repository per digest, the
    latest. An import mounts a blob from there instead of uploading it again. Only a hint: a mount that the
    registry refuses (the blob was deleted since) opens an upload as usual, at no extra request."""

    path: Path
    where: dict[str, str] = field(default_factory=dict)  # digest -> repository
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _made: bool = field(default=False, repr=False)  # its directory exists

    @classmethod
    def open(cls, state_dir: Path, host: str, *, compact: bool = True) -> KnownBlobs:
        """The record for ``host`` (the file and its directory are made by the first :meth:`add`). ``compact``:
        rewrite a file of mostly superseded lines (not in a dry run, which writes nothing)."""
        known = cls(state_dir / "imports" / f"blobs-{hashlib.sha256(host.encode()).hexdigest()[:16]}.txt")
        try:
            raw = known.path.read_bytes()
        except OSError:
            return known
        text = raw.decode("utf-8", "replace")
        lines = text.splitlines()
        for line in lines:  # "<digest> <repository>"; a torn or odd line is skipped
            digest, _, repo = line.partition(" ")
            try:
                if _DIGEST.fullmatch(digest):
                    known.where[digest] = check_repository(repo, "known blobs")
            except InvalidInput:
                continue
        if compact and len(lines) > 2 * len(known.where) + 1000:  # each import appends: keep the latest
            with contextlib.suppress(OSError):  # a hint file: a larger one costs only the time to read it
                # not while another import (of another bundle, same state directory) appends to it: its lines
                # would be lost (one written in the moment of the rename still is: a hint, a mount fewer)
                if known.path.stat().st_size == len(raw):
                    atomic.write_atomic(known.path, "".join(f"{d} {r}\n" for d, r in known.where.items()).encode(),
                                        mode=0o600)
        return known

    def get(self, digest: str) -> str | None:
        with self._lock:
            return self.where.get(digest)

    def add(self, digest: str, repository: str) -> None:
        with self._lock:
            if self.where.get(digest) == repository:
                return
            self.where[digest] = repository
            if not self._made:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._made = True
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:  # no fsync: a line lost in a crash costs one upload that a mount could have saved
            os.write(fd, f"{digest} {repository}\n".encode())
        finally:
            os.close(fd)
