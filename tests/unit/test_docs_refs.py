"""The docs name tests as evidence (docs/threat-model.md: "the test that shows it"): every test they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_docs_name_exists() -> None:
    named = {m for doc in (ROOT / "docs").glob("*.md") for m in re.findall(r"::(test_\w+)", doc.read_text())}
    defined = {m for f in (ROOT / "tests").rglob("test_*.py") for m in re.findall(r"^def (test_\w+)", f.read_text(),
                                                                                    re.M)}
    assert named, "the docs name no test: the pattern is wrong"
    assert not named - defined, f"named in docs/ but not defined in tests/: {sorted(named - defined)}"
