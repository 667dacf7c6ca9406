"""The exact bytes a target receives, over every event shape, held against golden files.

The golden files (golden/*.json) were captured from the code before the record path was
optimized: fixed wire answers (golden_inputs.py) go through real aiobotocore clients, against a
canned HTTP server, then through poller's own building and serializing (SQS messages, Kinesis
and DynamoDB records, tumbling-window events, on-failure invocation records and the S3 body
with its payload). Any change of a byte, a key order, an escape or a number's text fails here.

`python -m tests.conformance.test_golden` rewrites the files: only ever for an intended change.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from poller.aws.clients import AwsClients
from poller.config.arns import parse_source_arn
from poller.config.settings import AwsSettings
from poller.engine.destinations import with_payload
from poller.engine.records import StreamRecord
from poller.engine.windows import OpenWindow, compact
from poller.events.envelope import dumps, event_payload
from poller.events.invocation import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    invocation_record,
)
from poller.filtering.filter_set import FilterSet
from poller.sources.sqs.messages import read_messages
from poller.sources.streams.conversion import convert
from poller.sources.streams.dynamodb import DynamoDBShards
from poller.sources.streams.kinesis import KinesisShards
from poller.targets.base import InvokeResult, Outcome
from tests.conformance import golden_inputs
from tests.support.ports import free_port

GOLDEN = Path(__file__).parent / "golden"

QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"
FIFO_QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders.fifo"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
TABLE_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-12-01T00:00:00.000"
IDENTITY = "arn:aws:iam::123456789012:role/poller"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:orders"
SHARD = "shardId-000000000000"
NOW = 1735732900.5


def _answer(request: web.Request, body: bytes) -> dict[str, Any]:
    target = request.headers.get("X-Amz-Target", "")
    if target.startswith("Kinesis_"):
        return golden_inputs.KINESIS_GET_RECORDS
    if target.startswith("DynamoDBStreams_"):
        return golden_inputs.DYNAMODB_GET_RECORDS
    if target == "AmazonSQS.ReceiveMessage":
        fifo = json.loads(body)["QueueUrl"].endswith(".fifo")
        return golden_inputs.SQS_FIFO if fifo else golden_inputs.SQS_STANDARD
    raise web.HTTPBadRequest(text=f"no canned answer for {target!r}")


@asynccontextmanager
async def canned_aws() -> AsyncIterator[str]:
    """An HTTP server giving the fixed answers of golden_inputs.py, by X-Amz-Target."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(
            body=json.dumps(_answer(request, body)).encode(),
            content_type="application/x-amz-json-1.0",
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _stream_records(api: KinesisShards | DynamoDBShards) -> list[StreamRecord]:
    read = await api.read("golden-iterator", 100)
    converted = await convert(
        api, read.records, shard_id=SHARD, filters=FilterSet(), after=None, skip_before=None
    )
    return [c.record for c in converted.records]


async def _sqs_events(clients: AwsClients, arn: str, *, window: bool) -> bytes:
    sqs = await clients.client("sqs")
    url = f"https://sqs.us-east-1.amazonaws.com/123456789012/{arn.rsplit(':', 1)[1]}"
    answer = await sqs.receive_message(
        QueueUrl=url, MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
    )
    kept, dropped = read_messages(
        answer["Messages"],
        queue_arn=arn,
        region="us-east-1",
        filters=FilterSet(),
        batching_window=window,
    )
    assert not dropped
    return event_payload(m.serialized for m in kept)


def _invocation_records(kind: Any, arn: str, records: list[StreamRecord]) -> dict[str, bytes]:
    failed = InvokeResult(Outcome.FUNCTION_ERROR, function_error="Unhandled", status_code=200)
    partial = InvokeResult(Outcome.SUCCESS, status_code=200, executed_version="3")
    never = InvokeResult(Outcome.THROTTLED, status_code=429)
    cases = {
        "error": (RETRY_ATTEMPTS_EXHAUSTED, failed, 3),
        "partial": (RETRY_ATTEMPTS_EXHAUSTED, partial, 2),
        "unreached": (RETRY_ATTEMPTS_EXHAUSTED, never, 1),
        "never-invoked": (RETRY_ATTEMPTS_EXHAUSTED, None, 0),
        "age": (RECORD_AGE_EXCEEDED, None, 0),
    }
    out: dict[str, bytes] = {}
    for name, (condition, last, count) in cases.items():
        record = invocation_record(
            kind=kind,
            condition=condition,
            function_arn=FUNCTION,
            shard_id=SHARD,
            stream_arn=arn,
            records=records,
            approximate_invoke_count=count,
            last_result=last,
            now=NOW,
            request_id="c4b0c5a3-0f4e-4bb8-9d3a-6c1f0e7e2b11",
        )
        out[f"{kind}-on-failure-{name}"] = dumps(record)
    return out


def _window_events(records: list[StreamRecord], arn: str) -> dict[str, bytes]:
    window = OpenWindow(1735732800, 60, shard_id=SHARD, source_arn=arn)
    first = window.event([r.serialized for r in records])
    window.state = compact({"seen": 1, "name": "ü", "total": 2.5})
    final = window.event([], final=True)
    early = window.event([r.serialized for r in records[:1]], early=True)
    return {"first": first, "final": final, "early": early}


async def produce() -> dict[str, bytes]:
    """Every golden case's bytes, from the fixed inputs, by today's code."""
    out: dict[str, bytes] = {}
    async with canned_aws() as endpoint, AwsClients(AwsSettings(endpoint_url=endpoint)) as clients:
        out["sqs-standard"] = await _sqs_events(clients, QUEUE, window=False)
        out["sqs-standard-batching-window"] = await _sqs_events(clients, QUEUE, window=True)
        out["sqs-fifo"] = await _sqs_events(clients, FIFO_QUEUE, window=False)

        kinesis = KinesisShards(
            await clients.client("kinesis"),
            parse_source_arn(STREAM),
            invoke_identity_arn=IDENTITY,
        )
        dynamodb = DynamoDBShards(
            await clients.client("dynamodbstreams"), parse_source_arn(TABLE_STREAM)
        )
        for kind, api, arn in (("kinesis", kinesis, STREAM), ("dynamodb", dynamodb, TABLE_STREAM)):
            records = await _stream_records(api)
            out[kind] = event_payload(r.serialized for r in records)
            for name, event in _window_events(records, arn).items():
                out[f"{kind}-window-{name}"] = event
            invocations = _invocation_records(kind, arn, records)
            out.update(invocations)
            # The S3 destination's body: the record with the event it was invoked with.
            out[f"{kind}-on-failure-s3"] = with_payload(
                json.loads(invocations[f"{kind}-on-failure-error"]), out[kind]
            )
    return out


CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))


@pytest.fixture(scope="module")
def produced() -> dict[str, bytes]:
    return asyncio.run(produce())


def test_every_case_has_a_golden_file(produced: dict[str, bytes]) -> None:
    assert sorted(produced) == CASES


@pytest.mark.parametrize("case", CASES)
def test_serialized_events_are_byte_identical(produced: dict[str, bytes], case: str) -> None:
    assert produced[case] == (GOLDEN / f"{case}.json").read_bytes()


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for old in GOLDEN.glob("*.json"):
        old.unlink()
    for case, data in asyncio.run(produce()).items():
        (GOLDEN / f"{case}.json").write_bytes(data)
    sys.stdout.write(f"{len(list(GOLDEN.glob('*.json')))} golden files in {GOLDEN}\n")
