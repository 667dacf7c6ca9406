"""What the gauges and the batch-size histogram say, read from the running daemon's registry:
values that mean what the metrics reference says, not only series that exist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.config import config_yaml
from tests.support.daemon import events_total, metric, running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation
from tests.support.queues import Queue, make_queue, send
from tests.support.streams import make_stream, put_records, spread_kinesis_arrivals, stream_yaml
from tests.support.wait import eventually


def held_until(release: anyio.Event) -> Callable[[Any, Invocation], Any]:
    """A function that answers only once `release` is set: its batches stay in flight."""

    async def handler(event: Any, info: Invocation) -> Any:
        await release.wait()
        return None

    return handler


def queue_yaml(moto: str, fake: FakeLambda, queue: Queue, **keys: Any) -> str:
    """The SQS mapping `orders` of `queue` → the fake's `orders-fn`; `tuning` goes to the
    config's tuning section, other `keys` to the mapping."""
    tuning = keys.pop("tuning", None)
    mapping = {"source": queue.arn, "function": "orders-fn", **keys}
    return config_yaml(moto, [mapping], lambda_url=fake.endpoint_url, tuning=tuning)


_BACKLOG = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


async def queue_depth(sqs: Any, url: str) -> dict[str, float]:
    """The queue's own figures, by the `state` label they are exported under."""
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_BACKLOG.values()))
    return {state: float(answer["Attributes"][name]) for state, name in _BACKLOG.items()}


def backlog(app: Any) -> dict[str, float]:
    return {
        state: metric(app, "poller_source_backlog_messages", mapping="orders", state=state)
        for state in _BACKLOG
    }


async def test_backlog_follows_the_queues_depth_within_its_refresh_period(
    moto: str, sqs: Any
) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, [f"m{i}" for i in range(12)])
    await send(sqs, queue.url, ["later-1", "later-2"], DelaySeconds=900)
    release = anyio.Event()
    async with FakeLambda(held_until(release)) as fake:
        config = queue_yaml(
            moto,
            fake,
            queue,
            batch_size=1,
            scaling_config={"maximum_concurrency": 2},
            tuning={"backlog_refresh_interval_seconds": 0.2},
        )
        async with running(settings_from(config)) as app:

            async def as_the_queue_says() -> dict[str, float] | None:
                now = await queue_depth(sqs, queue.url)
                return now if backlog(app) == now else None

            # Two one-message batches held, the cap reached: the rest waits in the queue.
            await fake.wait_for(2)
            held = await eventually(as_the_queue_says, timeout=5)
            assert held["visible"] >= 10 and held["in_flight"] >= 1 and held["delayed"] == 2
            await send(sqs, queue.url, [f"n{i}" for i in range(5)])
            more = await eventually(as_the_queue_says, timeout=5)  # refreshed, not read once
            assert more["visible"] == held["visible"] + 5
            release.set()
            await eventually(lambda: events_total(app, "deleted") >= 17, timeout=20)
            assert await eventually(as_the_queue_says, timeout=5) == {
                "visible": 0,
                "in_flight": 0,
                "delayed": 2,
            }


async def test_concurrent_executions_counts_the_invocations_in_flight(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, [f"m{i}" for i in range(3)])
    release = anyio.Event()
    async with FakeLambda(held_until(release)) as fake:
        config = queue_yaml(
            moto, fake, queue, batch_size=1, scaling_config={"maximum_concurrency": 3}
        )
        async with running(settings_from(config)) as app:

            def concurrent() -> float:
                return metric(app, "poller_concurrent_executions", mapping="orders")

            await fake.wait_for(3)
            await eventually(lambda: concurrent() == 3, timeout=5)
            release.set()
            await eventually(lambda: events_total(app, "deleted") == 3, timeout=10)
            assert concurrent() == 0


async def test_batch_size_histogram_counts_each_invocations_records(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, [f"m{i}" for i in range(25)])
    async with FakeLambda() as fake:
        async with running(settings_from(queue_yaml(moto, fake, queue, batch_size=10))) as app:
            await eventually(lambda: events_total(app, "deleted") == 25, timeout=20)

            def histogram(suffix: str, **labels: str) -> float:
                return metric(app, f"poller_batch_size{suffix}", mapping="orders", **labels)

            sizes = [len(inv.event["Records"]) for inv in fake.invocations]
            assert sum(sizes) == 25
            assert histogram("_count") == len(sizes)
            assert histogram("_sum") == 25
            for bound in (1, 2, 5, 10, 25):
                below = sum(1 for size in sizes if size <= bound)
                assert histogram("_bucket", le=f"{bound:.1f}") == below, (bound, sizes)


async def test_behind_latest_is_how_far_the_last_read_was_from_the_newest_record(
    moto: str, kinesis: Any, state: Path
) -> None:
    arn = await make_stream(kinesis, "orders")
    await put_records(kinesis, arn, [("k", {"n": i}) for i in range(30)])
    # 10 s between records: a read ending k records before the newest is 10*k s behind.
    spread_kinesis_arrivals("orders", 10)
    shard = "shardId-000000000000"
    release = anyio.Event()
    async with FakeLambda(held_until(release)) as fake:
        mapping = {"source": arn, "starting_position": "TRIM_HORIZON", "batch_size": 1}
        async with running(settings_from(stream_yaml(moto, fake, state, [mapping]))) as app:

            def behind() -> float:
                return metric(app, "poller_behind_latest_seconds", mapping="orders", shard=shard)

            # The first batch is held, so the reader stops once it has read its fill ahead:
            # its last read ended short of the newest record, in whole steps of 10 s.
            await fake.wait_for(1)
            lag = await eventually(behind, timeout=5)
            steps = lag / 10
            assert 1 <= round(steps) <= 29, lag
            assert steps == pytest.approx(round(steps), abs=0.05), lag
            release.set()
            await eventually(lambda: events_total(app, "invoked") == 30, timeout=20)
            await eventually(lambda: behind() == 0, timeout=5)
