"""What Kinesis and DynamoDB Streams mappings share: the shard API seam, where a shard
starts, how much a read asks for, read errors, and key routing to virtual shards.

Everything here is pure (no AWS calls): `ShardApi` is the seam each service fills in
(`streams.kinesis`, `streams.dynamodb`); `streams.source` runs discovery and `streams.reader`
the per-shard loops; the watermark is `streams.watermark`, lineage `checkpoints.lineage`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from poller.aws.errors import error_code, is_throttle
from poller.checkpoints.lineage import ShardInfo
from poller.engine.records import StreamRecord
from poller.filtering.filter_set import FilterSet

StreamKind = Literal["kinesis", "dynamodb"]
IteratorType = Literal[
    "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"
]

# A shard reader reads ahead while the span behind its checkpoint
# (records read but not yet checkpointed) is under this many batches, so memory, and the replay
# after a restart, stay bounded at about this many batches per shard, one stuck key or not.
MAX_UNSETTLED_BATCHES = 10


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

    def stream_record(self, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        """The engine record for one raw record: `stream_record(event_record(...))`'s, maybe
        written without the event record's dict (what a mapping without filters needs)."""
        ...

    def matches(self, filters: FilterSet, record: Mapping[str, Any]) -> bool:
        """Whether an event record passes the mapping's filters."""
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
