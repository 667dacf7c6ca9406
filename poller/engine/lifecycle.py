"""Shutdown as the mappings see it: one flag to stop intake, one deadline to finish by, and
shields that keep bookkeeping whole without outliving that deadline."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class Shutdown:
    """Set once by the app on the first SIGTERM/SIGINT; read by every mapping."""

    def __init__(self) -> None:
        self.stopping = anyio.Event()
        self.deadline = math.inf
        self._shields: set[anyio.CancelScope] = set()

    def begin(self, drain_timeout: float) -> None:
        """Stop intake now; whatever is in flight has `drain_timeout` seconds to settle."""
        if not self.stopping.is_set():
            self.deadline = anyio.current_time() + drain_timeout
            self.stopping.set()
            for scope in self._shields:
                scope.deadline = min(scope.deadline, self.deadline)

    @property
    def is_stopping(self) -> bool:
        return self.stopping.is_set()

    @contextmanager
    def shielded(self) -> Iterator[anyio.CancelScope]:
        """Shield a write (delete, checkpoint, on-failure send, lease release) from
        cancellation, so it is never cut in half, but not past the drain deadline, even one
        set after the write began. Check `cancelled_caught` on the scope afterwards: True
        means the deadline cut the write short."""
        scope = anyio.CancelScope(shield=True, deadline=self.deadline)
        self._shields.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._shields.discard(scope)


class Gate:
    """Open while a mapping's target takes work; closed while a batch is held by a throttle."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = anyio.Event()

    @property
    def waiting(self) -> int:
        """How many tasks wait for the gate to open (batches held by a throttle or outage)."""
        return self._open.statistics().tasks_waiting

    async def wait_open(self) -> None:
        await self._open.wait()
