"""Shard machinery without AWS: watermark, lineage, key routing, lanes, and the readers driven
against an in-memory shard API (topologies and faults moto cannot produce)."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from poller.aws.identity import role_arn
from poller.checkpoints.base import Checkpoint, StoreUnavailable, StoreUnusable
from poller.checkpoints.lineage import ShardInfo, startable
from poller.config.arns import parse_source_arn
from poller.config.settings import MappingSettings
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.events.streams import kinesis_record, stream_record
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import Metrics, ShardGauges
from poller.ops.status import MappingStatus, State
from poller.sources.streams.context import StreamContext
from poller.sources.streams.dynamodb import DynamoDBShards
from poller.sources.streams.kinesis import KinesisShards
from poller.sources.streams.shards import (
    MAX_UNSETTLED_BATCHES,
    ReadResult,
    StartAt,
    lane_for,
    read_error_kind,
    read_limit,
)
from poller.sources.streams.source import StreamSource
from poller.sources.streams.watermark import CoalescedWrites, Watermark
from tests.fakes.checkpoints import MemoryStore
from tests.support.wait import eventually

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


# -- pure pieces ------------------------------------------------------------------------------


def test_watermark_moves_only_over_a_settled_prefix() -> None:
    marks = Watermark()
    indexes = [marks.add(str(seq)) for seq in (10, 11, 12, 13)]
    marks.settle(indexes[1])
    marks.settle(indexes[2])
    assert marks.advance() is None  # 10 is still out
    assert marks.span == 4
    marks.settle(indexes[0])
    assert marks.advance() == "12"
    assert marks.span == 1
    marks.settle(indexes[0])  # settling twice, or below the checkpoint, is harmless
    marks.add("14", settled=True)  # e.g. filtered out
    assert marks.advance() is None
    marks.settle(indexes[3])
    assert marks.advance() == "14"
    assert marks.span == 0


def shard(shard_id: str, *parents: str, ending: int | None = None) -> ShardInfo:
    return ShardInfo(shard_id, tuple(parents), ending)


def test_lineage_children_wait_for_every_parent() -> None:
    listing = [
        shard("a", ending=10),
        shard("b", "a", ending=20),
        shard("c", "a", ending=30),
        shard("d", "b", "c"),  # a merge: two parents
    ]
    ids = lambda found: [s.shard_id for s in found]  # noqa: E731
    assert ids(startable(listing, finished=set(), started=set())) == ["a"]
    assert ids(startable(listing, finished=set(), started={"a"})) == []
    assert ids(startable(listing, finished={"a"}, started={"a"})) == ["b", "c"]
    assert ids(startable(listing, finished={"a", "b"}, started={"b", "c"})) == []
    assert ids(startable(listing, finished={"a", "b", "c"}, started={"b", "c"})) == ["d"]


def test_lineage_a_parent_trimmed_from_the_listing_counts_as_finished() -> None:
    listing = [shard("child", "gone-parent"), shard("merged", "gone", "child")]
    assert [s.shard_id for s in startable(listing, set(), set())] == ["child"]


def test_keys_route_to_stable_lanes() -> None:
    keys = [f"customer-{i}" for i in range(200)]
    lanes = [lane_for(key, 4) for key in keys]
    assert lanes == [lane_for(key, 4) for key in keys]  # stable (crc32, not hash())
    assert set(lanes) == {0, 1, 2, 3}
    assert lane_for("anything", 1) == 0


def record(seq: int, key: str = "k", size: int = 10) -> StreamRecord:
    return StreamRecord(str(seq), seq, key, time.time(), b"x" * size)


def test_a_read_asks_for_the_room_left_under_the_span_cap() -> None:
    cap = MAX_UNSETTLED_BATCHES * 100
    assert read_limit(0, 100, 10_000) == cap  # one large read, not one batch
    assert read_limit(0, 100, 500) == 500  # within GetRecords' ceiling
    assert read_limit(cap - 300, 100, 10_000) == 300
    assert read_limit(cap - 20, 100, 10_000) == 100  # at least a batch: passes the cap by < 1
    assert read_limit(cap, 100, 10_000) == 0  # at the cap: no read
    assert read_limit(cap + 99, 100, 10_000) == 0
    assert read_limit(0, 5_000, 1_000) == 1_000  # a batch larger than DynamoDB's ceiling


async def test_coalesced_writes_cover_every_request_made_before_they_start() -> None:
    gates = [anyio.Event(), anyio.Event()]  # one for each write
    writes: list[int] = []
    requests = CoalescedWrites()

    async def write() -> None:
        writes.append(len(writes))
        await gates[len(writes) - 1].wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(requests.serve, write)
        requests.request()  # never waited for
        await eventually(lambda: writes == [0])  # the first write is under way, stuck
        done: list[int] = []

        async def waiter(n: int) -> None:
            await requests.request_and_wait()
            done.append(n)

        for n in range(3):
            tg.start_soon(waiter, n)
        # Each waiter has made its request, and then either waits or is done.
        await eventually(lambda: requests.requested == 4)
        assert done == []  # the write under way started before their requests
        gates[0].set()
        # That write is over (its waiters were woken) and the next one is under way, stuck:
        # it is the one that covers the three requests.
        await eventually(lambda: writes == [0, 1])
        assert done == []
        gates[1].set()
        await eventually(lambda: len(done) == 3)
        assert writes == [0, 1]  # the three requests made during the first: one write
        tg.cancel_scope.cancel()


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "GetRecords")


def test_read_errors_are_classified_by_code() -> None:
    assert read_error_kind(client_error("ExpiredIteratorException")) == "expired"
    assert read_error_kind(client_error("ProvisionedThroughputExceededException")) == "throttled"
    assert read_error_kind(client_error("LimitExceededException")) == "throttled"
    assert read_error_kind(client_error("TrimmedDataAccessException")) == "trimmed"
    assert read_error_kind(client_error("InternalFailure")) is None


# -- readers against an in-memory shard API --------------------------------------------------


@dataclass
class FakeShard:
    info: ShardInfo
    records: list[tuple[int, str, float]] = field(default_factory=list)  # seq, key, arrival

    @property
    def last(self) -> int:
        return self.records[-1][0] if self.records else 0


class FakeApi:
    """A stream in memory; closed shards end their iterators unless `closed_iterators_end`
    is off (then only the listing's ending sequence number tells). It counts each shard's
    reads: an open shard with no records is read again every `idle_poll_seconds`, so its count
    moving is the sign that the readers went round their loops (`polled`)."""

    kind = "kinesis"
    stream_arn = ARN
    max_records = 1000
    idle_poll_seconds = 0.01
    supports_at_timestamp = True
    list_permission = read_permission = "kinesis:*"

    def __init__(self, shards: Sequence[FakeShard], *, closed_iterators_end: bool = True) -> None:
        self.shards = {s.info.shard_id: s for s in shards}
        self.closed_iterators_end = closed_iterators_end
        self.faults: dict[int, BaseException] = {}  # read number (from 1) -> its error
        self.reads = 0  # of every shard
        self.reads_of: Counter[str] = Counter()
        self.limits_of: defaultdict[str, list[int]] = defaultdict(list)  # each read's Limit
        self.starts: list[tuple[str, StartAt]] = []
        self.read_upto: dict[str, int] = defaultdict(int)

    async def list_shards(self) -> list[ShardInfo]:
        return [s.info for s in self.shards.values()]

    async def iterator(self, shard_id: str, start: StartAt) -> str:
        self.starts.append((shard_id, start))
        fake = self.shards[shard_id]
        if start.type == "AFTER_SEQUENCE_NUMBER":
            position = int(start.sequence_number or 0)
        elif start.type == "LATEST":
            position = fake.last
        elif start.type == "AT_TIMESTAMP":
            older = [seq for seq, _, arrival in fake.records if arrival < (start.timestamp or 0)]
            position = max(older, default=0)
        else:
            position = 0
        return f"{shard_id}|{position}"

    async def read(self, iterator: str, limit: int) -> ReadResult:
        await anyio.lowlevel.checkpoint()
        shard_id, position = iterator.split("|")
        self.reads += 1
        self.reads_of[shard_id] += 1
        self.limits_of[shard_id].append(limit)
        if self.reads in self.faults:
            raise self.faults[self.reads]
        fake = self.shards[shard_id]
        found = [r for r in fake.records if r[0] > int(position)][:limit]
        reached = found[-1][0] if found else int(position)
        self.read_upto[shard_id] = max(self.read_upto[shard_id], reached)
        closed = fake.info.ending_sequence is not None
        ended = closed and self.closed_iterators_end and reached >= fake.last
        raw = [
            {
                "SequenceNumber": str(s),
                "PartitionKey": k,
                "Data": b"{}",
                "ApproximateArrivalTimestamp": a,
            }
            for s, k, a in found
        ]
        return ReadResult(
            raw, None if ended else f"{shard_id}|{reached}", reached >= fake.last, 0.0
        )

    async def polled(self, shard_id: str, count: int) -> None:
        """Wait until `shard_id` was read `count` more times: an idle shard's reader went round
        its loop that often (at least `count` idle polls of time), so every other reader and
        lane had its chance to act meanwhile."""
        target = self.reads_of[shard_id] + count
        await eventually(lambda: self.reads_of[shard_id] >= target, timeout=5, interval=0.01)

    def event_record(self, raw: Mapping[str, Any], shard_id: str) -> dict[str, Any]:
        return kinesis_record(
            raw, shard_id=shard_id, stream_arn=ARN, region="us-east-1", invoke_identity_arn="x"
        )

    def stream_record(self, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        return stream_record(self.event_record(raw, shard_id), kind="kinesis")

    def matches(self, filters: FilterSet, record: Mapping[str, Any]) -> bool:
        return filters.matches_kinesis(record)


class FakeSettler:
    """A stand-in for the engine's Settler: records each batch, then acknowledges it; a key in
    `blocked` holds its batch until the event is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[tuple[str, list[int], list[str]]] = []
        self.blocked: dict[str, anyio.Event] = {}
        self.delay = delay
        self.active = 0
        self.peak = 0

    async def settle(
        self,
        records: Sequence[StreamRecord],
        acknowledge: Any,
        *,
        scope: str | None = None,
        window: Any = None,
    ) -> None:
        shard_id = scope or ""
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            for r in records:
                if r.key in self.blocked:
                    await self.blocked[r.key].wait()
            await anyio.sleep(self.delay)
        finally:
            self.active -= 1
        self.batches.append((shard_id, [r.sequence for r in records], [r.key for r in records]))
        await acknowledge(records)

    async def close_window(self, window: Any) -> None:
        """Tumbling windows are not what these tests are about."""

    def processed(self, shard_id: str | None = None) -> list[int]:
        return [s for sid, seqs, _ in self.batches if shard_id in (None, sid) for s in seqs]


@dataclass
class Harness:
    api: FakeApi
    settler: FakeSettler
    store: MemoryStore
    status: MappingStatus
    shutdown: Shutdown
    source: StreamSource


def stream_context(
    api: FakeApi,
    settler: FakeSettler,
    store: Any,
    shutdown: Shutdown,
    leases: Any = None,
    **mapping: Any,
) -> StreamContext:
    """A Kinesis mapping `orders` (TRIM_HORIZON, batch 5 unless `mapping` says otherwise)
    wired to fakes, with fast back-offs; `leases` when a test plays a fleet."""
    settings = MappingSettings.model_validate(
        {
            "name": "orders",
            "source": ARN,
            "target": {"type": "python", "handler": "m:f"},
            "starting_position": "TRIM_HORIZON",
            "batch_size": 5,
            **mapping,
        }
    )
    metrics = Metrics()
    status = MappingStatus(
        "orders", settings.uuid, ARN, "python:m:f", metrics.for_mapping("orders")
    )
    extra = {} if leases is None else {"leases": leases}
    return StreamContext(
        mapping=settings,
        api=api,
        settler=settler,
        store=store,
        filters=FilterSet.compile(settings.filter_patterns, source="kinesis"),
        metrics=status.metrics,
        gauges=ShardGauges(metrics, "orders"),
        status=status,
        shutdown=shutdown,
        backoff_base=0.01,
        **extra,
    )


@asynccontextmanager
async def streaming(
    api: FakeApi,
    settler: FakeSettler | None = None,
    store: MemoryStore | None = None,
    *,
    drain: float = 5.0,
    **mapping: Any,
) -> AsyncIterator[Harness]:
    """A StreamSource over `api` running in the background; stopped (drain seconds) on exit."""
    shutdown = Shutdown()
    context = stream_context(
        api, settler or FakeSettler(), store or MemoryStore(), shutdown, **mapping
    )
    status = context.status
    source = StreamSource(context, discovery_interval=0.05)
    harness = Harness(api, context.settler, context.store, status, shutdown, source)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        try:
            yield harness
        finally:
            shutdown.begin(drain)


def checkpoint(h: Harness, shard_id: str) -> str | None:
    status = h.status.shards.get(shard_id)
    return status.checkpoint if status else None


def records(seqs: range, key: Callable[[int], str] = lambda s: "k") -> list[tuple[int, str, float]]:
    return [(s, key(s), time.time()) for s in seqs]


@pytest.mark.parametrize("closed_iterators_end", [True, False])
async def test_split_and_merge_read_parents_before_children(closed_iterators_end: bool) -> None:
    api = FakeApi(
        [
            FakeShard(shard("a", ending=10), records(range(1, 11))),
            FakeShard(shard("b", "a", ending=25), records(range(11, 26))),
            FakeShard(shard("c", "a", ending=33), records(range(26, 34))),
            FakeShard(shard("d", "b", "c"), records(range(34, 40))),
        ],
        closed_iterators_end=closed_iterators_end,
    )
    async with streaming(api) as h:
        await eventually(lambda: len(h.settler.processed()) == 39)
        await eventually(lambda: set(h.status.shards) == {"d"})
    order = [sid for sid, seqs, _ in h.settler.batches for _ in seqs]
    last = {sid: max(i for i, s in enumerate(order) if s == sid) for sid in "abcd"}
    first = {sid: order.index(sid) for sid in "abcd"}
    assert last["a"] < first["b"] and last["a"] < first["c"]
    assert max(last["b"], last["c"]) < first["d"]
    for sid in "abcd":  # siblings interleave; each shard stays in order
        assert h.settler.processed(sid) == sorted(h.settler.processed(sid))
    checkpoints = h.store.checkpoints
    assert [checkpoints[s] for s in "abc"] == [
        Checkpoint("10", True),
        Checkpoint("25", True),
        Checkpoint("33", True),
    ]
    assert checkpoints["d"] == Checkpoint("39", False)


async def test_a_new_shard_after_the_first_start_reads_from_trim_horizon() -> None:
    store = MemoryStore()
    api = FakeApi([FakeShard(shard("a"), records(range(1, 4)))])
    async with streaming(api, store=store, starting_position="LATEST") as h:
        await eventually(lambda: ("a", StartAt("LATEST")) in api.starts)
        api.shards["a"].records += records(range(4, 6))
        api.shards["new"] = FakeShard(shard("new"), records(range(1, 3)))
        await eventually(lambda: len(h.settler.processed()) == 4)
    assert h.settler.processed("a") == [4, 5]
    assert h.settler.processed("new") == [1, 2]
    assert ("new", StartAt("TRIM_HORIZON")) in api.starts


async def test_a_latest_mapping_restarted_before_its_first_checkpoint_resumes_at_its_start() -> (
    None
):
    store = MemoryStore()
    old = [(seq, "k", time.time() - 5) for seq in range(1, 4)]
    api = FakeApi([FakeShard(shard("a"), old)])
    async with streaming(api, store=store, starting_position="LATEST"):
        await eventually(lambda: api.read_upto["a"] == 3 and store.started is not None)
    assert store.checkpoints == {"a": Checkpoint(None)}  # an initial shard, no position yet
    started = store.started
    api.shards["a"].records += records(range(4, 6))
    async with streaming(api, store=store, starting_position="LATEST") as h:
        await eventually(lambda: h.settler.processed() == [4, 5])
    assert api.starts[-1] == ("a", StartAt("AT_TIMESTAMP", timestamp=started))
    # Where AT_TIMESTAMP does not exist (DynamoDB), the horizon is read and older records skipped.
    api.supports_at_timestamp = False
    store.checkpoints = {"a": Checkpoint(None)}
    async with streaming(api, store=store, starting_position="LATEST") as h:
        await eventually(lambda: h.settler.processed() == [4, 5])
    assert api.starts[-1] == ("a", StartAt("TRIM_HORIZON"))


async def test_read_faults_lose_nothing_and_repeat_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 21)))])
    api.max_records = 5  # one batch a read, so the faults fall between records
    api.faults = {
        2: client_error("ExpiredIteratorException"),
        4: client_error("ProvisionedThroughputExceededException"),
        6: client_error("InternalFailure"),
        8: client_error("TrimmedDataAccessException"),
    }
    caplog.set_level(logging.INFO, logger="poller.streams")
    async with streaming(api) as h:
        await eventually(lambda: checkpoint(h, "a") == "20")
        assert h.status.state.value == "running"  # degraded by the failure, then recovered
    assert h.settler.processed() == list(range(1, 21))
    degraded = [r for r in caplog.records if "InternalFailure" in r.getMessage()]
    assert degraded and degraded[0].levelno == logging.ERROR
    trimmed = [r for r in caplog.records if "retention" in r.getMessage()]
    assert trimmed and trimmed[0].levelno == logging.ERROR
    assert "shard a" in trimmed[0].getMessage()
    assert [start.type for _, start in api.starts] == [
        "TRIM_HORIZON",
        "AFTER_SEQUENCE_NUMBER",  # expired: a new iterator after the last record read
        "AFTER_SEQUENCE_NUMBER",  # after the failure
        "TRIM_HORIZON",  # trimmed: what is left from the horizon (read records skipped)
    ]


