"""A broadcast "something changed", for loops that re-check their own condition."""

from __future__ import annotations

import anyio


class Signal:
    """A broadcast "something changed": waiters re-check their own condition after waking."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        """Wake every waiter."""
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        """Sleep until the next notify()."""
        await self._event.wait()
