"""The lease table: the store against moto directly, then fleets of `poller run` replicas.

The lease table is served by a single-threaded moto front (tests.support.leases) so that
conditional writes are atomic, as DynamoDB's are; everything else goes to the session's
threaded moto server. Both share moto's state, which the `moto` fixture resets per test.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from poller.aws.clients import AwsClients
from poller.checkpoints import Checkpoint, LeaseLost
from poller.checkpoints.base import StoreUnusable
from poller.checkpoints.dynamodb import DynamoDBCheckpointStore
from poller.checkpoints.lease_items import (
    CHUNK_BYTES,
    INLINE_STATE_BYTES,
    WINDOW_PREFIX,
    is_conditional_failure,
    partition,
    shard_key,
)
from poller.checkpoints.leases import LeaseManager
from poller.checkpoints.lineage import ShardInfo
from poller.config.settings import AwsSettings
from poller.engine.lifecycle import Shutdown
from poller.engine.windows import MAX_STATE_BYTES
from poller.ops.metrics import Metrics
from poller.ops.status import MappingStatus, State
from tests.support.commands import poller
from tests.support.config import config_yaml
from tests.support.daemon import metric, running, settings_from
from tests.support.fake_lambda import FakeLambda, SlowFunction, event_records
from tests.support.leases import (
    TABLE,
    fleet_yaml,
    get_json,
    get_text,
    lease_counters,
    lease_items,
    metric_value,
    ops_port,
    owners,
    replica_id,
    single_threaded_dynamodb,
    start_fleet,
    stop_fleet,
    table_items,
)
from tests.support.queues import aws_client
from tests.support.streams import (
    assert_parents_before_children,
    list_shards,
    make_stream,
    make_table,
    numbers,
    put_records,
    reshard,
)
from tests.support.wait import eventually

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


@pytest.fixture(scope="session")
def dynamodb_front(moto_server: str) -> Iterator[str]:
    """The single-threaded DynamoDB front, for the whole session (state reset with moto's)."""
    with single_threaded_dynamodb() as url:
        yield url


@pytest.fixture
async def dynamodb(moto: str, dynamodb_front: str) -> AsyncIterator[Any]:
    """Here DynamoDB is reached through the single-threaded front (it overrides the shared
    fixture of tests/integration/conftest.py), as the replicas reach the lease table."""
    async with aws_client("dynamodb", dynamodb_front) as client:
        yield client


@asynccontextmanager
async def store_for(
    endpoint: str, replica: str, duration: float = 1.5
) -> AsyncIterator[DynamoDBCheckpointStore]:
    async with AwsClients(AwsSettings(region="us-east-1", endpoints={"dynamodb": endpoint})) as c:
        yield DynamoDBCheckpointStore(c, TABLE, lease_duration=duration, replica=replica)


def status_for(mapping: str = "orders") -> MappingStatus:
    metrics = Metrics().for_mapping(mapping)
    return MappingStatus(mapping, "uuid", ARN, "python:m:f", metrics)


@asynccontextmanager
async def keeping(
    store: DynamoDBCheckpointStore, shards: list[str], status: MappingStatus | None = None
) -> AsyncIterator[LeaseManager]:
    """A store's lease loop for mapping `orders` over `shards`, running in the background."""
    manager = store.leases("orders", ARN, status or status_for(), Shutdown())
    manager.update([ShardInfo(shard) for shard in shards])
    async with anyio.create_task_group() as tg:
        tg.start_soon(manager.run, lambda: None)
        try:
            yield manager
        finally:
            tg.cancel_scope.cancel()
    await manager.aclose()


@asynccontextmanager
async def stalled(store: DynamoDBCheckpointStore, shard: str) -> AsyncIterator[LeaseManager]:
    """A store that took `shard`'s lease and whose lease loop then stalled (a long pause): it
    keeps the token without renewing it, so only the table's conditions can refuse its writes."""
    manager = store.leases("orders", ARN, status_for(), Shutdown())
    manager.update([ShardInfo(shard)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(manager.run, lambda: None)
        await eventually(lambda: manager.state(shard) == "held", timeout=10)
        tg.cancel_scope.cancel()
    yield manager


# -- the store against the table ---------------------------------------------------------------


async def test_a_replica_whose_lease_was_stolen_cannot_write_a_checkpoint(
    dynamodb_front: str, dynamodb: Any
) -> None:
    async with store_for(dynamodb_front, "replica-a") as a, store_for(dynamodb_front, "b") as b:
        # Stalled, so no renewal moves the counter between the peer's read and its take.
        async with stalled(a, "shard-1") as manager:
            await a.put("orders", ARN, "shard-1", Checkpoint("5"))

            # A peer takes the lease (as it would once it judged it expired): a conditional
            # write on the counter it read. The owner's renewals move the counter, so the
            # peer reads it again when one came in between.
            async def steal() -> bool:
                item = await b.table.get(partition("orders", ARN), shard_key("shard-1"))
                assert item is not None and item["owner"]["S"] == "replica-a"
                try:
                    await b.table.take(
                        partition("orders", ARN),
                        "shard-1",
                        counter=int(item["counter"]["N"]),
                        owner="b",
                        token="peer-token",
                        now=time.time(),
                    )
                except Exception as exc:
                    if not is_conditional_failure(exc):
                        raise
                    return False
                return True

            await eventually(steal, timeout=10)
            with pytest.raises(LeaseLost, match="taken by another instance"):
                await a.put("orders", ARN, "shard-1", Checkpoint("9"))
            assert manager.state("shard-1") is None
            # Nothing moved: the new owner's checkpoint is the one the old owner left.
            assert await a.get("orders", ARN, "shard-1") == Checkpoint("5")
            with pytest.raises(LeaseLost, match="holds no lease"):
                await a.put("orders", ARN, "shard-1", Checkpoint("10"))
        (lease,) = await lease_items(dynamodb)
        assert lease == {"shard": "shard-1", "owner": "b", "state": "open", "checkpoint": "5"}


async def test_two_replicas_split_the_shards_and_a_release_frees_one_at_once(
    dynamodb_front: str, dynamodb: Any
) -> None:
    shards = [f"shard-{n}" for n in range(4)]
    async with store_for(dynamodb_front, "a") as a, store_for(dynamodb_front, "b") as b:
        async with keeping(a, shards) as first, keeping(b, shards) as second:
            await eventually(lambda: len(first.held()) == 2 and len(second.held()) == 2, timeout=15)
            assert not set(first.held()) & set(second.held())
            assert await owners(dynamodb) == Counter({"a": 2, "b": 2})
        # Closing released both sides' leases and deleted the heartbeats.
        assert await owners(dynamodb) == Counter({None: 4})
        items = (await dynamodb.scan(TableName=TABLE))["Items"]
        assert not [item for item in items if item["sk"]["S"].startswith("replica|")]


async def test_the_first_start_is_kept_and_start_checkpoints_need_no_lease(
    dynamodb_front: str,
) -> None:
    async with store_for(dynamodb_front, "a") as store:
        assert await store.mapping_started_at("orders", ARN) is None
        await store.set_mapping_started_at("orders", ARN, 1_735_732_800.25)
        await store.set_mapping_started_at("orders", ARN, 1_735_732_900.0)
        assert await store.mapping_started_at("orders", ARN) == 1_735_732_800.25
        await store.put("orders", ARN, "shard-1", Checkpoint(None))
        assert await store.get("orders", ARN, "shard-1") == Checkpoint(None)
        assert await store.get("orders", ARN, "shard-2") is None
        assert await store.all("orders", ARN) == {"shard-1": Checkpoint(None)}


async def test_a_table_with_another_key_schema_is_refused_with_what_to_do(
    dynamodb_front: str, dynamodb: Any
) -> None:
    await dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    async with store_for(dynamodb_front, "a") as store:
        with pytest.raises(StoreUnusable, match=f"checkpoints.table {TABLE}: its key is leaseKey"):
            await store.all("orders", ARN)


async def test_a_mapping_on_a_foreign_table_fails_with_the_table_and_what_to_do(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any
) -> None:
    await dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    arn = await make_stream(kinesis, "orders")
    async with FakeLambda() as fake:
        config = fleet_config(moto, dynamodb_front, fake, arn)
        async with running(settings_from(config)) as app:
            status = app.mappings[0].status
            await eventually(lambda: status.state == State.FAILED, timeout=10)
            assert status.error is not None
            assert f"checkpoints.table {TABLE}" in status.error
            assert "set checkpoints.table to a new name" in status.error


async def test_a_dynamodb_stream_is_read_under_a_lease_owned_by_this_replica(
    moto: str, dynamodb_front: str, dynamodb: Any
) -> None:
    arn = await make_table(dynamodb, "orders", "NEW_IMAGE")
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"item-{n}"}})
    async with FakeLambda() as fake:
        async with running(settings_from(fleet_config(moto, dynamodb_front, fake, arn))) as app:
            await eventually(lambda: len(event_records(fake)) >= 3, timeout=20)
            (shard,) = app.mappings[0].status.as_json()["shards"]
            assert metric(app, "poller_leases_owned", mapping="orders") == 1
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event_records(fake)]
        assert keys == ["item-0", "item-1", "item-2"]
    (lease,) = await lease_items(dynamodb)
    assert shard["owner"] and lease["owner"] is None  # released on the way out
    assert lease["checkpoint"] == event_records(fake)[-1]["dynamodb"]["SequenceNumber"]


