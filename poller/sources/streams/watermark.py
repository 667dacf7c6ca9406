"""A shard's checkpoint side: the settled-prefix watermark, and the coalesced writes that store
it: a checkpoint moves only over a contiguous run of settled
records, and a burst of requests for a write costs one or two writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from poller.engine.signals import Signal


class Watermark:
    """Records of one shard in read order; the checkpoint may move only over a settled prefix.

    `add` numbers each record; `settle` marks one done (in any order, idempotently);
    `advance` drops the settled prefix and returns its last sequence number.
    """

    __slots__ = ("_base", "_entries")

    def __init__(self) -> None:
        self._base = 0  # the index of _entries[0]
        self._entries: deque[list[Any]] = deque()  # [sequence_number, settled]

    def add(self, sequence_number: str, *, settled: bool = False) -> int:
        """Append a record read (already settled if filtered out or skipped); its index."""
        self._entries.append([sequence_number, settled])
        return self._base + len(self._entries) - 1

    def settle(self, index: int) -> None:
        """Mark one record done, in any order."""
        offset = index - self._base
        if offset >= 0:  # below the base: already checkpointed
            self._entries[offset][1] = True

    def advance(self) -> str | None:
        """Pop the settled prefix; its last sequence number, or None if nothing moved."""
        last: str | None = None
        while self._entries and self._entries[0][1]:
            last = self._entries.popleft()[0]
            self._base += 1
        return last

    @property
    def span(self) -> int:
        """Records read but not yet behind the checkpoint (settled or not)."""
        return len(self._entries)


class CoalescedWrites:
    """Requests for a write that one task serves (`serve`), coalesced: each write covers every
    request made before it started, so a burst of requests costs one or two writes.

    A shard reader's checkpoint writer: reading asks without waiting, lanes wait for theirs.
    """

    __slots__ = ("_asked", "_pending", "_served", "_written")

    def __init__(self) -> None:
        self._asked = 0  # requests made, numbered from 1
        self._served = 0  # requests covered by a finished write
        self._pending = anyio.Event()  # set: a request is waiting for a write
        self._written = Signal()

    def request(self) -> int:
        """Ask for a write, without waiting; the request's number."""
        self._asked += 1
        self._pending.set()
        return self._asked

    @property
    def requested(self) -> int:
        """How many requests were made so far (waited for or not); read-only."""
        return self._asked

    async def request_and_wait(self) -> None:
        """Ask for a write and wait until one that started after the request finished."""
        request = self.request()
        while self._served < request:
            await self._written.wait()

    async def serve(self, write: Callable[[], Awaitable[object]]) -> None:
        """Run `write` whenever asked, until cancelled; an exception from it ends `serve`."""
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            request = self._asked
            await write()
            self._served = request
            self._written.notify()
