"""Keeps in-flight SQS messages hidden while poller still owns them.

One task per mapping scans the live batches every tenth of the queue's visibility timeout and
extends a batch's messages by that timeout once 30 % of the last step has passed: a step is sent
by 40 % of the last one at the latest, which leaves a tenth of the timeout for the call itself
and a busy loop before half of the last step is gone. A dead daemon's messages reappear within
one timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from poller.engine.lifecycle import Shutdown
from poller.sources.sqs.queue import QueueApi, Receipt

_EXTEND_AT = 0.3


class Lease:
    """The messages of one batch, from receipt until settled."""

    __slots__ = ("extended_at", "receipts")

    def __init__(self, receipts: Sequence[Receipt], received_at: float) -> None:
        self.receipts: list[Receipt] = list(receipts)
        self.extended_at = received_at


class VisibilityKeeper:
    """Extends the visibility of every live lease in steps of the queue's timeout."""

    def __init__(self, queue: QueueApi, shutdown: Shutdown) -> None:
        self._queue = queue
        self._shutdown = shutdown
        self._leases: set[Lease] = set()

    def hold(self, receipts: Sequence[Receipt], received_at: float) -> Lease:
        lease = Lease(receipts, received_at)
        self._leases.add(lease)
        return lease

    def release(self, lease: Lease) -> None:
        self._leases.discard(lease)

    @property
    def tick(self) -> float:
        return min(max(self._queue.visibility_timeout * 0.1, 0.05), 5.0)

    async def run(self) -> None:
        """Loop until cancelled; owned by the mapping's task group."""
        while True:
            await anyio.sleep(self.tick)
            await self.extend_due(time.monotonic())

    async def extend_due(self, now: float) -> None:
        timeout = self._queue.visibility_timeout
        if timeout <= 0:
            return
        due = [lease for lease in self._leases if now - lease.extended_at >= timeout * _EXTEND_AT]
        if not due:
            return
        receipts = [r for lease in due for r in lease.receipts]
        for lease in due:
            lease.extended_at = now
        # Shielded: a half-sent extension on shutdown would only shorten some messages' hiding,
        # but the step is short and finishing it (by the drain deadline) keeps the rule simple.
        with self._shutdown.shielded():
            await self._queue.extend(receipts, timeout)