async def test_a_missing_table_is_created_on_demand(dynamodb_front: str, dynamodb: Any) -> None:
    async with store_for(dynamodb_front, "a") as store:
        assert await store.all("orders", ARN) == {}
    table = (await dynamodb.describe_table(TableName=TABLE))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


# -- tumbling windows: the open window's state beside the position ------------------------------

WINDOW = 1_735_732_800  # a window's start, epoch seconds
PK = partition("orders", ARN)


def state_of(size: int) -> bytes:
    """A compact JSON object of exactly `size` (>= 8) bytes, random: two states, or two chunks,
    never look alike."""
    filler = os.urandom(size // 2 + 1).hex()[: size - 8]
    return f'{{"s":"{filler}"}}'.encode()


def windowed(sequence: str, size: int) -> Checkpoint:
    return Checkpoint(sequence, window_start=WINDOW, window_state=state_of(size))


@asynccontextmanager
async def holding(store: DynamoDBCheckpointStore, *shards: str) -> AsyncIterator[LeaseManager]:
    """`keeping`, once every one of `shards` is held."""
    async with keeping(store, list(shards)) as manager:
        await eventually(lambda: all(manager.state(s) == "held" for s in shards), timeout=10)
        yield manager


async def lease_item(dynamodb: Any, shard: str) -> dict[str, Any]:
    (item,) = [i for i in await table_items(dynamodb) if i["sk"]["S"] == shard_key(shard)]
    return dict(item)


async def chunk_items(dynamodb: Any) -> dict[str, dict[str, Any]]:
    """Every window chunk item of the table, by `sk`."""
    items = await table_items(dynamodb)
    return {i["sk"]["S"]: i for i in items if i["sk"]["S"].startswith(WINDOW_PREFIX)}


def item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: names and values (strings, bytes, numbers)."""
    return sum(len(name) + len(str(next(iter(v.values())))) for name, v in item.items())


async def round_trip(front: str, dynamodb: Any, checkpoint: Checkpoint) -> dict[str, Any]:
    """Write `checkpoint` on shard-1 under its lease, check that `get` and `all` read it back;
    the lease item as stored."""
    async with store_for(front, "a") as a, holding(a, "shard-1"):
        await a.put("orders", ARN, "shard-1", checkpoint)
        assert await a.get("orders", ARN, "shard-1") == checkpoint
        assert await a.all("orders", ARN) == {"shard-1": checkpoint}
        return await lease_item(dynamodb, "shard-1")


@pytest.mark.parametrize("size", [8, 10_000, INLINE_STATE_BYTES])
async def test_a_small_window_state_is_kept_inline_in_the_lease_item(
    dynamodb_front: str, dynamodb: Any, size: int
) -> None:
    checkpoint = windowed("5", size)
    item = await round_trip(dynamodb_front, dynamodb, checkpoint)
    assert item["window_start"] == {"N": str(WINDOW)}
    assert item["window_state"] == {"B": checkpoint.window_state}
    assert "window_chunks" not in item and "window_id" not in item
    assert await chunk_items(dynamodb) == {}


async def test_a_1_mib_window_state_is_chunked_and_read_back_whole(
    dynamodb_front: str, dynamodb: Any
) -> None:
    checkpoint = windowed("5", MAX_STATE_BYTES)
    item = await round_trip(dynamodb_front, dynamodb, checkpoint)
    assert "window_state" not in item
    assert item["window_start"] == {"N": str(WINDOW)} and item["window_chunks"] == {"N": "3"}
    chunks = await chunk_items(dynamodb)
    keys = [f"window|shard-1|{n}" for n in range(3)]
    assert sorted(chunks) == keys
    assert b"".join(chunks[key]["data"]["B"] for key in keys) == checkpoint.window_state
    for chunk in chunks.values():
        assert chunk["window_id"] == item["window_id"]
        assert len(chunk["data"]["B"]) <= CHUNK_BYTES and item_size(chunk) < 400_000


async def test_a_shrinking_window_state_deletes_the_chunks_it_no_longer_takes(
    dynamodb_front: str, dynamodb: Any
) -> None:
    steps = [(MAX_STATE_BYTES, 3), (500_000, 2), (10_000, 0), (MAX_STATE_BYTES, 3), (8, 0)]
    async with store_for(dynamodb_front, "a") as a, holding(a, "shard-1"):
        for n, (size, chunk_count) in enumerate(steps):
            checkpoint = windowed(str(n), size)
            await a.put("orders", ARN, "shard-1", checkpoint)
            assert await a.get("orders", ARN, "shard-1") == checkpoint
            assert sorted(await chunk_items(dynamodb)) == [
                f"window|shard-1|{c}" for c in range(chunk_count)
            ]


async def test_a_checkpoint_without_a_window_clears_it_and_its_chunks(
    dynamodb_front: str, dynamodb: Any
) -> None:
    async with store_for(dynamodb_front, "a") as a, holding(a, "shard-1", "shard-2"):
        await a.put("orders", ARN, "shard-1", windowed("5", MAX_STATE_BYTES))
        await a.put("orders", ARN, "shard-1", Checkpoint("9"))
        await a.put("orders", ARN, "shard-2", windowed("5", 100))
        await a.put("orders", ARN, "shard-2", Checkpoint("9"))
        await a.put("orders", ARN, "shard-3", Checkpoint(None))  # START: needs no lease
        for shard in ("shard-1", "shard-2"):
            assert await a.get("orders", ARN, shard) == Checkpoint("9")
        # Exactly the layout of a lease that never had a window.
        never = "pk sk shard_id state counter owner token renewed_at checkpoint updated_at"
        for shard in ("shard-1", "shard-2"):
            assert set(await lease_item(dynamodb, shard)) == set(never.split())
    assert await chunk_items(dynamodb) == {}


@pytest.mark.parametrize(
    ("before", "refused"),
    [
        pytest.param(MAX_STATE_BYTES, MAX_STATE_BYTES, id="chunked-over-chunked"),
        pytest.param(MAX_STATE_BYTES, 1_000, id="inline-over-chunked"),
        pytest.param(MAX_STATE_BYTES, None, id="no-window-over-chunked"),
        pytest.param(1_000, MAX_STATE_BYTES, id="chunked-over-inline"),
        pytest.param(1_000, 1_000, id="inline-over-inline"),
    ],
)
async def test_a_replica_that_lost_the_lease_writes_neither_position_nor_window(
    dynamodb_front: str, dynamodb: Any, before: int, refused: int | None
) -> None:
    kept = windowed("5", before)
    async with store_for(dynamodb_front, "a") as a, store_for(dynamodb_front, "b") as b:
        async with stalled(a, "shard-1") as manager:
            await a.put("orders", ARN, "shard-1", kept)
            item = await lease_item(dynamodb, "shard-1")
            await b.table.take(
                PK,
                "shard-1",
                counter=int(item["counter"]["N"]),
                owner="b",
                token="peer-token",
                now=time.time(),
            )
            table = await table_items(dynamodb)
            write = Checkpoint("9") if refused is None else windowed("9", refused)
            with pytest.raises(LeaseLost, match="taken by another instance"):
                await a.put("orders", ARN, "shard-1", write)
            assert manager.state("shard-1") is None
            assert await table_items(dynamodb) == table  # not one item moved
        assert await b.get("orders", ARN, "shard-1") == kept


@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "write-first"])
async def test_a_takeover_hands_the_window_state_to_the_new_owner(
    dynamodb_front: str, dynamodb: Any, read_first: bool
) -> None:
    """The new owner reads the state the old one left; its own first write replaces those
    chunks, whether or not it read them first (the count it expects is corrected)."""
    left = windowed("5", MAX_STATE_BYTES)
    async with store_for(dynamodb_front, "a") as a, store_for(dynamodb_front, "b") as b:
        async with holding(a, "shard-1"):
            await a.put("orders", ARN, "shard-1", left)
        async with holding(b, "shard-1"):  # a released the lease on its way out
            if read_first:
                assert await b.get("orders", ARN, "shard-1") == left
            await b.put("orders", ARN, "shard-1", windowed("6", 500_000))
            assert sorted(await chunk_items(dynamodb)) == ["window|shard-1|0", "window|shard-1|1"]
            smaller = windowed("7", 1_000)
            await b.put("orders", ARN, "shard-1", smaller)
            assert await b.get("orders", ARN, "shard-1") == smaller
    assert await chunk_items(dynamodb) == {}


async def test_all_returns_the_windows_and_never_a_chunk_item_as_a_shard(
    dynamodb_front: str,
) -> None:
    # shard-1 and shard-10: one's chunk keys are a prefix of the other's but for the "|".
    expected = {
        "shard-1": windowed("1", MAX_STATE_BYTES),
        "shard-10": windowed("10", 700_000),
        "shard-2": windowed("2", 50),
        "shard-3": Checkpoint("3"),
        "shard-4": Checkpoint("4", window_start=WINDOW),  # an open window with no state yet
    }
    async with store_for(dynamodb_front, "a") as a, holding(a, *expected):
        for shard, checkpoint in expected.items():
            await a.put("orders", ARN, shard, checkpoint)
        await a.put("orders", ARN, "shard-5", Checkpoint(None))
        await a.set_mapping_started_at("orders", ARN, 1_735_732_800.25)
        assert await a.all("orders", ARN) == {**expected, "shard-5": Checkpoint(None)}
        for shard, checkpoint in expected.items():
            assert await a.get("orders", ARN, shard) == checkpoint


async def test_the_lease_loop_reads_neither_chunk_items_nor_window_states(
    dynamodb_front: str, dynamodb: Any
) -> None:
    shards = ["shard-1", "shard-2"]
    written = {"shard-1": windowed("1", MAX_STATE_BYTES), "shard-2": windowed("2", 200_000)}
    async with store_for(dynamodb_front, "a") as a, store_for(dynamodb_front, "b") as b:
        async with holding(a, *shards):
            for shard, checkpoint in written.items():
                await a.put("orders", ARN, shard, checkpoint)
        assert len(await chunk_items(dynamodb)) == 3
        statuses = status_for(), status_for()
        async with (
            keeping(a, shards, statuses[0]) as first,
            keeping(b, shards, statuses[1]) as second,
        ):
            await eventually(lambda: len(first.held()) == 1 and len(second.held()) == 1, timeout=15)
            assert sorted(first.held() + second.held()) == shards
            assert first.finished == set() and second.finished == set()
            # No chunk item shows up on /status as a shard.
            assert all(set(status.shards) <= set(shards) for status in statuses)
            scanned = await a.table.lease_loop_items(PK)
            assert {i["sk"]["S"] for i in scanned} == {
                "shard|shard-1",
                "shard|shard-2",
                "replica|a",
                "replica|b",
            }
            assert not [i for i in scanned if set(i) & {"window_state", "window_start"}]
            for store, manager in ((a, first), (b, second)):
                (shard,) = manager.held()
                assert await store.get("orders", ARN, shard) == written[shard]


async def test_a_window_whose_chunks_are_not_of_one_write_is_never_returned(
    dynamodb_front: str, dynamodb: Any
) -> None:
    checkpoint = windowed("5", MAX_STATE_BYTES)
    async with store_for(dynamodb_front, "a") as a, holding(a, "shard-1"):
        await a.put("orders", ARN, "shard-1", checkpoint)
        # As if a write came between reading the lease item and its chunks: one chunk of
        # another write.
        chunk = (await chunk_items(dynamodb))["window|shard-1|1"]
        await dynamodb.put_item(TableName=TABLE, Item={**chunk, "window_id": {"S": "other"}})
        with pytest.raises(TimeoutError, match="window state changed during each of 5 reads"):
            await a.get("orders", ARN, "shard-1")
        with pytest.raises(TimeoutError):
            await a.all("orders", ARN)
        # The owner's next checkpoint writes every chunk anew.
        await a.put("orders", ARN, "shard-1", checkpoint)
        assert await a.get("orders", ARN, "shard-1") == checkpoint


# -- fleets of replicas --------------------------------------------------------------------------

LEASE_DURATION = 2.0


async def settled(dynamodb: Any, replicas: int, each: int) -> None:
    """Wait until `replicas` owners hold `each` open leases apiece and keep them while every
    lease is renewed three times: a lease duration's worth of renewal periods, in each of which
    its owner also balanced (the fleet's steady state)."""

    async def balanced() -> dict[str, str | None] | None:
        items = await lease_items(dynamodb)
        counts = Counter(item["owner"] for item in items if item["state"] == "open")
        if None in counts or len(counts) != replicas or set(counts.values()) != {each}:
            return None
        return {item["shard"]: item["owner"] for item in items}

    async def renewed_or_moved(
        before: dict[str, str | None], counters: dict[str, int]
    ) -> str | None:
        if await balanced() != before:
            return "moved"
        now = await lease_counters(dynamodb)
        return "renewed" if all(now[s] >= counters[s] + 3 for s in before) else None

    while True:
        before = await eventually(balanced, timeout=40, interval=0.1)
        counters = await lease_counters(dynamodb)
        check = partial(renewed_or_moved, before, counters)
        if await eventually(check, timeout=30, interval=0.1) == "renewed":
            return


async def checkpointed(dynamodb: Any, placed: list[tuple[str, str]]) -> bool:
    """Whether each shard's lease checkpoint reached the last record put on it (`placed`:
    shard and sequence number of each record): every record settled, none left in flight
    that could still be delivered again."""
    last: dict[str, int] = {}
    for shard, sequence in placed:
        last[shard] = max(last.get(shard, 0), int(sequence))
    stored = {item["shard"]: item["checkpoint"] for item in await lease_items(dynamodb)}
    return all(int(stored.get(shard) or 0) >= sequence for shard, sequence in last.items())


async def produce(
    kinesis: Any, arn: str, count: int, placed: list[tuple[str, str]], *, chunk: int = 10
) -> None:
    """Put records n = 0..count-1 (keys spread over the shards), a chunk every 50 ms (the
    producer's pace, part of the scenario); each record's shard and sequence number go to
    `placed`."""
    for start in range(0, count, chunk):
        sent = [(f"k{n}", {"n": n}) for n in range(start, start + chunk)]
        placed.extend(await put_records(kinesis, arn, sent))
        await anyio.sleep(0.05)


async def taken_over(dynamodb: Any, victim: str, since: float) -> float:
    """Wait until no open lease is the victim's or free; seconds since `since`."""

    async def done() -> bool:
        counts = await owners(dynamodb)
        return victim not in counts and None not in counts

    await eventually(done, timeout=30, interval=0.05)
    return time.monotonic() - since


def delivered(fake: FakeLambda) -> list[int]:
    """The `n` of every record the fleet delivered, in arrival order."""
    return numbers(event_records(fake))


def fleet_config(
    moto: str,
    front: str,
    fake: FakeLambda,
    arn: str,
    lease_duration: float = LEASE_DURATION,
    **mapping: Any,
) -> str:
    return fleet_yaml(moto, front, fake, arn, lease_duration=lease_duration, **mapping)


# Keeps batches in flight when a replica goes.
SLOWISH = 0.05


@pytest.mark.slow
async def test_three_replicas_settle_at_two_shards_each_and_deliver_every_record_once(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any, tmp_path: Path
) -> None:
    """The first replica takes every shard alone; the two that join later make it give four
    leases up, one per renewal period, each handed over after its final checkpoint."""
    arn = await make_stream(kinesis, "orders", shards=6)
    async with FakeLambda() as fake:
        replicas = start_fleet(tmp_path, fleet_config(moto, dynamodb_front, fake, arn), 1)
        try:
            await eventually(lambda: owners(dynamodb), timeout=30)
            await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(60)])
            await settled(dynamodb, replicas=1, each=6)
            for joining in start_fleet(tmp_path, replicas[0].config_path.read_text(), 2):
                replicas.append(joining)
            await settled(dynamodb, replicas=3, each=2)
            # Handed over gracefully: nothing was delivered twice while the fleet grew.
            await eventually(lambda: len(delivered(fake)) >= 60, timeout=30)
            assert sorted(delivered(fake)) == list(range(60))
            fake.reset()
            placed = await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(120)])
            await eventually(lambda: len(delivered(fake)) >= 120, timeout=30)
            # Every shard checkpointed past its last record: a duplicate would have come first.
            await eventually(lambda: checkpointed(dynamodb, placed), timeout=30)
            assert sorted(delivered(fake)) == list(range(120))
            ids = {replica_id(replica) for replica in replicas}
            assert set(await owners(dynamodb)) == ids
            for replica in replicas:
                port = ops_port(replica)
                assert port is not None
                (mapping,) = get_json(port, "/status")["mappings"]
                shards = {shard["id"]: shard["owner"] for shard in mapping["shards"]}
                assert len(shards) == 6 and set(shards.values()) == ids  # the whole fleet
                assert Counter(shards.values())[replica_id(replica)] == 2
                metrics = get_text(port, "/metrics")
                assert metric_value(metrics, "poller_leases_owned") == 2
        finally:
            codes = await stop_fleet(replicas)
        assert codes == [0, 0, 0]
        # Each replica released its leases on the way out.
        assert await owners(dynamodb) == Counter({None: 6})


