"""Push every image of an OCI layout into a registry with airgap's own client (demo and test set-up)."""

from __future__ import annotations

from pathlib import Path

from airgap.layout import LayoutSource
from airgap.model.reference import Reference
from airgap.registry import Registries
from airgap.registry.endpoints import RegistrySink
from airgap.transfer.engine import TransferResult, transfer
from airgap.transfer.plan import ImageRequest


def push_layout(layout: Path, registry: str, registries: Registries | None = None, *,
                names: list[str] | None = None) -> TransferResult:
    """Push ``names`` (default: all) from ``layout`` to ``registry`` (``host[:port]``) under the same names."""
    source = LayoutSource(layout)
    own = registries is None
    regs = registries or Registries()
    try:
        requests = []
        for name in names or source.names():
            ref = source.reference(name)
            requests.append(ImageRequest(ref, Reference(registry, ref.repository, ref.tag)))
        return transfer(source, RegistrySink(regs), requests)
    finally:
        if own:
            regs.close()
