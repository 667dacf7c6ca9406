"""What Kinesis and DynamoDB Streams mappings share: shard listings, lineage, where a shard
starts, the settled-prefix watermark, key routing, and the per-shard batching lanes.

Everything here is pure or nearly so (no AWS calls): `ShardApi` is the seam each service fills
in (`streams.kinesis`, `streams.dynamodb`); `streams.source` runs discovery and
`streams.reader` the per-shard loops.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio

from poller.aws.errors import error_code, is_throttle
from poller.engine.records import StreamRecord
from poller.events.envelope import MAX_PAYLOAD_BYTES, payload_size
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import Metrics

StreamKind = Literal["kinesis", "dynamodb"]
IteratorType = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AFTER_SEQUENCE_NUMBER"]
Progress = Callable[[str], Awaitable[None]]

# ESM-SEMANTICS §0 / issue 3: a shard reader reads ahead while the span behind its checkpoint
# (records read but not yet checkpointed) is under this many batches, so memory, and the replay
# after a restart, stay bounded at about this many batches per shard, one stuck key or not.
MAX_UNSETTLED_BATCHES = 10


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as the listing shows it; `ending_sequence` is set once the shard is closed."""

    shard_id: str
    parents: tuple[str, ...] = ()
    ending_sequence: int | None = None


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where GetShardIterator points: a type plus its sequence number or timestamp."""

    type: IteratorType
    sequence_number: str | None = None
    timestamp: float | None = None


TRIM_HORIZON = StartAt("TRIM_HORIZON")
LATEST = StartAt("LATEST")


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One GetRecords answer. `caught_up`: nothing newer was waiting when it was read."""

    records: Sequence[Mapping[str, Any]]
    next_iterator: str | None
    caught_up: bool
    behind_latest: float | None = None  # seconds; Kinesis only


class ShardApi(Protocol):
    """The calls a stream mapping makes; one implementation per service."""

    stream_arn: str
    max_records: int  # GetRecords' Limit ceiling
    idle_poll_seconds: float  # pause after a read that found nothing new
    supports_at_timestamp: bool
    list_permission: str
    read_permission: str

    @property
    def kind(self) -> StreamKind:
        """Which service this is."""
        ...

    async def list_shards(self) -> list[ShardInfo]:
        """Every shard the stream lists now, following pagination."""
        ...

    async def iterator(self, shard_id: str, start: StartAt) -> str:
        """A shard iterator at `start`."""
        ...

    async def read(self, iterator: str, limit: int) -> ReadResult:
        """One GetRecords call."""
        ...

    def event_record(self, raw: Mapping[str, Any], shard_id: str) -> dict[str, Any]:
        """The Lambda event record for one raw record."""
        ...

    def matches(self, filters: FilterSet, record: Mapping[str, Any]) -> bool:
        """Whether an event record passes the mapping's filters."""
        ...


class BatchProcessor(Protocol):
    """Settles one shard's batch (poller.engine.settle.StreamBatchProcessor)."""

    async def process(
        self, shard_id: str, records: Sequence[StreamRecord], progress: Progress | None = None
    ) -> None:
        """Return once every record is settled; `progress` reports safe positions before."""
        ...


ReadErrorKind = Literal["expired", "throttled", "trimmed", "missing"]

_READ_ERRORS: Mapping[str, ReadErrorKind] = {
    "ExpiredIteratorException": "expired",
    "TrimmedDataAccessException": "trimmed",
    "ResourceNotFoundException": "missing",
}


def read_error_kind(exc: BaseException) -> ReadErrorKind | None:
    """The shard-reading errors that have their own handling; None for everything else."""
    if is_throttle(exc):
        return "throttled"
    return _READ_ERRORS.get(error_code(exc) or "")


def startable(
    shards: Iterable[ShardInfo], finished: Collection[str], started: Collection[str]
) -> list[ShardInfo]:
    """Shards that may start now: not started or finished, every parent finished.

    A parent the listing no longer shows was trimmed away, and counts as finished: its
    records are gone, so waiting for it would stall the child forever.
    """
    shards = list(shards)
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if shard.shard_id not in finished
        and shard.shard_id not in started
        and all(parent in finished or parent not in listed for parent in shard.parents)
    ]