async def test_reads_ask_for_the_room_under_the_span_cap_and_stop_at_it() -> None:
    # batch_size 10: the span behind the checkpoint is capped at 100 records. The idle shard's
    # reader polls all along: the sign that a's reader had its chances to read.
    api = FakeApi(
        [
            FakeShard(shard("a"), records(range(1, 51), lambda s: "a" if s <= 10 else "b")),
            FakeShard(shard("idle")),
        ]
    )
    settler = FakeSettler()
    first = settler.blocked["a"] = anyio.Event()  # the first batch: records 1-10
    rest = settler.blocked["b"] = anyio.Event()
    limits = api.limits_of["a"]
    async with streaming(api, settler, batch_size=10) as h:
        await eventually(lambda: api.read_upto["a"] == 50)
        assert limits[0] == 100  # one large first read, not one batch
        api.shards["a"].records += records(range(51, 301), lambda s: "b")
        await eventually(lambda: api.read_upto["a"] == 100)
        assert set(limits[1:]) == {50}  # the room left: 100 - 50 unsettled
        reads = api.reads_of["a"]
        await api.polled("idle", 10)
        assert (api.reads_of["a"], api.read_upto["a"]) == (reads, 100)  # at the cap: no read
        first.set()  # the first batch settles: room for one batch
        await eventually(lambda: api.read_upto["a"] == 110)
        await api.polled("idle", 10)
        assert api.read_upto["a"] == 110 and limits[reads:] == [10]  # then at the cap again
        rest.set()
        await eventually(lambda: checkpoint(h, "a") == "300")
    assert settler.processed() == list(range(1, 301))
    assert all(len(seqs) <= 10 for _, seqs, _ in settler.batches)


