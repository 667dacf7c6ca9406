"""Test-side Kinesis and DynamoDB Streams helpers over real aiobotocore clients against moto."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.fake_lambda import FakeLambda, Invocation
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


def kinesis_data(record: dict[str, Any]) -> Any:
    """The JSON a Kinesis event record carries in `data`."""
    return json.loads(base64.b64decode(record["kinesis"]["data"]))


def kinesis_records(fake: FakeLambda, function: str | None = None) -> list[dict[str, Any]]:
    """Every record the fake received, in invocation order (optionally for one function)."""
    return [r for inv in invocations(fake, function) for r in inv.event["Records"]]


def invocations(fake: FakeLambda, function: str | None = None) -> list[Invocation]:
    return [
        inv
        for inv in fake.invocations
        if function is None or inv.function_name.split(":")[-1] == function
    ]


async def make_table(dynamodb: Any, name: str, view_type: str) -> str:
    """A table keyed by `pk` (S) with a stream of `view_type`; returns the stream ARN."""
    answer = await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
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
    """A config with stream mappings: each a dict of mapping keys, `function` naming the
    fake's function (the target), `source` the stream ARN."""
    endpoints = f"endpoints: {{lambda: {fake.endpoint_url}}}"
    lines = [
        f"aws: {{region: {REGION}, endpoint_url: {moto}, {endpoints}}}",
        f"checkpoints: {{path: {json.dumps(str(state))}}}",
        "server: {host: 127.0.0.1, port: 0}",
        f"shutdown_timeout_seconds: {shutdown_timeout}",
        "tuning: {shard_discovery_interval_seconds: 1}",
        "mappings:",
    ]
    for mapping in mappings:
        keys = dict(mapping)
        function = keys.pop("function", "stream-fn")
        lines.append(f"  - name: {keys.pop('name', 'orders')}")
        lines.append(f"    target: {{type: lambda, function: {function}}}")
        for key, value in keys.items():
            lines.append(f"    {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"
