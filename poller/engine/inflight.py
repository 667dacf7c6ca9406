"""Batches in flight: the concurrency cap, and the bounded drain at shutdown.

A batch holds its slot from the moment its owner starts gathering it until it is settled, so
intake pauses while the cap is reached and memory stays bounded whatever the backlog.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class InFlight:
    """Counts unsettled batches, caps them at `limit` (None: no cap), and waits them out."""

    __slots__ = ("_count", "_idle", "_slots")

    def __init__(self, limit: int | None = None) -> None:
        self._slots = anyio.Semaphore(limit) if limit is not None else None
        self._count = 0
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        """Batches begun and not yet ended."""
        return self._count

    async def acquire(self) -> None:
        """Wait for a free slot, then count one more batch in flight."""
        if self._slots is not None:
            await self._slots.acquire()
        self._begin()

    def release(self) -> None:
        """One batch is settled (or handed back): free its slot."""
        self._count -= 1
        if self._count == 0:
            self._idle.set()
        if self._slots is not None:
            self._slots.release()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body's duration."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def drain(self, deadline: float = math.inf) -> int:
        """Wait until nothing is in flight or `deadline` (anyio clock) passes; how many
        batches were still unsettled then (abandoned: `poller run` then exits 1)."""
        with anyio.move_on_at(deadline):
            await self._idle.wait()
        return self._count

    def _begin(self) -> None:
        self._count += 1
        if self._idle.is_set():
            self._idle = anyio.Event()
