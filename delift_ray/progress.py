"""Progress bars for long phases (scoring, greedy), on stderr."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm.auto import tqdm


class Progress:
    """A context-managed progress bar; `update_to(done, total)` fits the scorer's callbacks."""

    def __init__(self, desc: str, total: int, unit: str = "it") -> None:
        interactive = sys.stderr.isatty()
        self._bar = tqdm(
            total=total,
            desc=f"[delift-ray] {desc}",
            unit=unit,
            file=sys.stderr,
            mininterval=0.5 if interactive else 10.0,
            leave=interactive,
            dynamic_ncols=True,
        )

    def update_to(self, done: int, total: int | None = None) -> None:
        """Move the bar to `done` of `total`."""
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()
