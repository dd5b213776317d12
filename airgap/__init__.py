"""airgap: move container images across an air gap in signed, chunked, resumable bundles."""

__version__ = "0.1.0"

__all__ = ["__version__"]
