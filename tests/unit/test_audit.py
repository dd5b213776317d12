"""Which file a run's audit record goes to (airgap/audit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airgap import audit


def test_an_audit_log_set_for_every_run_wins_over_a_runs_state_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRGAP_AUDIT_LOG", raising=False)
    monkeypatch.setenv("AIRGAP_STATE_DIR", str(tmp_path / "state"))
    assert audit.default_audit_log() == tmp_path / "state" / "audit.jsonl"
    assert audit.default_audit_log(tmp_path / "run") == tmp_path / "run" / "audit.jsonl"
    monkeypatch.setenv("AIRGAP_AUDIT_LOG", str(tmp_path / "central.jsonl"))
    assert audit.default_audit_log() == tmp_path / "central.jsonl"
    assert audit.default_audit_log(tmp_path / "run") == tmp_path / "central.jsonl"
    monkeypatch.delenv("AIRGAP_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AIRGAP_AUDIT_LOG")
    assert audit.default_audit_log() == tmp_path / "xdg" / "airgap" / "audit.jsonl"
