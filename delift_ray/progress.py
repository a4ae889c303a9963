"""Progress of long phases (scoring, greedy): the callback type, and the bar on stderr (off with
the command line's -q)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

ProgressFn = Callable[[int, int], None]  # (done, total)


class ProgressBar:
    """A context-managed progress bar on stderr; `update_to` is a ProgressFn."""

    def __init__(self, desc: str, total: int, unit: str = "it") -> None:
        from tqdm.auto import tqdm  # here: the selection core imports this module for ProgressFn

        from delift_ray.logs import progress_enabled

        interactive = sys.stderr.isatty()
        self._bar = tqdm(
            total=total,
            desc=f"[delift-ray] {desc}",
            unit=unit,
            file=sys.stderr,
            mininterval=0.5 if interactive else 10.0,
            leave=interactive,
            dynamic_ncols=True,
            disable=not progress_enabled(),
        )

    def update_to(self, done: int, total: int | None = None) -> None:
        """Move the bar to `done` of `total`."""
        if total is not None and total != self._bar.total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.close()
