"""The two kinds of source a scenario drives: an SQS queue (with a DLQ) and a Kinesis stream
(with an SQS on-failure destination). Records are numbered; a record's id is its number."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from poller.sources.streams.shards import MAX_UNSETTLED_BATCHES
from tests.support.queues import depth, make_queue, send
from tests.support.streams import make_stream, put_records

# A message's visibility timeout in the SQS scenarios: a killed daemon's messages come back
# after it, so it sets how long a kill loop takes; the heartbeat keeps live ones hidden.
VISIBILITY_TIMEOUT = 5
# Receives before the DLQ: far more than a kill loop causes (each kill adds one at most), so a
# message there means poller itself gave it up.
MAX_RECEIVE_COUNT = 10


class SqsSource:
    kind = "sqs"

    def __init__(self, sqs: Any, batch_size: int = 10, concurrency: int = 5) -> None:
        self.sqs = sqs
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.url = self.arn = ""
        self.dlq_url: str | None = None

    async def create(self) -> None:
        queue = await make_queue(
            self.sqs,
            "chaos",
            visibility_timeout=VISIBILITY_TIMEOUT,
            max_receive_count=MAX_RECEIVE_COUNT,
        )
        self.url, self.arn, self.dlq_url = queue.url, queue.arn, queue.dlq_url

    def mapping(self, **extra: Any) -> dict[str, Any]:
        return {
            "source": self.arn,
            "function": "chaos-fn",
            "batch_size": self.batch_size,
            "scaling_config": {"maximum_concurrency": self.concurrency},
            **extra,
        }

    async def put(self, numbers: Sequence[int]) -> None:
        await send(self.sqs, self.url, [str(n) for n in numbers])

    async def settled(self) -> bool:
        """Nothing left in the queue, visible or in flight: every message was deleted."""
        return await depth(self.sqs, self.url) == (0, 0)

    async def on_failure(self) -> int:
        assert self.dlq_url is not None
        visible, in_flight = await depth(self.sqs, self.dlq_url)
        return visible + in_flight

    def in_flight_bound(self) -> tuple[int, str]:
        """What one crash (or one lost delete) may redeliver: every batch in flight."""
        bound = self.concurrency * self.batch_size
        return bound, f"maximum_concurrency {self.concurrency} x batch_size {self.batch_size}"


class KinesisSource:
    kind = "kinesis"

    def __init__(
        self, kinesis: Any, sqs: Any, shards: int = 2, batch_size: int = 10, keys: int = 16
    ) -> None:
        self.kinesis = kinesis
        self.sqs = sqs
        self.shards = shards
        self.batch_size = batch_size
        self.keys = keys
        self.arn = ""
        self.on_failure_url = self.on_failure_arn = ""
        self.placed: dict[int, tuple[str, str]] = {}  # n -> (shard, sequence number)

    async def create(self) -> None:
        self.arn = await make_stream(self.kinesis, "chaos", shards=self.shards)
        queue = await make_queue(self.sqs, "chaos-on-failure")
        self.on_failure_url, self.on_failure_arn = queue.url, queue.arn

    def mapping(self, **extra: Any) -> dict[str, Any]:
        return {
            "source": self.arn,
            "function": "chaos-fn",
            "starting_position": "TRIM_HORIZON",
            "batch_size": self.batch_size,
            "destination_config": {"on_failure": {"destination": self.on_failure_arn}},
            **extra,
        }

    def key(self, n: int) -> str:
        return f"k{n % self.keys}"

    async def put(self, numbers: Sequence[int]) -> None:
        records = [(self.key(n), {"n": n}) for n in numbers]
        placed = await put_records(self.kinesis, self.arn, records)
        self.placed.update(zip(numbers, placed, strict=True))

    async def settled(self) -> bool:
        return True

    async def on_failure(self) -> int:
        visible, in_flight = await depth(self.sqs, self.on_failure_url)
        return visible + in_flight

    async def on_failure_records(self) -> list[dict[str, Any]]:
        answer = await self.sqs.receive_message(
            QueueUrl=self.on_failure_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        return list(answer.get("Messages", []))

    def replay_bound(self, parallelization_factor: int) -> tuple[int, str]:
        """What one crash may replay: at parallelization_factor 1 the batch in flight per shard
        (README, Checkpoints); above, the unsettled cap per shard (README, Read-ahead)."""
        per_shard = 1 if parallelization_factor == 1 else MAX_UNSETTLED_BATCHES
        words = "1 batch in flight" if per_shard == 1 else f"{per_shard} unsettled batches"
        return (
            self.shards * per_shard * self.batch_size,
            f"{self.shards} shards x {words} x batch_size {self.batch_size}",
        )


def shuffled(count: int, seed: int) -> list[int]:
    """0..count-1 in an order fixed by the seed (SQS sends need no order)."""
    numbers = list(range(count))
    random.Random(seed).shuffle(numbers)
    return numbers
