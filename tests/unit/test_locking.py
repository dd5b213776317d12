"""One run at a time: the advisory lock of a bundle directory or import journal."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from airgap.errors import InUse
from airgap.locking import exclusive


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    busy = pytest.raises(InUse, match="^busy dir: wait for that run to end")
    with exclusive(tmp_path, "busy dir"), busy, exclusive(tmp_path, "busy dir"):
        pass
    with exclusive(tmp_path, "busy dir"):  # released
        pass


def test_a_journal_file_is_made_private_to_be_locked(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    with exclusive(journal, "busy journal", create=True):
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        with pytest.raises(InUse), exclusive(journal, "busy journal", create=True):
            pass


def test_what_cannot_be_opened_goes_unlocked(tmp_path: Path) -> None:
    with exclusive(tmp_path / "missing", "never"):  # the run's own writes say what is wrong
        pass
