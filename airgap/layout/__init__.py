"""The OCI image layout edge: a directory with ``oci-layout``, ``index.json`` and ``blobs/``."""

from airgap.layout.source import LAYOUT_HOST, LayoutSource

__all__ = ["LAYOUT_HOST", "LayoutSource"]
