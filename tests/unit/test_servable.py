"""The check that each manifest just pushed can be served, against a registry stub."""

from __future__ import annotations

import pytest

from airgap.errors import RegistryError
from airgap.model.digest import Digest
from airgap.registry.endpoints import check_servable

GOOD = Digest.of(b"manifest")


class _Client:
    def __init__(self, answers: list[Digest | None]) -> None:
        self.answers = answers
        self.asked = 0

    def head_manifest(self, repo: str, ident: str, *, mend: bool = False) -> Digest | None:
        self.asked += 1
        return self.answers.pop(0) if self.answers else GOOD


class _Registries:
    def __init__(self, client: _Client) -> None:
        self._client = client

    def client(self, host: str) -> _Client:
        return self._client


@pytest.fixture(autouse=True)
def _short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airgap.registry.endpoints.SETTLE_PAUSES", (0.001, 0.001, 0.001))


def test_a_manifest_another_client_is_writing_is_asked_for_again() -> None:
    """Two runs pushing the same image into one repository: distribution rewrites the manifest in place, and
    for a moment cannot serve it. That is not damaged storage (whose advice would delete a good manifest)."""
    client = _Client([None, None])
    check_servable(_Registries(client), {("reg.example", GOOD): "team/app"}, 2)  # type: ignore[arg-type]
    assert client.asked == 3


def test_a_manifest_that_stays_unservable_is_reported_as_damaged_storage() -> None:
    client = _Client([None] * 10)
    with pytest.raises(RegistryError, match="cannot serve it") as err:
        check_servable(_Registries(client), {("reg.example", GOOD): "team/app"}, 2)  # type: ignore[arg-type]
    assert client.asked == 4
    assert GOOD.hex in (err.value.hint or "")