class SlowStore(MemoryStore):
    """Checkpoint writes with a position wait for `gate` (the first-start markers do not)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.waiting = 0

    async def put(self, mapping: str, stream_arn: str, shard_id: str, cp: Checkpoint) -> None:
        if cp.sequence_number is not None and not self.gate.is_set():
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
        await super().put(mapping, stream_arn, shard_id, cp)


async def test_reading_goes_on_while_a_checkpoint_write_is_slow() -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 301))), FakeShard(shard("idle"))])
    store = SlowStore()
    async with streaming(api, store=store, batch_size=10) as h:
        try:
            await eventually(lambda: store.waiting == 1)  # the first batch's checkpoint, stuck
            # The reader reads on: records 101-110 fit under the cap only once that write
            # started (it moved the watermark first), and the write never finished.
            await eventually(lambda: api.read_upto["a"] == 110)
            assert api.limits_of["a"] == [100, 10]
            # Meanwhile the lane waits for its batch's checkpoint before taking the next (the
            # idle shard's polls: the lane and the reader had their chances meanwhile).
            await api.polled("idle", 10)
            assert h.settler.processed() == list(range(1, 11))
            assert store.waiting == 1 and store.checkpoints["a"] == Checkpoint(None)
            assert api.limits_of["a"] == [100, 10]  # and reading stopped at the cap
        finally:
            store.gate.set()  # a shielded write stuck for good would hang the shutdown
        await eventually(lambda: checkpoint(h, "a") == "300")
        assert store.checkpoints["a"] == Checkpoint("300")
    assert h.settler.processed() == list(range(1, 301))
    written = [int(cp.sequence_number or 0) for _, cp in store.puts]
    assert written == sorted(written)  # never backwards


async def test_the_checkpoint_writer_stores_the_last_settled_record() -> None:
    # Only the first 10 records pass the filter: past them, nothing settles in a lane, and
    # the background writer alone moves the checkpoint over the records filtered out.
    keys = lambda s: "k0" if s <= 10 else "k1"  # noqa: E731
    api = FakeApi([FakeShard(shard("a"), records(range(1, 251), keys))])
    pattern = '{"partitionKey": ["k0"]}'
    filters = {"filters": [{"pattern": pattern}]}
    async with streaming(api, batch_size=10, filter_criteria=filters) as h:
        await eventually(lambda: h.store.checkpoints.get("a") == Checkpoint("250"))
        api.shards["a"].records += records(range(251, 256), keys)
        await eventually(lambda: h.store.checkpoints.get("a") == Checkpoint("255"))
        assert checkpoint(h, "a") == "255"
    assert h.settler.processed() == list(range(1, 11))
    written = [int(cp.sequence_number) for _, cp in h.store.puts if cp.sequence_number]
    assert written == sorted(written) and written[-1] == 255


async def test_parallel_lanes_keep_key_order_and_a_stuck_key_bounds_the_read_ahead() -> None:
    keys = ["stuck", "a", "b", "c", "d", "e"]
    key_of = lambda s: keys[s % 6]  # noqa: E731
    api = FakeApi([FakeShard(shard("a"), records(range(1, 601), key_of)), FakeShard(shard("idle"))])
    settler = FakeSettler(delay=0.002)
    settler.blocked["stuck"] = anyio.Event()
    stuck_lane = lane_for("stuck", 4)

    def free_lanes_done() -> bool:
        # Every record read into a lane other than the stuck key's has been processed.
        read = range(1, api.read_upto["a"] + 1)
        free = {s for s in read if lane_for(key_of(s), 4) != stuck_lane}
        return bool(free) and free <= set(settler.processed("a"))

    async with streaming(api, settler, batch_size=5, parallelization_factor=4) as h:
        await eventually(lambda: settler.peak > 1)
        # The lanes the stuck key does not hold have processed all that was read; then the
        # idle shard's polls: their checkpoints were written, and the reader had its chances
        # to read on as far as those allowed.
        await eventually(free_lanes_done)
        await api.polled("idle", 10)
        # The checkpoint cannot pass the stuck key's first record, and reading stops once the
        # span behind it reaches 10 batches (a read asks for at least a batch: less than one
        # batch more).
        stored = int(checkpoint(h, "a") or 0)
        assert stored < 6  # record 6 is the stuck key's first
        assert 10 * 5 <= api.read_upto["a"] - stored < 10 * 5 + 5  # read up to the cap, no more
        assert api.read_upto["a"] <= 10 * 5 + 5
        settler.blocked.pop("stuck").set()
        await eventually(lambda: len(settler.processed()) == 600)
        await eventually(lambda: checkpoint(h, "a") == "600")
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, seqs, batch_keys in settler.batches:
        for seq, key in zip(seqs, batch_keys, strict=True):
            per_key[key].append(seq)
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
    assert sorted(settler.processed()) == list(range(1, 601))


async def test_a_batching_window_gathers_records_from_several_reads() -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 4)))])
    async with streaming(api, batch_size=10, maximum_batching_window_in_seconds=1) as h:
        await eventually(lambda: api.read_upto["a"] == 3)
        api.shards["a"].records += records(range(4, 8))
        await eventually(lambda: api.read_upto["a"] == 7)
        assert not h.settler.batches  # the window is still open
        await eventually(lambda: len(h.settler.batches) == 1, timeout=3)
        api.shards["a"].records += records(range(8, 20))
        await eventually(lambda: len(h.settler.processed()) == 19, timeout=3)
    assert [seqs for _, seqs, _ in h.settler.batches][:2] == [
        list(range(1, 8)),
        list(range(8, 18)),  # full at batch_size: it does not wait for the window
    ]


async def test_filtered_out_records_move_the_checkpoint() -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 11), lambda s: f"k{s % 2}"))])
    pattern = '{"partitionKey": ["k0"]}'
    async with streaming(api, filter_criteria={"filters": [{"pattern": pattern}]}) as h:
        await eventually(lambda: checkpoint(h, "a") == "10")
    assert h.settler.processed() == [2, 4, 6, 8, 10]


async def test_shutdown_abandons_a_batch_still_in_flight_at_the_deadline() -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 11)))])
    settler = FakeSettler()
    settler.blocked["k"] = anyio.Event()
    async with streaming(api, settler, drain=0.1) as h:
        await eventually(lambda: settler.active == 1)
    assert h.source.abandoned == 1
    assert h.store.checkpoints.get("a") is None or h.store.checkpoints["a"].sequence_number is None


# -- the service-specific parts ---------------------------------------------------------------


class PagedClient:
    """Answers ListShards / DescribeStream in pages of one shard, recording the requests."""

    def __init__(self, shards: list[dict[str, Any]]) -> None:
        self.shards = shards
        self.requests: list[dict[str, Any]] = []

    async def list_shards(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        index = int(request.get("NextToken", 0))
        page: dict[str, Any] = {"Shards": self.shards[index : index + 1]}
        if index + 1 < len(self.shards):
            page["NextToken"] = str(index + 1)
        return page

    async def describe_stream(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        ids = [s["ShardId"] for s in self.shards]
        after = request.get("ExclusiveStartShardId")
        index = ids.index(after) + 1 if after else 0
        description: dict[str, Any] = {"Shards": self.shards[index : index + 1]}
        if index + 1 < len(self.shards):
            description["LastEvaluatedShardId"] = ids[index]
        return {"StreamDescription": description}


LISTED = [
    {
        "ShardId": "p",
        "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
    },
    {
        "ShardId": "q",
        "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
    },
    {
        "ShardId": "m",
        "ParentShardId": "p",
        "AdjacentParentShardId": "q",
        "SequenceNumberRange": {"StartingSequenceNumber": "10"},
    },
]


async def test_kinesis_lists_every_page_with_merge_lineage() -> None:
    client = PagedClient(LISTED)
    api = KinesisShards(client, parse_source_arn(ARN), invoke_identity_arn="x")
    assert await api.list_shards() == [
        ShardInfo("p", (), 9),
        ShardInfo("q", (), 9),
        ShardInfo("m", ("p", "q"), None),
    ]
    # NextToken names the stream on its own: the API refuses StreamARN beside it.
    assert client.requests == [{"StreamARN": ARN}, {"NextToken": "1"}, {"NextToken": "2"}]


async def test_dynamodb_lists_every_page_by_exclusive_start_shard_id() -> None:
    stream = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2025-01-01T00:00:00.000"
    shards = [
        {"ShardId": "old", "SequenceNumberRange": {"EndingSequenceNumber": "300"}},
        {"ShardId": "new", "ParentShardId": "old", "SequenceNumberRange": {}},
    ]
    client = PagedClient(shards)
    api = DynamoDBShards(client, parse_source_arn(stream))
    assert await api.list_shards() == [ShardInfo("old", (), 300), ShardInfo("new", ("old",))]
    assert client.requests == [
        {"StreamArn": stream},
        {"StreamArn": stream, "ExclusiveStartShardId": "old"},
    ]


def test_an_assumed_role_identity_is_reported_as_its_role() -> None:
    assumed = "arn:aws:sts::123456789012:assumed-role/consumer-role/session-1"
    assert role_arn(assumed) == "arn:aws:iam::123456789012:role/consumer-role"
    assert role_arn("arn:aws:iam::123456789012:user/moto") == "arn:aws:iam::123456789012:user/moto"


class FailingStore(MemoryStore):
    """Writes of a position fail while `failing` holds: StoreUnavailable (the file system
    refusing) by default, or `error` when given; every attempt counted."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.failing = False
        self.error = error
        self.refused = 0

    async def put(self, mapping: str, stream_arn: str, shard_id: str, cp: Checkpoint) -> None:
        if cp.sequence_number is not None and self.failing:
            self.refused += 1
            raise self.error or StoreUnavailable("checkpoints.path 'state.db': disk full")
        await super().put(mapping, stream_arn, shard_id, cp)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (None, "disk full"),  # the SQLite file refusing
        (EndpointConnectionError(endpoint_url="http://leases"), "cannot reach http://leases"),
    ],
)
async def test_failed_checkpoint_writes_degrade_retry_and_read_nothing_twice(
    error: Exception | None, words: str
) -> None:
    api = FakeApi([FakeShard(shard("a", ending=40), records(range(1, 41)))])
    store = FailingStore(error)
    store.failing = True
    async with streaming(api, store=store, batch_size=5) as h:
        await eventually(lambda: h.settler.processed() == list(range(1, 41)))
        await eventually(lambda: store.refused >= 3)  # retried, with back-off, while refused
        assert h.status.state is State.DEGRADED
        assert words in (h.status.error or "")
        assert "a" not in store.checkpoints or store.checkpoints["a"].sequence_number is None
        store.failing = False
        # The shard's end is stored once the store takes writes again: its children may start.
        await eventually(lambda: store.checkpoints.get("a") == Checkpoint("40", True))
        await eventually(lambda: h.status.state is State.RUNNING)
    assert h.settler.processed() == list(range(1, 41))  # the position stayed in memory


async def test_a_store_gone_unusable_under_a_reader_fails_the_mapping() -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 11)))])
    gone = StoreUnusable("checkpoints.path 'state.db': the file was deleted while poller ran")
    store = FailingStore(gone)
    async with streaming(api, store=store, batch_size=5) as h:
        await eventually(lambda: api.read_upto.get("a") == 10)
        store.failing = True
        api.shards["a"].records += records(range(11, 16))
        await eventually(lambda: h.status.state is State.FAILED)
        assert "deleted" in (h.status.error or "") and "state.db" in (h.status.error or "")
