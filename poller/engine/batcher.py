"""One batcher for every source: records wait until `batch_size`, the 6 MB payload limit, or
the batching window closes, as in Lambda.

SQS receivers and stream lanes feed the same `Batcher`. The window counts from the first
waiting record or from `restart_window` (the end of the previous invocation, or the start of
a receiver's gathering), whichever is later. Several batches' worth may wait: each `take`
hands out at most one batch, and while a whole batch waits it is due at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from poller.engine.records import Record
from poller.events.envelope import MAX_PAYLOAD_BYTES, payload_size

R = TypeVar("R", bound=Record)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """When a batch closes: `size` records, `window` seconds (0: at once), `max_bytes`."""

    size: int
    window: float
    max_bytes: int = MAX_PAYLOAD_BYTES


class Batcher(Generic[R]):
    """Records waiting for the next batch, in arrival order."""

    __slots__ = ("_bytes", "_oldest", "_pending", "_window_start", "limits")

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self._pending: deque[R] = deque()
        self._bytes = 0
        self._oldest = 0.0
        self._window_start = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[R]:
        return iter(self._pending)

    def add(self, record: R, now: float) -> None:
        """Queue a record (`now` on the monotonic clock) for the next batch."""
        if not self._pending:
            self._oldest = now
        self._pending.append(record)
        self._bytes += len(record.serialized)

    def full(self) -> bool:
        """Whether the waiting records make a whole batch (count or payload size)."""
        limits = self.limits
        size = payload_size(self._bytes, len(self._pending))
        return len(self._pending) >= limits.size or size >= limits.max_bytes

    def due_at(self) -> float:
        """When the window closes (monotonic seconds); -inf when the batch may go now."""
        if self.limits.window <= 0 or self.full():
            return -math.inf
        return max(self._oldest, self._window_start) + self.limits.window

    def take(self) -> list[R]:
        """The next batch: up to `size` records within the payload limit (at least one)."""
        limits = self.limits
        batch: list[R] = []
        size = 0
        pending = self._pending
        while pending and len(batch) < limits.size:
            record = pending[0]
            grown = size + len(record.serialized)
            if batch and payload_size(grown, len(batch) + 1) > limits.max_bytes:
                break
            batch.append(pending.popleft())
            size = grown
        self._bytes -= size
        return batch

    def restart_window(self, now: float) -> None:
        """A new window starts now at the earliest (the last invocation ended, or a receiver
        starts gathering its next batch)."""
        self._window_start = now

    def clear(self) -> list[R]:
        """Drop and return every waiting record."""
        dropped = list(self._pending)
        self._pending.clear()
        self._bytes = 0
        return dropped