@pytest.mark.slow
async def test_sigkill_of_a_replica_under_load_its_shards_are_taken_over_and_nothing_is_lost(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any, tmp_path: Path
) -> None:
    arn = await make_stream(kinesis, "orders", shards=6)
    async with FakeLambda(SlowFunction(SLOWISH)) as fake:
        replicas = start_fleet(tmp_path, fleet_config(moto, dynamodb_front, fake, arn), 3)
        try:
            await settled(dynamodb, replicas=3, each=2)
            victim = replica_id(replicas[0])
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, kinesis, arn, 600, [])
                await eventually(lambda: len(delivered(fake)) >= 100, timeout=30)
                replicas[0].kill()  # SIGKILL
                killed = time.monotonic()
                takeover = await taken_over(dynamodb, victim, killed)
            await eventually(lambda: set(delivered(fake)) == set(range(600)), timeout=60)
            print(f"\ntakeover after SIGKILL: {takeover:.2f}s (lease duration {LEASE_DURATION}s)")
            takeovers = 0.0
            for replica in replicas[1:]:
                port = ops_port(replica)
                assert port is not None
                metrics = get_text(port, "/metrics")
                takeovers += metric_value(metrics, "poller_lease_takeovers_total") or 0
                assert metric_value(metrics, "poller_leases_owned") == 3
            assert takeovers == 2
        finally:
            codes = await stop_fleet(replicas)
        assert codes == [0, 0]
        duplicates = len(delivered(fake)) - 600
        # At most the batches in flight at the killed replica: one per shard it held.
        assert 0 <= duplicates <= 2 * 10, duplicates
        assert takeover < 6 * LEASE_DURATION