def read_limit(span: int, batch_size: int, max_records: int) -> int:
    """GetRecords' Limit for a reader with `span` records behind its checkpoint; 0: no read now.

    A read asks for all the room left under MAX_UNSETTLED_BATCHES batches, not for one batch:
    Kinesis allows 5 reads per second per shard, so a read of one batch would cap a shard at
    5 x batch_size records/s (and invite throttling), where Lambda reads up to 10,000 records
    a call. It asks for at least one batch (the span may pass the cap by less than one batch)
    and at most the API's ceiling (`max_records`).
    """
    room = MAX_UNSETTLED_BATCHES * batch_size - span
    if room <= 0:
        return 0
    return min(max_records, max(batch_size, room))


def lane_for(key: str, lanes: int) -> int:
    """The lane (virtual shard) of a partition key; stable across processes and restarts."""
    if lanes == 1:
        return 0
    return zlib.crc32(key.encode()) % lanes


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


class Lane:
    """Records of one virtual shard waiting for a batch; at most one batch in flight.

    The batch closes at `batch_size`, at the 6 MB payload limit, or when the batching window
    (counted from the first waiting record, or from the end of the lane's last invocation,
    whichever is later: Lambda starts the next window when the previous invocation ends)
    runs out. The reader reads ahead, so several batches' worth may wait: each batch takes at
    most `batch_size` of them, and while a whole batch waits it is due at once, so a backlog
    goes out batch after batch as soon as the lane is free; a remainder short of a batch
    waits for its window, counted from the end of the last invocation.
    """

    __slots__ = ("_bytes", "_idle_since", "_oldest", "batch_size", "busy", "pending", "window")

    def __init__(self, batch_size: int, window: float) -> None:
        self.batch_size = batch_size
        self.window = window
        self.pending: deque[tuple[int, StreamRecord]] = deque()
        self.busy = False
        self._bytes = 0
        self._oldest = 0.0
        self._idle_since = 0.0

    def add(self, index: int, record: StreamRecord, now: float) -> None:
        """Queue a record (`now` on the monotonic clock) for the lane's next batch."""
        if not self.pending:
            self._oldest = now
        self.pending.append((index, record))
        self._bytes += len(record.serialized)

    def full(self) -> bool:
        """Whether the waiting records make a whole batch (count or payload size)."""
        size = payload_size(self._bytes, len(self.pending))
        return len(self.pending) >= self.batch_size or size >= MAX_PAYLOAD_BYTES

    def due_at(self) -> float:
        """When the window closes (monotonic seconds); -inf when the batch may go now."""
        if self.window <= 0 or self.full():
            return -math.inf
        return max(self._oldest, self._idle_since) + self.window

    def take(self) -> list[tuple[int, StreamRecord]]:
        """The next batch: up to batch_size records and within the payload limit (at least 1)."""
        batch: list[tuple[int, StreamRecord]] = []
        size = 0
        while self.pending and len(batch) < self.batch_size:
            record = self.pending[0][1]
            if batch and payload_size(size + len(record.serialized), len(batch) + 1) > (
                MAX_PAYLOAD_BYTES
            ):
                break
            batch.append(self.pending.popleft())
            size += len(record.serialized)
        self._bytes -= size
        return batch

    def finished_batch(self, now: float) -> None:
        """The lane's batch settled; the next window starts now at the earliest."""
        self.busy = False
        self._idle_since = now


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


class ShardGauges:
    """The per-shard series of one mapping: iterator age and Kinesis' behind-latest."""

    def __init__(self, metrics: Metrics, mapping: str) -> None:
        self._metrics = metrics
        self._mapping = mapping

    def iterator_age(self, shard_id: str, seconds: float) -> None:
        """Set poller_iterator_age_seconds{shard}."""
        self._metrics.iterator_age.labels(self._mapping, shard_id).set(seconds)

    def behind_latest(self, shard_id: str, seconds: float) -> None:
        """Set poller_behind_latest_seconds{shard}."""
        self._metrics.behind_latest.labels(self._mapping, shard_id).set(seconds)

    def remove(self, shard_id: str) -> None:
        """Drop a finished shard's series, so dashboards do not show it stuck forever."""
        for family in (self._metrics.iterator_age, self._metrics.behind_latest):
            with contextlib.suppress(KeyError):
                family.remove(self._mapping, shard_id)
