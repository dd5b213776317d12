"""h11's receive buffer, without its copies of a response body.

httpx reads a response with h11, whose receive buffer appends every socket read to a ``bytearray`` and
slices each body piece out of it twice; httpcore then copies the piece once more into ``bytes``. A blob of
a GiB is therefore copied four times in Python after the kernel's copy, which on the 2-core test VM cost
0.17 CPU-s per 640 MiB downloaded (export: 0.95 -> 0.78 CPU-s for a GET of the bench's large layer with
its digest check). :class:`LeanReceiveBuffer` keeps a socket read that arrives while the buffer is empty
as the ``bytes`` object it is, and hands that same object out when the reader takes all of it as body;
every other use first appends it to h11's ``bytearray``, so that h11 sees exactly what it would have seen.

:func:`install` makes h11 use it. It is applied only when h11's buffer has the shape this was written
against (h11 0.16's); otherwise h11 is left as it is, which is only slower.
"""

from __future__ import annotations

from typing import Any

try:
    import h11._connection as _h11_connection
    from h11._receivebuffer import ReceiveBuffer as _ReceiveBuffer
except ImportError:  # pragma: no cover - another h11 layout: nothing to do
    _h11_connection = None  # type: ignore[assignment]
    _ReceiveBuffer = object  # type: ignore[assignment,misc]

_METHODS = ("__iadd__", "__len__", "__bytes__", "_extract", "maybe_extract_at_most", "maybe_extract_next_line",
            "maybe_extract_lines", "is_next_line_obviously_invalid_request_line")


class LeanReceiveBuffer(_ReceiveBuffer):
    """h11's :class:`ReceiveBuffer`, which also holds one whole ``bytes`` read apart from its ``bytearray``."""

    def __init__(self) -> None:
        super().__init__()
        self._whole: bytes | None = None  # a read received while the bytearray was empty, not yet appended

    def _settle(self) -> None:
        whole = self._whole
        if whole is not None:
            self._whole = None
            self._data += whole

    def __iadd__(self, data: Any) -> LeanReceiveBuffer:
        if self._whole is None and not self._data and type(data) is bytes:
            self._whole = data
        else:
            self._settle()
            self._data += data
        return self

    def __len__(self) -> int:
        whole = self._whole
        return len(self._data) + (len(whole) if whole is not None else 0)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __bytes__(self) -> bytes:
        self._settle()
        return super().__bytes__()

    def _extract(self, count: int) -> Any:
        self._settle()
        return super()._extract(count)

    def maybe_extract_at_most(self, count: int) -> Any:
        whole = self._whole
        if whole is not None and count >= len(whole):  # the bytearray is empty: the read is the piece
            self._whole = None
            self._next_line_search = 0
            self._multiple_lines_search = 0
            return whole
        self._settle()
        return super().maybe_extract_at_most(count)

    def maybe_extract_next_line(self) -> Any:
        self._settle()
        return super().maybe_extract_next_line()

    def maybe_extract_lines(self) -> Any:
        self._settle()
        return super().maybe_extract_lines()

    def is_next_line_obviously_invalid_request_line(self) -> bool:
        self._settle()
        return super().is_next_line_obviously_invalid_request_line()


def applicable() -> bool:
    """Whether h11 has the receive buffer this subclass was written against."""
    if _h11_connection is None or getattr(_h11_connection, "ReceiveBuffer", None) not in (_ReceiveBuffer,
                                                                                       LeanReceiveBuffer):
        return False
    if not all(callable(getattr(_ReceiveBuffer, name, None)) for name in _METHODS):
        return False
    probe = _ReceiveBuffer()
    return isinstance(getattr(probe, "_data", None), bytearray) and hasattr(probe, "_next_line_search") and hasattr(
        probe, "_multiple_lines_search")


def install() -> bool:
    """Make h11 connections created from now on use :class:`LeanReceiveBuffer`; False where h11 differs."""
    if not applicable():
        return False
    setattr(_h11_connection, "ReceiveBuffer", LeanReceiveBuffer)  # noqa: B010 - h11 does not export it
    return True