@pytest.mark.slow
async def test_sigterm_of_a_replica_releases_its_leases_for_a_quick_takeover(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any, tmp_path: Path
) -> None:
    arn = await make_stream(kinesis, "orders", shards=6)
    # Longer leases than the other fleet tests: the claim is that a graceful handover replays
    # nothing, and on a loaded machine a 2 s lease can lapse on a replica that stays (its
    # renewals starved past two periods), which replays a batch for a reason of its own.
    duration = 3 * LEASE_DURATION
    async with FakeLambda(SlowFunction(SLOWISH)) as fake:
        config = fleet_config(moto, dynamodb_front, fake, arn, lease_duration=duration)
        replicas = start_fleet(tmp_path, config, 3)
        try:
            await settled(dynamodb, replicas=3, each=2)
            leaving = replica_id(replicas[0])
            placed: list[tuple[str, str]] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, kinesis, arn, 600, placed)
                await eventually(lambda: len(delivered(fake)) >= 100, timeout=30)
                replicas[0].terminate()
                signalled = time.monotonic()
                takeover = await taken_over(dynamodb, leaving, signalled)
            assert await replicas[0].wait(timeout=30) == 0
            await eventually(lambda: set(delivered(fake)) == set(range(600)), timeout=60)
            # Every shard checkpointed past its last record: a duplicate would have come first.
            await eventually(lambda: checkpointed(dynamodb, placed), timeout=30)
            print(f"\ntakeover after SIGTERM: {takeover:.2f}s (lease duration {duration}s)")
        finally:
            codes = await stop_fleet(replicas)
        assert codes == [0, 0]
        # A graceful handover replays nothing: the final checkpoint came before the release.
        assert sorted(delivered(fake)) == list(range(600))
        # Released, not expired: an expired lease is taken no sooner than a lease duration
        # less one renewal period after its holder's last renewal.
        assert takeover < duration * 2 / 3


