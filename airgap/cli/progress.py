"""Progress on the terminal: tqdm bars from the library's events."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

from airgap.transfer.events import BytesMoved, Event, Notice, Planned

if TYPE_CHECKING:
    from tqdm import tqdm


class ProgressBar:
    """A byte bar (off when stderr is not a TTY or with --quiet); notices always go to stderr."""

    def __init__(self, *, quiet: bool, desc: str) -> None:
        self.quiet = quiet
        self.desc = desc
        self.bar: tqdm[NoReturn] | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Planned):
            if not self.quiet and sys.stderr.isatty():
                from tqdm import tqdm  # loaded only for a terminal

                self.bar = tqdm(total=event.total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                                desc=self.desc, file=sys.stderr, dynamic_ncols=True)
        elif isinstance(event, BytesMoved):
            if self.bar is not None:
                self.bar.update(event.n)
        elif isinstance(event, Notice):
            if self.bar is not None:
                self.bar.write(f"note: {event.text}", file=sys.stderr)
            else:
                print(f"note: {event.text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
