"""Evaluation on the averaged weights across two framework callbacks.

Frameworks announce the start and the end of an evaluation in separate callbacks, so a `with averager.swapped():`
block cannot span them; `EvalSwap` enters the context in one callback and leaves it in the other.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Optional

from sema.protocol import WeightAverager


class EvalSwap:
    """Holds at most one `averager.swapped()` context open at a time."""

    def __init__(self) -> None:
        self._context: Optional[AbstractContextManager] = None

    def enter(self, averager: Optional[WeightAverager]) -> None:
        """Put the average into the model, unless there is no averager or it is already in."""
        if averager is not None and self._context is None:
            self._context = averager.swapped()
            self._context.__enter__()

    def exit(self) -> None:
        """Give the model its own weights back (no-op when the average is not in)."""
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
