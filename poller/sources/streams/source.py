"""One Kinesis or DynamoDB Streams mapping.

`StreamSource` lists the shards at start and every `shard_discovery_interval_seconds`, starts a
`ShardReader` for each shard whose parents are finished, and decides where it starts. A reader
reads its shard into up to `parallelization_factor` lanes (records routed by key), each with at
most one batch in flight, and checkpoints the settled prefix of what it read.

Which shards this instance reads is the context's `leases` to say: every shard with one
instance (SQLite), the shards whose leases it holds with the lease table. A lease being given
up hands its reader back (finish in flight, checkpoint, release); a lease lost revokes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints.base import Checkpoint, StoreUnavailable, StoreUnusable
from poller.checkpoints.lineage import ShardInfo, startable
from poller.engine.signals import Signal
from poller.engine.windows import WindowMark
from poller.ops.status import SOURCE, STORE, State, reading
from poller.retry import SOURCE_CALL, Backoff, sleep_or_stop
from poller.sources.streams.context import StreamContext
from poller.sources.streams.reader import ShardReader
from poller.sources.streams.shards import LATEST, TRIM_HORIZON, StartAt

log = logging.getLogger("poller.streams")

_STORE_ERRORS: tuple[type[BaseException], ...] = (*AWS_ERRORS, StoreUnavailable, StoreUnusable)


@dataclass(frozen=True, slots=True)
class _Start:
    at: StartAt
    checkpoint: str | None = None
    skip_before: float | None = None
    window: WindowMark | None = None  # the tumbling window open at the checkpoint


class StreamSource:
    """Runs one stream mapping until shutdown, then lets each shard drain and checkpoint."""

    def __init__(self, context: StreamContext, *, discovery_interval: float = 30.0) -> None:
        self.context = context
        self._interval = discovery_interval
        self._name = context.mapping.name
        self._arn = context.api.stream_arn
        self._readers: dict[str, ShardReader] = {}
        self._finished: set[str] = set()
        self._checkpoints: dict[str, Checkpoint] = {}
        self._started_at = 0.0
        self._first_start = False
        self._wake = Signal()
        self._woken = False  # a wake came while the loop was busy: do not wait for the next
        self._relist = False
        self._backoff = Backoff(SOURCE_CALL.scaled(context.backoff_base))
        self._listing_failed = False
        self._extra = {"mapping": self._name}
        # Batches still in flight when the drain deadline passed (`poller run` then exits 1).
        self.abandoned = 0

    async def run(self) -> None:
        """List the shards, read each in lineage order until shutdown, then drain."""
        shutdown = self.context.shutdown
        listing = await self._first_listing()
        if listing is None or not await self._prepared(listing):
            return
        leases = self.context.leases
        leases.update(listing)
        self.context.status.shards.clear()  # left over from a run that crashed
        self.context.status.set(State.RUNNING)
        log.info(
            "reading stream %s: %d shard(s), %d already finished",
            self._arn,
            len(listing),
            len(self._finished),
            extra=self._extra,
        )
        try:
            async with anyio.create_task_group() as keeper:
                # The leases are renewed until every reader has checkpointed and let go.
                keeper.start_soon(leases.run, self._notify)
                async with anyio.create_task_group() as readers:
                    readers.start_soon(self._wake_on_stop)
                    while not shutdown.is_stopping:
                        self._woken = False
                        await self._start_ready(listing, readers)
                        if not self._woken:
                            with anyio.move_on_after(self._interval) as idle:
                                await self._wake.wait()
                            self._relist |= idle.cancel_called
                        if shutdown.is_stopping:
                            break
                        if self._relist:
                            self._relist = False
                            listing = await self._list() or listing
                            leases.update(listing)
                    self.context.status.set(State.STOPPING)
                keeper.cancel_scope.cancel()
        except* StoreUnusable as lost:
            # The store went from under a reader (its file deleted or replaced): no checkpoint
            # can be trusted any more, so the mapping stops, failed, until a person looks.
            first: BaseException = lost
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            problem = f"mapping {self._name}: {first}"
            self.context.status.set(State.FAILED, problem)
            log.error("checkpoints unusable, mapping stopped: %s", problem, extra=self._extra)
        finally:
            await leases.aclose()
        self.abandoned = sum(reader.abandoned for reader in self._readers.values())

    def _notify(self) -> None:
        self._woken = True
        self._wake.notify()

    async def _wake_on_stop(self) -> None:
        await self.context.shutdown.stopping.wait()
        self._notify()

    # -- discovery ----------------------------------------------------------------------------

    async def _first_listing(self) -> list[ShardInfo] | None:
        """The first listing, retried with back-off; None if stopped before it succeeded."""
        shutdown = self.context.shutdown
        while not shutdown.is_stopping:
            listing = await self._list()
            if listing is not None:
                return listing
            await sleep_or_stop(self._backoff.next(), shutdown.stopping)
        return None

    async def _list(self) -> list[ShardInfo] | None:
        status = self.context.status
        api = self.context.api
        try:
            listing = await api.list_shards()
        except AWS_ERRORS as exc:
            what = f"mapping {self._name}: stream {self._arn}"
            problem = describe(exc, what=what, permission=api.list_permission)
            status.reached_source = True
            self._listing_failed = True
            if problem.fatal and not self._readers:
                status.failed(SOURCE, problem.message)
            else:
                status.degraded(SOURCE, problem.message)
            log.error("listing shards failed: %s", problem.message, extra=self._extra)
            return None
        status.reached_source = True
        self._backoff.reset()
        if self._listing_failed:
            self._listing_failed = False
            status.recovered(SOURCE)
        return listing

    async def _prepared(self, listing: Sequence[ShardInfo]) -> bool:
        """`_prepare`, retried with back-off while the store fails; False if stopped first."""
        shutdown, status = self.context.shutdown, self.context.status
        while not shutdown.is_stopping:
            try:
                await self._prepare(listing)
                status.recovered(STORE)
                return True
            except _STORE_ERRORS as exc:
                if isinstance(exc, StoreUnusable | StoreUnavailable):
                    problem = f"mapping {self._name}: {exc}"
                else:
                    what = f"mapping {self._name}: checkpoint store"
                    permission = "the lease table actions of deploy/iam/lease-table.json"
                    problem = describe(exc, what=what, permission=permission).message
                if isinstance(exc, StoreUnusable):
                    status.failed(STORE, problem)
                else:
                    status.degraded(STORE, problem)
                log.error("checkpoints unavailable: %s", problem, extra=self._extra)
            await sleep_or_stop(self._backoff.next(), shutdown.stopping)
        return False

    async def _prepare(self, listing: Sequence[ShardInfo]) -> None:
        """Load the checkpoints; on the mapping's first start, record what "first" means.

        `starting_position` applies only to the shards that exist at the
        first start. Each of them gets a checkpoint without a position *before* the start
        time is stored, so a crash in between merely repeats the first start, and a shard
        with no row at all is one that appeared later (it starts at TRIM_HORIZON).
        """
        store = self.context.store
        now = self.context.clock()
        self._checkpoints = await store.all(self._name, self._arn)
        started_at = await store.mapping_started_at(self._name, self._arn)
        if started_at is None:
            for shard in listing:
                if shard.shard_id not in self._checkpoints:
                    marker = Checkpoint(None)
                    await store.put(self._name, self._arn, shard.shard_id, marker)
                    self._checkpoints[shard.shard_id] = marker
            await store.set_mapping_started_at(self._name, self._arn, now)
            # Another instance may have started first: the stored time is the first start.
            started_at = await store.mapping_started_at(self._name, self._arn) or now
            self._first_start = started_at == now
        self._started_at = started_at
        self._finished = {shard for shard, cp in self._checkpoints.items() if cp.finished}

    async def _start_ready(self, listing: Sequence[ShardInfo], readers: TaskGroup) -> None:
        leases = self.context.leases
        listed = {shard.shard_id: shard for shard in listing}
        for shard_id, reader in self._readers.items():
            shard = listed.get(shard_id)
            reader.listed = shard is not None
            if shard is not None and shard.ending_sequence is not None:
                reader.ending = shard.ending_sequence
            state = leases.state(shard_id)
            if state is None:
                reader.revoke()
            elif state == "releasing":
                reader.hand_back(anyio.current_time() + leases.handover_seconds)
        finished = self._finished.union(leases.finished)
        for shard in startable(listing, finished, self._readers):
            state = leases.state(shard.shard_id)
            if state == "releasing":  # given up before its reader started: nothing to drain
                await leases.release(shard.shard_id)
            if state != "held":
                continue
            start = await self._start_for(shard.shard_id)
            if start is None:
                continue
            reader = ShardReader(
                self.context,
                shard,
                start.at,
                checkpoint=start.checkpoint,
                skip_before=start.skip_before,
                window=start.window,
            )
            self._readers[shard.shard_id] = reader
            log.info(
                "shard %s starts at %s",
                shard.shard_id,
                start.checkpoint or start.at.type,
                extra={**self._extra, "shard": shard.shard_id},
            )
            readers.start_soon(self._run_reader, reader)

    async def _start_for(self, shard_id: str) -> _Start | None:
        """Where a shard without a finished checkpoint starts; None when
        its checkpoint cannot be read now (tried again at the next pass)."""
        if self.context.leases.exclusive:
            checkpoint = self._checkpoints.get(shard_id)
        else:
            # Another instance may have moved it since the mapping started here.
            try:
                checkpoint = await self.context.store.get(self._name, self._arn, shard_id)
            except _STORE_ERRORS as exc:
                log.warning(
                    "shard %s: checkpoint not readable (%s); retrying",
                    shard_id,
                    exc,
                    extra={**self._extra, "shard": shard_id},
                )
                return None
        if checkpoint is not None and checkpoint.at_time is not None:
            return self._at_time(checkpoint.at_time)  # an operator's --latest or --timestamp
        if checkpoint is not None and checkpoint.at_sequence and checkpoint.sequence_number:
            # An operator's --sequence N: N is the next record. The reader holds no position
            # until a record settles, so nothing is stored before then and N is not skipped.
            return _Start(StartAt("AT_SEQUENCE_NUMBER", checkpoint.sequence_number))
        if checkpoint is not None and checkpoint.sequence_number is not None:
            at = StartAt("AFTER_SEQUENCE_NUMBER", checkpoint.sequence_number)
            window = None
            if checkpoint.window_start is not None and checkpoint.window_state is not None:
                window = WindowMark(checkpoint.window_start, checkpoint.window_state)
            return _Start(at, checkpoint.sequence_number, window=window)
        if checkpoint is None:
            return _Start(TRIM_HORIZON)  # appeared after the first start: read all of it
        mapping = self.context.mapping
        if mapping.starting_position == "AT_TIMESTAMP" and mapping.starting_position_timestamp:
            return self._at_time(mapping.starting_position_timestamp.timestamp())
        if mapping.starting_position != "LATEST":
            return _Start(TRIM_HORIZON)
        if self._first_start and self.context.leases.exclusive:
            # Under leases another instance may have read this shard since the first start,
            # so only the start time is safe: it never skips a record.
            return _Start(LATEST)
        # A LATEST mapping restarted before this shard's first checkpoint: resume at the
        # first start, so what arrived while the daemon was down is not skipped.
        return self._at_time(self._started_at)

    def _at_time(self, timestamp: float) -> _Start:
        if self.context.api.supports_at_timestamp:
            return _Start(StartAt("AT_TIMESTAMP", timestamp=timestamp))
        # DynamoDB Streams has no AT_TIMESTAMP: read from the horizon and skip what is older.
        # Creation times are whole seconds (rounded down), so the start second is kept.
        return _Start(TRIM_HORIZON, skip_before=math.floor(timestamp))

    async def _run_reader(self, reader: ShardReader) -> None:
        shard_id = reader.shard_id
        finished = False
        try:
            finished = await reader.run()
        finally:
            # What the reader raised was its own to clear; a next reader of the shard raises
            # its own.
            reader.writes.ended()
            self.context.status.recovered(reading(shard_id))
            if not reader.revoked:
                # After the final checkpoint, so the next owner starts where this one stopped.
                # Not past the drain deadline: a lease not released expires on its own.
                with self.context.shutdown.shielded():
                    await self.context.leases.release(shard_id)
        if not (finished or reader.revoked or reader.handed_back):
            return  # shutdown: the reader stays counted for `abandoned`
        if finished:
            self._finished.add(shard_id)
            log.info("shard %s finished", shard_id, extra={**self._extra, "shard": shard_id})
            self._relist = True  # its children may start now rather than at the next listing
        del self._readers[shard_id]
        self.context.gauges.remove(shard_id)
        self.context.status.shards.pop(shard_id, None)
        self._notify()
