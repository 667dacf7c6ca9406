"""One shard's reader: GetRecords into lanes, batches to the settler, checkpoints behind.

Shutdown, or a lease handed back, stops reading, lets the batches in flight finish until a
deadline and writes a final checkpoint; a lease lost stops the reader at once, drops what it
buffered and writes nothing more (the new owner reads on from the last checkpoint).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import anyio

from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints.base import Checkpoint, LeaseLost
from poller.checkpoints.lineage import ShardInfo
from poller.engine.batcher import BatchLimits
from poller.engine.signals import Signal
from poller.engine.windows import WindowMark
from poller.ops.status import ShardStatus, checkpointing, reading
from poller.retry import SOURCE_CALL, Backoff, Stopped, sleep_or_stop
from poller.sources.streams.context import StreamContext
from poller.sources.streams.conversion import convert
from poller.sources.streams.lanes import ShardLanes
from poller.sources.streams.shards import (
    TRIM_HORIZON,
    ReadResult,
    StartAt,
    read_error_kind,
    read_limit,
)
from poller.sources.streams.watermark import CoalescedWrites, Watermark
from poller.sources.streams.windowing import ShardWindows
from poller.sources.streams.write_health import WRITE_ERRORS, WriteHealth

log = logging.getLogger("poller.streams")

# Kinesis allows 5 reads per second per shard; a reader that is behind but hit an empty stretch
# of the shard reads again after this rather than at once.
_MIN_READ_INTERVAL = 0.2

ErrorAction = Literal["keep", "refresh", "gone"]


class ShardReader:
    """Reads one shard into its lanes, hands batches to the engine's settler, checkpoints.

    Back-pressure: the span behind the checkpoint (records read, not yet checkpointed) bounds
    the read-ahead, not one batch: a read asks for the room left under MAX_UNSETTLED_BATCHES
    batches (`read_limit`), and none is made while the span is at that cap. A shard that is
    behind is read in few, large calls (Kinesis allows 5 reads per second per shard); memory
    and the replay after a restart stay at about 10 batches per shard, stuck key or not.

    Checkpoints: a writer task stores the settled prefix's end. Reading never waits for it; a
    lane waits for its batch's, so a refused write (LeaseLost) stops the lane's next batch too;
    a failed one is `WriteHealth`'s (degraded, retried); StoreUnusable ends the reader.
    """

    def __init__(
        self,
        context: StreamContext,
        shard: ShardInfo,
        start: StartAt,
        *,
        checkpoint: str | None = None,
        skip_before: float | None = None,
        window: WindowMark | None = None,
    ) -> None:
        self.context = context
        self.shard_id = shard.shard_id
        self.ending = shard.ending_sequence  # kept current by discovery
        self.listed = True  # False once the listing no longer shows the shard (trimmed)
        self.ended = False
        self.abandoned = 0
        self.revoked = False  # the lease went to another instance
        self.handed_back = False  # the lease is being given up (balance)
        mapping = context.mapping
        self._batch_size = mapping.batch_size
        self._start = start
        self._skip_before = skip_before
        self._position = checkpoint  # the last record read
        self._last = int(checkpoint) if checkpoint is not None else None
        self._done = checkpoint  # the end of the settled prefix
        self._stored = checkpoint  # what the store holds
        seconds = mapping.tumbling_window_in_seconds
        self._windows = (
            ShardWindows(
                seconds, shard_id=self.shard_id, source_arn=context.api.stream_arn, restored=window
            )
            if seconds
            else None
        )
        self._stored_window = None if window is None else window.start  # ... and its window
        self._watermark = Watermark()
        self._changed = Signal()
        self._lock = anyio.Lock()
        self._checkpoints = CoalescedWrites()  # served by the writer task, in run()
        self._stop = anyio.Event()  # stop reading: shutdown, or the lease handed back
        self._deadline = math.inf  # until when in-flight batches may finish after that
        self._scope: anyio.CancelScope | None = None
        self._backoff = Backoff(SOURCE_CALL.scaled(context.backoff_base))
        self._status = ShardStatus(shard.shard_id, context.leases.owner, checkpoint)
        context.status.shards[shard.shard_id] = self._status
        self._extra = {"mapping": mapping.name, "shard": shard.shard_id}
        health = checkpointing(shard.shard_id)
        self.writes = WriteHealth(context.backoff_base, context.status, health, self._extra)
        self._lanes = ShardLanes(
            BatchLimits(mapping.batch_size, mapping.maximum_batching_window_in_seconds),
            mapping.parallelization_factor,
            settler=context.settler,
            shard_id=self.shard_id,
            watermark=self._watermark,
            changed=self._changed,
            checkpointed=self._checkpoints.request_and_wait,
            window=lambda: None if self._windows is None else self._windows.open,
            status=self._status,
            clock=context.clock,
            extra=self._extra,
        )

    async def run(self) -> bool:
        """Read until the shard ends, shutdown begins or the lease goes; True if finished."""
        finished = False
        try:
            with anyio.CancelScope() as self._scope:
                if self.revoked:
                    self._scope.cancel()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._wake_on_stop)
                    tasks.start_soon(self._checkpoints.serve, self._checkpoint)
                    tasks.start_soon(self.writes.retries, self._stop, self._checkpoints.request)
                    for lane in range(len(self._lanes)):
                        tasks.start_soon(self._lanes.run, lane, self._stop)
                    await self._read_loop()
                    self._lanes.reading = False
                    self._changed.notify()
                    await self._drain()
                    if self.ended and self._windows is not None:
                        await self._close_window(self._windows)  # the shard's end closes it
                    tasks.cancel_scope.cancel()
        finally:
            if not self.revoked:
                with self.context.shutdown.shielded():
                    finished = await self._final_checkpoint()
        return finished

    def hand_back(self, deadline: float) -> None:
        """The lease is being given up: stop reading, finish in flight until `deadline`."""
        self.handed_back = True
        self._stop_reading(deadline)

    def revoke(self) -> None:
        """The lease is gone: stop at once, drop the buffered records, write no checkpoint."""
        self.revoked = True
        if self._scope is not None:
            self._scope.cancel()

    def _stop_reading(self, deadline: float) -> None:
        self._deadline = min(self._deadline, deadline)
        self._stop.set()
        self._changed.notify()

    async def _wake_on_stop(self) -> None:
        await self.context.shutdown.stopping.wait()
        self._stop_reading(self.context.shutdown.deadline)

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        api = self.context.api
        iterator: str | None = None
        while await self._room():
            try:
                if iterator is None:
                    iterator = await api.iterator(self.shard_id, self._resume_at())
                limit = self._limit()
                result = await api.read(iterator, limit)
            except AWS_ERRORS as exc:
                action = await self._on_error(exc)
                if action == "gone":
                    self.ended = True
                    return
                if action == "refresh":
                    iterator = None
                continue
            self._recovered()
            if not await self._take(result):
                return
            if self._at_end(result):
                self.ended = True
                return
            iterator = result.next_iterator
            if len(result.records) >= limit:
                continue  # a full read: more is waiting, whatever MillisBehindLatest says
            if result.caught_up:
                await self._pause(api.idle_poll_seconds)
            elif not result.records:
                await self._pause(_MIN_READ_INTERVAL)  # behind, but in a gap: stay in budget

    def _resume_at(self) -> StartAt:
        if self._position is not None:
            return StartAt("AFTER_SEQUENCE_NUMBER", self._position)
        return self._start

    def _limit(self) -> int:
        span, max_records = self._watermark.span, self.context.api.max_records
        return max(1, read_limit(span, self._batch_size, max_records))  # > 0 after _room()

    async def _room(self) -> bool:
        """Wait while the span behind the checkpoint is at its cap; False when stopping."""
        max_records = self.context.api.max_records
        while not self._stop.is_set():
            if read_limit(self._watermark.span, self._batch_size, max_records):
                return True
            await self._changed.wait()  # a checkpoint advanced the watermark
        return False

    async def _take(self, result: ReadResult) -> bool:
        """Convert the records read (in slices), route the kept ones to their lanes, and ask
        for a checkpoint: records filtered out or skipped are settled at once. With tumbling
        windows, a window closes before a record past it is taken. False when stopping."""
        context = self.context
        conversion = await convert(
            context.api,
            result.records,
            shard_id=self.shard_id,
            filters=context.filters,
            after=self._last,
            skip_before=self._skip_before,
        )
        # Routing is cheap and done in one go, so lanes see a read's records all at once.
        now, windows = anyio.current_time(), self._windows
        for converted in conversion.records:
            record = converted.record
            if windows is not None:
                closing = windows.must_close_before(record.arrival)
                if closing and not await self._close_window(windows):
                    return False
                windows.take(record.arrival)
            self._last = record.sequence
            self._position = record.sequence_number
            index = self._watermark.add(record.sequence_number, settled=not converted.kept)
            if converted.kept:
                self._lanes.add(record, index, now)
        polled, filtered = conversion.polled, conversion.filtered
        context.metrics.count("polled", polled)
        context.metrics.count("filtered_out", filtered)
        if result.behind_latest is not None:
            context.gauges.behind_latest(self.shard_id, result.behind_latest)
        if not result.records and result.caught_up and not self._watermark.span:
            # An idle, caught-up shard has no age, so lag alerts clear; not
            # while a batch is still out (retrying), whose age is the lag that matters.
            context.gauges.iterator_age(self.shard_id, 0.0)
            self._status.iterator_age_seconds = 0.0
        self._changed.notify()
        self._checkpoints.request()  # records filtered out or skipped may move it: no waiting
        if windows is not None and result.caught_up and windows.past_end(context.clock()):
            return await self._close_window(windows)
        return True

    async def _close_window(self, windows: ShardWindows) -> bool:
        """Close the open window: its batches settled, its final invocation made, then a
        checkpoint without it. False when shutdown came first (the window stays stored)."""
        try:
            await windows.close(
                lambda: self._lanes.settle_all(self._stop), self.context.settler.close_window
            )
        except Stopped:
            return False
        self._status.window = None
        await self._checkpoints.request_and_wait()
        return True

    def _at_end(self, result: ReadResult) -> bool:
        """A closed shard is finished when its iterator ends, or when the listing shows its
        ending sequence number and a read found nothing past our position."""
        if result.next_iterator is None:
            return True
        if self.ending is None or result.records:
            return False
        return result.caught_up or (self._last is not None and self._last >= self.ending)

    async def _on_error(self, exc: BaseException) -> ErrorAction:
        """A failed iterator or read call: "keep" the iterator, "refresh" it, or "gone"."""
        kind = read_error_kind(exc)
        if kind == "expired":
            log.info("shard iterator expired; getting a new one", extra=self._extra)
            return "refresh"
        if kind == "throttled":
            delay = self._backoff.next()
            log.info("reads throttled; backing off %.1fs", delay, extra=self._extra)
            await self._pause(delay)
            return "keep"
        if kind == "trimmed":
            log.error(
                "shard %s: records after checkpoint %s are past the retention period and "
                "gone; continuing from TRIM_HORIZON",
                self.shard_id,
                self._done,
                extra=self._extra,
            )
            self._start, self._position = TRIM_HORIZON, None
            return "refresh"
        if kind == "missing" and not self.listed:
            log.warning("shard no longer exists; treating it as finished", extra=self._extra)
            return "gone"
        problem = describe(
            exc,
            what=f"mapping {self.context.mapping.name}: shard {self.shard_id} of "
            f"{self.context.api.stream_arn}",
            permission=self.context.api.read_permission,
        )
        self.context.status.degraded(reading(self.shard_id), problem.message)
        delay = self._backoff.next()
        log.error("%s (retrying in %.1fs)", problem.message, delay, extra=self._extra)
        await self._pause(delay)
        return "refresh"

    def _recovered(self) -> None:
        self._backoff.reset()
        self.context.status.recovered(reading(self.shard_id))  # a no-op unless its reads failed

    async def _pause(self, seconds: float) -> None:
        await sleep_or_stop(seconds, self._stop)

    async def _drain(self) -> None:
        """At the shard's end every gathered record still goes out; at shutdown (or when the
        lease is handed back) only the batches in flight finish, until the deadline."""
        abandoned = await self._lanes.drain(self._stop, lambda: self._deadline)
        if abandoned:
            log.error(
                "drain timed out with %d batch(es) in flight; they are read again from the "
                "checkpoint",
                abandoned,
                extra=self._extra,
            )
        if self.context.shutdown.is_stopping:
            self.abandoned = abandoned  # `poller run` then exits 1

    async def _final_checkpoint(self) -> bool:
        """The last write; at a shard's end retried until stored (its children wait for it)."""
        shutdown = self.context.shutdown
        return await self.writes.last(
            lambda: self._checkpoint(final=True),
            again=lambda: self.ended and not (self._stop.is_set() or shutdown.is_stopping),
            stopping=shutdown.stopping,
        )

    async def _checkpoint(self, *, final: bool = False) -> bool:
        """Store the end of the settled prefix if it moved; with `final`, also whether the
        shard is finished (read to its end, everything settled). Returns that.

        Called by the writer task (`_checkpoints`), then once with `final` after it stopped;
        the lock keeps the stores in order, so a checkpoint never goes backwards."""
        async with self._lock:
            if self.revoked:
                return False
            moved = self._watermark.advance()
            if moved is not None:
                self._done = moved
                self._changed.notify()  # the span shrank: room to read
            finished = final and self.ended and self._watermark.span == 0
            if self._windows is None:
                checkpoint = Checkpoint(self._done, finished)
            else:
                checkpoint = self._windows.checkpoint(self._done, finished)
                self._status.window = self._windows.status()
            unchanged = (self._done, checkpoint.window_start) == (self._stored, self._stored_window)
            if unchanged and not finished and checkpoint.window_state is None:
                return False
            if not final and not self.writes.may_write():
                return False  # backing off after a failed write: `retries` asks again
            mapping, arn = self.context.mapping.name, self.context.api.stream_arn
            try:
                # Shielded: a checkpoint cut short by shutdown would replay settled records;
                # but not past the drain deadline.
                with self.context.shutdown.shielded() as shield:
                    await self.context.store.put(mapping, arn, self.shard_id, checkpoint)
                if shield.cancelled_caught:
                    log.warning(
                        "drain deadline passed while storing a checkpoint", extra=self._extra
                    )
                    return False
            except LeaseLost as exc:
                log.error("%s; stopping, buffered records dropped", exc, extra=self._extra)
                self.revoke()
                return False
            except WRITE_ERRORS as exc:
                retried = not final or (self.ended and not self._stop.is_set())
                self.writes.failed(exc, self._done, degrade=retried)
                return False
            self.writes.stored()
            self._stored, self._stored_window = self._done, checkpoint.window_start
            self._status.checkpoint = self._done
            return finished
