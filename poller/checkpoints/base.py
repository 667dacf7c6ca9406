"""Where stream positions live: the CheckpointStore protocol every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from poller.checkpoints.lineage import ShardInfo
    from poller.engine.lifecycle import Shutdown
    from poller.ops.status import MappingStatus

# What an instance may do with a shard: read it ("held"), finish what is in flight and hand it
# over ("releasing"); None: leave it alone (another instance owns it, or nobody yet).
LeaseState = Literal["held", "releasing"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's durable position.

    `sequence_number` is the last record fully handled (a reader resumes AFTER_SEQUENCE_NUMBER
    it); None means nothing handled yet. `finished` means the shard was read to its end and
    everything in it checkpointed, so its children may start. `window_start` and
    `window_state` are the open tumbling window at that position (its start, epoch seconds, and
    the state its invocations handed on, compact JSON), stored with the position in one write.

    An operator's move (`poller checkpoints set`) stores a start rather than a record handled:
    `at_sequence` makes `sequence_number` the NEXT record to deliver (AT_SEQUENCE_NUMBER), and
    `at_time` (with no sequence number) starts at the first record arriving at or after it.
    Finding the record before N would mean reading the shard from its horizon.
    """

    sequence_number: str | None
    finished: bool = False
    window_start: int | None = None
    window_state: bytes | None = None
    at_sequence: bool = False
    at_time: float | None = None


# How a start is written where a position is (a sequence number column or attribute): a plain
# number is the last record handled, as every store before starts existed holds it.
_AT = "at:"
_TIME = "time:"


def encode_position(checkpoint: Checkpoint) -> str | None:
    """The stored text of a checkpoint's position; None for no position yet."""
    if checkpoint.at_time is not None:
        return f"{_TIME}{checkpoint.at_time:.3f}"
    if checkpoint.at_sequence and checkpoint.sequence_number is not None:
        return _AT + checkpoint.sequence_number
    return checkpoint.sequence_number


def decode_position(
    text: str | None,
    finished: bool = False,
    window_start: int | None = None,
    window_state: bytes | None = None,
) -> Checkpoint:
    """The checkpoint a stored position text holds (`encode_position`'s inverse)."""
    if text is not None and text.startswith(_TIME):
        return Checkpoint(None, finished, at_time=float(text.removeprefix(_TIME)))
    if text is not None and text.startswith(_AT):
        return Checkpoint(text.removeprefix(_AT), finished, at_sequence=True)
    return Checkpoint(text, finished, window_start, window_state)


class CheckpointStore(Protocol):
    """Durable positions keyed by (mapping name, stream ARN, shard id)."""

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        """The shard's checkpoint, or None if it never had one."""
        ...

    async def put(
        self, mapping: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint
    ) -> None:
        """Store the shard's checkpoint; durable before it returns."""
        ...

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard checkpoint of one mapping on one stream, by shard id."""
        ...

    async def mapping_started_at(self, mapping: str, stream_arn: str) -> float | None:
        """When the mapping first started on this stream (epoch seconds), or None if never.

        Where a shard starts: a LATEST start is pinned to this time, so a
        restart before the first checkpoint resumes there instead of jumping forward.
        """
        ...

    async def set_mapping_started_at(self, mapping: str, stream_arn: str, at: float) -> None:
        """Record the first start time (kept if one is already stored); durable at once."""
        ...

    def leases(
        self, mapping: str, stream_arn: str, status: MappingStatus, shutdown: Shutdown
    ) -> ShardLeases:
        """Who reads which shard of one mapping's stream (one instance: this one, all of them)."""
        ...

    async def aclose(self) -> None:
        """Flush and release the backend."""
        ...


class StoreUnusable(Exception):
    """The checkpoint store cannot be used as configured; the message says what to do."""


class StoreUnavailable(Exception):
    """A call on an open store failed for a reason that may pass (disk full, a read-only file
    system): the caller keeps its positions in memory and tries again with back-off; the
    message names the file and the reason."""


class StoreHeld(StoreUnusable):
    """A live instance holds the store (a running daemon on the SQLite file); the message
    says who."""


class LeaseLost(Exception):
    """A checkpoint write found the shard's lease held by another instance: nothing was
    written, and the reader must stop (its records are the new owner's to deliver)."""


class ShardLeases(Protocol):
    """Which shards of one mapping's stream this instance may read.

    The lease-table backend takes, renews, balances and releases leases shared with other
    instances; with one instance (SQLite) `AllShards` grants every shard, so a stream source
    has a single path either way.
    """

    @property
    def owner(self) -> str | None:
        """This instance's id on /status; None when it is the only reader."""
        ...

    @property
    def exclusive(self) -> bool:
        """True when no other instance can ever read these shards."""
        ...

    @property
    def handover_seconds(self) -> float:
        """How long a shard being given up may finish its in-flight batches."""
        ...

    @property
    def finished(self) -> Collection[str]:
        """Shards some instance read to the end (so their children may start)."""
        ...

    def update(self, listing: Sequence[ShardInfo]) -> None:
        """The stream's shards as last listed: the ones leases exist for."""
        ...

    def state(self, shard_id: str) -> LeaseState | None:
        """What this instance may do with the shard now."""
        ...

    async def run(self, changed: Callable[[], None]) -> None:
        """Keep the leases (renew, take, balance) until cancelled; `changed()` after any
        change of what `state` answers."""
        ...

    async def release(self, shard_id: str) -> None:
        """Give the shard's lease back, after its final checkpoint."""
        ...

    async def aclose(self) -> None:
        """Release whatever is still held and say this instance is gone."""
        ...


class AllShards:
    """The single-instance grant: every shard is this instance's to read, for good."""

    owner: str | None = None
    exclusive = True
    handover_seconds = 0.0
    finished: frozenset[str] = frozenset()

    def update(self, listing: Sequence[ShardInfo]) -> None:
        """Nothing to track: every shard is granted."""

    def state(self, shard_id: str) -> LeaseState | None:
        """Always "held"."""
        return "held"

    async def run(self, changed: Callable[[], None]) -> None:
        """Nothing to keep."""

    async def release(self, shard_id: str) -> None:
        """Nothing to give back."""

    async def aclose(self) -> None:
        """Nothing to release."""
