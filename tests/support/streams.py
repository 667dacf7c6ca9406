"""Test-side Kinesis and DynamoDB Streams helpers over real aiobotocore clients against moto."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.config import config_yaml
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.queues import ACCOUNT, REGION


async def make_stream(kinesis: Any, name: str, shards: int = 1) -> str:
    """A Kinesis stream with `shards` shards; returns its ARN."""
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    summary = await kinesis.describe_stream_summary(StreamName=name)
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


async def put_records(
    kinesis: Any, arn: str, records: Sequence[tuple[str, Any]]
) -> list[tuple[str, str]]:
    """PutRecords of (partition key, JSON-able data) pairs, in order, 500 per call.

    Returns (shard id, sequence number) per record, in the same order.
    """
    placed: list[tuple[str, str]] = []
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        answer = await kinesis.put_records(
            StreamARN=arn,
            Records=[
                {"PartitionKey": key, "Data": json.dumps(data).encode()} for key, data in chunk
            ],
        )
        assert not answer.get("FailedRecordCount"), answer
        placed.extend((r["ShardId"], r["SequenceNumber"]) for r in answer["Records"])
    return placed


async def list_shards(kinesis: Any, arn: str) -> list[dict[str, Any]]:
    return list((await kinesis.list_shards(StreamARN=arn))["Shards"])


def backdate_kinesis_records(stream_name: str, seconds: float) -> None:
    """Make every record of a stream look `seconds` older (moto runs in this process).

    maximum_record_age_in_seconds is at least 60, and a test should not wait a minute for
    its records to age: their arrival times are moved back in moto's backend instead.
    """
    from datetime import timedelta

    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[ACCOUNT][REGION].streams[stream_name]
    for shard in stream.shards.values():
        for record in shard.records.values():
            record.created_at_datetime -= timedelta(seconds=seconds)
            record.created_at -= seconds


def spread_kinesis_arrivals(stream_name: str, step: float) -> None:
    """Space a stream's records `step` seconds apart, the newest left as it is (moto runs in
    this process): records put in one go arrive within milliseconds of each other, so how far
    a read is behind the newest record would be too small to tell from zero."""
    from datetime import timedelta

    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[ACCOUNT][REGION].streams[stream_name]
    for shard in stream.shards.values():
        records = list(shard.records.values())
        for newer, record in enumerate(reversed(records)):
            record.created_at_datetime -= timedelta(seconds=newer * step)
            record.created_at -= newer * step


def backdate_dynamodb_records(table_name: str, seconds: float) -> None:
    """Make every stream record of a table look `seconds` older (moto runs in this process):
    its ApproximateCreationDateTime moves back, as `backdate_kinesis_records` does for Kinesis."""
    from datetime import timedelta

    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[ACCOUNT][REGION].tables[table_name]
    for item in table.stream_shard.items:
        item.record["dynamodb"]["ApproximateCreationDateTime"] -= timedelta(seconds=seconds)


def kinesis_data(record: dict[str, Any]) -> Any:
    """The JSON a Kinesis event record carries in `data`."""
    return json.loads(base64.b64decode(record["kinesis"]["data"]))


def numbers(records: Sequence[dict[str, Any]]) -> list[int]:
    """The `n` each Kinesis record's JSON data carries, in order."""
    return [kinesis_data(record)["n"] for record in records]


async def make_table(dynamodb: Any, name: str, view_type: str, *, key: str = "pk") -> str:
    """A table keyed by `key` (S) with a stream of `view_type`; returns the stream ARN."""
    answer = await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )
    return str(answer["TableDescription"]["LatestStreamArn"])


def stream_yaml(
    moto: str,
    fake: FakeLambda,
    state: Path,
    mappings: Sequence[dict[str, Any]],
    *,
    shutdown_timeout: float = 10,
) -> str:
    """A config with stream mappings checkpointed in SQLite at `state`: each a dict of mapping
    keys, `function` naming the fake's function (the target, "stream-fn" unless given),
    `source` the stream ARN."""
    return config_yaml(
        moto,
        [{"function": "stream-fn", **mapping} for mapping in mappings],
        lambda_url=fake.endpoint_url,
        checkpoints={"path": str(state)},
        shutdown_timeout=shutdown_timeout,
        tuning={"shard_discovery_interval_seconds": 1},
    )


async def reshard(
    kinesis: Any, arn: str, put: Callable[[int], Awaitable[list[str]]]
) -> dict[str, list[str]]:
    """Split the stream's one shard, then merge the two children, calling `put(start)` to put
    12 records (n from `start`, keys k0..k3) before, between and after; returns the shard ids
    each phase's records went to."""
    phases: dict[str, list[str]] = {}
    phases["parent"] = await put(0)
    parent = (await list_shards(kinesis, arn))[0]["ShardId"]
    await kinesis.split_shard(StreamARN=arn, ShardToSplit=parent, NewStartingHashKey=str(2**127))
    phases["split"] = await put(12)
    children = [s["ShardId"] for s in await list_shards(kinesis, arn) if s.get("ParentShardId")]
    await kinesis.merge_shards(
        StreamARN=arn, ShardToMerge=children[0], AdjacentShardToMerge=children[1]
    )
    phases["merged"] = await put(24)
    return phases


def assert_parents_before_children(fake: FakeLambda, shards: list[dict[str, Any]]) -> None:
    """Every parent shard's records were delivered before any of its children's, and each
    key's records in order."""
    order = [r["eventID"].split(":")[0] for r in event_records(fake)]
    first = {shard: order.index(shard) for shard in set(order)}
    last = {shard: len(order) - 1 - order[::-1].index(shard) for shard in set(order)}
    for shard in shards:
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent and parent in last and shard["ShardId"] in first:
                assert last[parent] < first[shard["ShardId"]], (parent, shard["ShardId"])
    per_key: dict[int, list[int]] = defaultdict(list)
    for record in event_records(fake):
        data = kinesis_data(record)
        per_key[data["key"]].append(data["n"])
    assert all(ns == sorted(ns) for ns in per_key.values())


def dynamodb_gaps(monkeypatch: Any, *, empty: int, page: int) -> list[int]:
    """moto's DynamoDB Streams answers every record from an iterator's position at once. AWS's
    GetRecords may first answer empty pages, several calls before the part of the shard that
    holds records; patch moto's shard iterators to do so: `empty` empty pages (the next
    iterator at the same position) before each page of records, pages of at most `page`
    records. Returns the count of empty pages served, as a one-item list."""
    from moto.dynamodbstreams.models import ShardIterator

    original = ShardIterator.get
    served: defaultdict[int, int] = defaultdict(int)
    empties = [0]

    def get(self: Any, limit: int = 1000) -> dict[str, Any]:
        position = self.sequence_number
        if served[position] < empty and self.stream_shard.get(position, 1):
            served[position] += 1
            empties[0] += 1
            again = ShardIterator(
                self.streams_backend, self.stream_shard, "AT_SEQUENCE_NUMBER", position
            )
            self.streams_backend.shard_iterators[again.arn] = again
            return {"NextShardIterator": again.arn, "Records": []}
        return original(self, min(limit, page))

    monkeypatch.setattr(ShardIterator, "get", get)
    return empties