@pytest.mark.slow
async def test_resharding_under_leases_keeps_parents_before_children_across_replicas(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any, tmp_path: Path
) -> None:
    arn = await make_stream(kinesis, "orders")
    async with FakeLambda() as fake:
        config = fleet_config(moto, dynamodb_front, fake, arn, batch_size=5)
        replicas = start_fleet(tmp_path, config, 2)
        seen_owners: set[str | None] = set()
        try:
            await eventually(lambda: owners(dynamodb), timeout=30)

            async def put(start: int) -> list[str]:
                sent = [(f"k{n % 4}", {"key": n % 4, "n": n}) for n in range(start, start + 12)]
                placed = await put_records(kinesis, arn, sent)
                await eventually(lambda: len(delivered(fake)) >= start + 12, timeout=30)
                seen_owners.update(item["owner"] for item in await lease_items(dynamodb))
                return sorted({shard for shard, _ in placed})

            phases = await reshard(kinesis, arn, put)
            assert len(phases["split"]) == 2 and len(phases["merged"]) == 1
        finally:
            codes = await stop_fleet(replicas)
        assert codes == [0, 0]
        assert sorted(delivered(fake)) == list(range(36))
        assert_parents_before_children(fake, await list_shards(kinesis, arn))
        # The split's two children were read by the two replicas, one each.
        assert {replica_id(r) for r in replicas} <= seen_owners


