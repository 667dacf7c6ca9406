"""A shard's lanes: where its records wait for a batch, at most one batch in flight per lane.

A lane is Lambda's virtual shard (`parallelization_factor` of them per shard, records routed by
partition key). Each lane's task takes a batch when it is due (size, batching window, 6 MB),
hands it to the engine's settler and tells the watermark what settled, waiting for the
checkpoint that covers it before taking the next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio

from poller.engine.batcher import Batcher, BatchLimits
from poller.engine.inflight import InFlight
from poller.engine.records import StreamRecord
from poller.engine.settle import Settles
from poller.engine.signals import Signal
from poller.engine.windows import OpenWindow
from poller.ops.status import ShardStatus
from poller.retry import Stopped
from poller.sources.streams.shards import lane_for
from poller.sources.streams.watermark import Watermark

log = logging.getLogger("poller.streams")


class ShardLanes:
    """The lanes of one shard reader, and the batches they have in flight."""

    def __init__(
        self,
        limits: BatchLimits,
        count: int,
        *,
        settler: Settles[StreamRecord],
        shard_id: str,
        watermark: Watermark,
        changed: Signal,
        checkpointed: Callable[[], Awaitable[None]],
        window: Callable[[], OpenWindow | None],
        status: ShardStatus,
        clock: Callable[[], float],
        extra: dict[str, str],
    ) -> None:
        self._lanes: list[Batcher[StreamRecord]] = [Batcher(limits) for _ in range(count)]
        self._inflight = InFlight()
        self._indices: dict[int, int] = {}  # sequence -> watermark index, for records in lanes
        self._settler = settler
        self._shard_id = shard_id
        self._watermark = watermark
        self._changed = changed
        self._checkpointed = checkpointed
        self._window = window
        self._status = status
        self._clock = clock
        self._extra = extra
        self.reading = True  # False once the reader stopped: what is left goes out at once
        self._flush = False  # True while a window closes: batches go out at once too

    def __len__(self) -> int:
        return len(self._lanes)

    @property
    def busy(self) -> bool:
        """Whether a record waits in a lane or a batch is in flight."""
        return bool(self._inflight.count) or any(self._lanes)

    def add(self, record: StreamRecord, index: int, now: float) -> None:
        """Route a record to its lane; `index` is its place in the watermark."""
        self._indices[record.sequence] = index
        self._lanes[lane_for(record.key, len(self._lanes))].add(record, now)

    async def run(self, number: int, stop: anyio.Event) -> None:
        """The task of lane `number`, until `stop` or until reading ended and it is empty."""
        lane = self._lanes[number]
        while not stop.is_set():
            if not lane:
                if not self.reading:
                    return
                await self._changed.wait()
                continue
            due = lane.due_at()
            if self.reading and not self._flush and due > anyio.current_time():
                with anyio.move_on_at(due):
                    await self._changed.wait()
                continue
            batch = lane.take()
            await self._inflight.acquire()
            try:
                await self._process(batch)
            finally:
                self._inflight.release()
                # Lambda starts the next window when the previous invocation ends.
                lane.restart_window(anyio.current_time())
                self._changed.notify()

    async def settle_all(self, stop: anyio.Event) -> None:
        """Send what the lanes hold at once and wait until all of it settled (a tumbling
        window closing); `Stopped` if `stop` comes first."""
        self._flush = True
        self._changed.notify()
        try:
            while self.busy:
                if stop.is_set():
                    raise Stopped("stopping")
                await self._changed.wait()
        finally:
            self._flush = False

    async def drain(self, stop: anyio.Event, deadline: Callable[[], float]) -> int:
        """At the shard's end every record still goes out; once `stop` is set only the batches
        in flight finish, until `deadline()` (read then). The number left unsettled."""
        while self.busy:
            if stop.is_set():
                return await self._inflight.drain(deadline())
            await self._changed.wait()
        return 0

    async def _process(self, records: list[StreamRecord]) -> None:
        self._status.iterator_age_seconds = max(0.0, self._clock() - records[-1].arrival)
        pending = {record.sequence: self._indices.pop(record.sequence) for record in records}

        async def acknowledge(settled: Sequence[StreamRecord]) -> None:
            for record in settled:
                index = pending.pop(record.sequence, None)
                if index is not None:
                    self._watermark.settle(index)
            await self._checkpointed()

        try:
            await self._settler.settle(
                records, acknowledge, scope=self._shard_id, window=self._window()
            )
        except Stopped:
            log.info(
                "stopping with a held batch of %d; it is read again after the restart",
                len(records),
                extra=self._extra,
            )
            return
        if pending:  # a settler that returns has settled the whole batch
            await acknowledge(records)
