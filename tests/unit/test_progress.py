"""The progress bar: a tqdm bar on a terminal only (tqdm is then loaded), plain notices otherwise."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from airgap.cli.progress import ProgressBar
from airgap.transfer.events import BytesMoved, Notice, Planned


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    with ProgressBar(quiet=False, desc="export") as bar:
        bar(Planned(images=1, blobs=1, total_bytes=1 << 20))
        bar(BytesMoved(1 << 20))
        bar(Notice("hello"))
    return stream.getvalue()


def test_a_terminal_gets_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _run(_Terminal(), monkeypatch)
    assert "export: 100%" in out and "1.00M/1.00M" in out and "note: hello" in out


def test_elsewhere_only_notices_and_tqdm_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(io.StringIO(), monkeypatch) == "note: hello\n"
    code = ("import sys, io; sys.stderr = io.StringIO()\n"
            "from airgap.cli.progress import ProgressBar\nfrom airgap.transfer.events import Planned\n"
            "ProgressBar(quiet=False, desc='x')(Planned(images=1, blobs=1, total_bytes=1))\n"
            "assert 'tqdm' not in sys.modules, 'tqdm was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