async def test_checkpoints_set_refuses_while_a_lease_is_held(
    moto: str, dynamodb_front: str, kinesis: Any, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3)])
    shard, first, last = placed[0][0], placed[0][1], placed[-1][1]
    config = tmp_path / "poller.yaml"
    checkpoints = {"backend": "dynamodb", "table": TABLE, "lease_duration_seconds": 30}
    mapping = {"source": arn, "starting_position": "TRIM_HORIZON", "function": "fn"}
    config.write_text(
        config_yaml(moto, [mapping], dynamodb_url=dynamodb_front, checkpoints=checkpoints)
    )
    argv = ["-c", str(config), "--mapping", "orders"]
    async with store_for(dynamodb_front, "replica-a", duration=30) as store:
        manager = store.leases("orders", arn, status_for(), Shutdown())
        manager.update([ShardInfo(shard)])
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.run, lambda: None)
            await eventually(lambda: manager.state(shard) == "held")
            await store.put("orders", arn, shard, Checkpoint(last))
            refused = await poller(capsys, "checkpoints", "set", *argv, "--sequence", first)
            held = await poller(capsys, "checkpoints", "list", *argv)
            tg.cancel_scope.cancel()
        await manager.aclose()
    assert refused.code == 1, refused.err
    assert f"shard {shard}: leased by replica-a until " in refused.err
    header, row = held.out.splitlines()
    assert header.split()[:6] == ["MAPPING", "SHARD", "SEQUENCE", "FINISHED", "OWNER", "LEASE"]
    assert row.split()[:5] == ["orders", shard, last, "no", "replica-a"]
    moved = await poller(capsys, "checkpoints", "set", *argv, "--sequence", first)
    assert moved.code == 0, moved.err
    assert f"orders {shard}: after {last} -> at {first} (the next record delivered)" in moved.out
    released = await poller(capsys, "checkpoints", "list", *argv)
    row = ["orders", shard, f"at:{first}", "no", "-", "-", "-"]
    assert released.out.splitlines()[1].split() == row
    # The next owner starts AT the record named (a start in the item, not a record handled).
    async with store_for(dynamodb_front, "replica-b", duration=30) as store:
        assert await store.get("orders", arn, shard) == Checkpoint(first, at_sequence=True)


async def test_replay_leaves_every_lease_item_as_it_was(
    moto: str, dynamodb_front: str, dynamodb: Any, kinesis: Any, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(4)])
    async with FakeLambda() as fake:
        text = fleet_yaml(moto, dynamodb_front, fake, arn, lease_duration=30)
        config = tmp_path / "poller.yaml"
        config.write_text(text)
        async with running(settings_from(text)) as app:
            status = app.mappings[0].status
            shard, last = placed[-1]
            await eventually(
                lambda: shard in status.shards and status.shards[shard].checkpoint == last,
                timeout=20,
            )
        before = await table_items(dynamodb)
        fake.invocations.clear()
        argv = ["replay", "-c", str(config), "--mapping", "orders"]
        ran = await poller(capsys, *argv, "--from", str(time.time() - 600))
        after = await table_items(dynamodb)
    assert ran.code == 0, ran.err
    assert sorted(numbers(event_records(fake))) == [0, 1, 2, 3]
    assert after == before and any(i["sk"]["S"] == f"shard|{shard}" for i in before)
