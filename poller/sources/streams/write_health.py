"""How a shard's checkpoint writes are going: after a failed write (the lease table
unreachable, the SQLite file's disk full) the next waits a back-off step, not the next batch."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import anyio

from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints.base import StoreUnavailable
from poller.ops.status import Condition, MappingStatus
from poller.retry import SOURCE_CALL, Backoff, sleep_or_stop

log = logging.getLogger("poller.streams")

# A write that failed for a reason that may pass: the position stays in memory, tried again.
WRITE_ERRORS: tuple[type[BaseException], ...] = (*AWS_ERRORS, StoreUnavailable)


class WriteHealth:
    """The back-off of one shard's checkpoint writes; `failed` and `stored` after each write.

    A failed write raises the shard's `key` condition (the mapping shows degraded; the reader
    keeps the position in memory, so nothing delivered is read again); the first write that
    succeeds clears it.
    """

    def __init__(
        self,
        backoff_base: float,
        status: MappingStatus,
        key: Condition,
        extra: Mapping[str, str],
    ) -> None:
        self._status = status
        self._key = key
        self._extra = extra
        self._backoff = Backoff(SOURCE_CALL.scaled(backoff_base))
        self.failing = False  # the last write failed
        self._retry_at = -math.inf  # no write before this (monotonic) while failing
        self._failed = anyio.Event()  # set by a failed write, for `retries`

    def may_write(self) -> bool:
        """False while backing off after a failed write."""
        return anyio.current_time() >= self._retry_at

    def failed(self, exc: BaseException, position: str | None, *, degrade: bool = True) -> None:
        """A write of `position` failed: degraded, and the next write after a back-off step.
        Not `degrade`: the last write of a reader that is stopping, which no later success of
        its own could clear (the next owner reads on from the stored checkpoint)."""
        mapping = self._status.name
        if isinstance(exc, StoreUnavailable):
            problem = f"mapping {mapping}: checkpoint not stored: {exc}"
        else:
            problem = describe(
                exc,
                what=f"mapping {mapping}: checkpoint store",
                permission="the lease table actions of deploy/iam/lease-table.json",
            ).message
        delay = self._backoff.next()
        self._retry_at = anyio.current_time() + delay
        self.failing = True
        self._failed.set()
        if degrade:
            self._status.degraded(self._key, problem)
        log.error(
            "%s (the shard's position, %s, is kept in memory; retrying in %.1fs)",
            problem,
            position,
            delay,
            extra=self._extra,
        )

    def stored(self) -> None:
        """A write succeeded: back to the first step, and the condition cleared if writes
        were failing."""
        self._backoff.reset()
        self._retry_at = -math.inf
        if self.failing:
            self.failing = False
            log.info("checkpoint stored again", extra=self._extra)
            self._status.recovered(self._key)

    def ended(self) -> None:
        """The reader is gone (done, lease lost or handed over): a condition it raised was its
        own to clear, and no write of its own will; a next reader of the shard raises its own."""
        self._status.recovered(self._key)
        self.failing = False

    async def wait_retry(self, stop: anyio.Event) -> bool:
        """Sleep until the next write may be tried; False when `stop` came first."""
        return not await sleep_or_stop(max(0.0, self._retry_at - anyio.current_time()), stop)

    async def last(
        self,
        write: Callable[[], Awaitable[bool]],
        *,
        again: Callable[[], bool],
        stopping: anyio.Event,
    ) -> bool:
        """A reader's last write, tried again after each back-off step while it fails and
        `again()` holds (a shard's end, which its children wait for); what `write` returned."""
        while True:
            result = await write()
            if not (self.failing and again()):
                return result
            await self.wait_retry(stopping)

    async def retries(self, stop: anyio.Event, ask: Callable[[], object]) -> None:
        """After each failed write, call `ask()` (a new write) once its back-off step passed:
        a shard gone quiet has no settling batch to ask for one. Returns when `stop` is set."""
        while True:
            await self._failed.wait()
            self._failed = anyio.Event()
            if not await self.wait_retry(stop):
                return  # the final checkpoint tries once more
            ask()
