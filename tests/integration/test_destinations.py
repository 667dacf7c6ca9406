"""On-failure destinations against moto's server: SQS, SNS (read back through SQS) and S3."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from poller.aws.clients import AwsClients
from poller.config.settings import AwsSettings, MappingSettings
from poller.engine.destinations import DeliveryError, build_destination, destination_for
from poller.engine.records import StreamRecord
from poller.events.envelope import event_payload
from poller.events.invocation import RETRY_ATTEMPTS_EXHAUSTED, invocation_record
from poller.events.streams import kinesis_record, stream_record
from poller.targets.base import InvokeResult, Outcome
from tests.support.queues import ACCOUNT, REGION, aws_client, make_queue, receive_all

STREAM = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/orders"
FUNCTION = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
SHARD = "shardId-000000000001"
ESM_UUID = "9f1c3a52-8d0e-5b7a-a1c2-0d3e4f5a6b7c"
FAILED = InvokeResult(
    Outcome.FUNCTION_ERROR, function_error="Unhandled", status_code=200, executed_version="$LATEST"
)


@pytest.fixture
async def clients(moto: str) -> AsyncIterator[AwsClients]:
    async with AwsClients(AwsSettings(region=REGION, endpoint_url=moto)) as made:
        yield made


def given_up(count: int = 3) -> tuple[list[StreamRecord], dict[str, Any], bytes]:
    """Records, their invocation record and their event payload."""
    records = []
    for sequence in range(1, count + 1):
        raw = {
            "SequenceNumber": str(sequence),
            "ApproximateArrivalTimestamp": datetime(2025, 1, 1, 12, 0, sequence, tzinfo=UTC),
            "Data": json.dumps({"n": sequence}).encode(),
            "PartitionKey": "k",
        }
        event = kinesis_record(
            raw, shard_id=SHARD, stream_arn=STREAM, region=REGION, invoke_identity_arn="x"
        )
        records.append(stream_record(event, kind="kinesis"))
    record = invocation_record(
        kind="kinesis",
        condition=RETRY_ATTEMPTS_EXHAUSTED,
        function_arn=FUNCTION,
        shard_id=SHARD,
        stream_arn=STREAM,
        records=records,
        approximate_invoke_count=3,
        last_result=FAILED,
        now=datetime(2025, 1, 1, 12, 0, 5, 120000, tzinfo=UTC).timestamp(),
    )
    return records, record, event_payload(r.serialized for r in records)


async def test_sqs_gets_the_invocation_record_only(sqs: Any, clients: AwsClients) -> None:
    _, record, payload = given_up()
    queue = await make_queue(sqs, "orders-failed")
    destination = build_destination(queue.arn, clients)
    await destination.deliver(record, payload)
    await destination.deliver(record, payload)  # the queue URL is resolved once, then kept
    messages = await receive_all(sqs, queue.url)
    assert [json.loads(m["Body"]) for m in messages] == [record, record]
    body = json.loads(messages[0]["Body"])
    assert "payload" not in body
    assert body["KinesisBatchInfo"]["batchSize"] == 3
    assert body["timestamp"] == "2025-01-01T12:00:05.120Z"


async def test_sns_publishes_the_invocation_record(
    moto: str, sqs: Any, clients: AwsClients
) -> None:
    _, record, payload = given_up()
    async with aws_client("sns", moto) as sns:
        topic = (await sns.create_topic(Name="orders-failed"))["TopicArn"]
        queue = await make_queue(sqs, "topic-reader")
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue.arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        await build_destination(topic, clients).deliver(record, payload)
        messages = await receive_all(sqs, queue.url)
    assert [json.loads(m["Body"]) for m in messages] == [record]


async def test_s3_gets_the_record_and_the_payload_under_lambdas_key(
    moto: str, clients: AwsClients
) -> None:
    records, record, payload = given_up()
    async with aws_client("s3", moto) as s3:
        await s3.create_bucket(Bucket="orders-failed")
        destination = build_destination("arn:aws:s3:::orders-failed", clients, esm_uuid=ESM_UUID)
        await destination.deliver(record, payload)
        listed = await s3.list_objects_v2(Bucket="orders-failed")
        [key] = [item["Key"] for item in listed["Contents"]]
        body = await (await s3.get_object(Bucket="orders-failed", Key=key))["Body"].read()
    assert re.fullmatch(
        rf"aws/lambda/{ESM_UUID}/{SHARD}/2025/01/01/2025-01-01T12\.00\.05-"
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}",
        key,
    ), key
    stored = json.loads(body)
    assert stored["payload"] == {"Records": [json.loads(r.serialized) for r in records]}
    assert {k: v for k, v in stored.items() if k != "payload"} == record


async def test_destination_for_names_s3_keys_after_the_mapping(
    moto: str, clients: AwsClients
) -> None:
    mapping = MappingSettings.model_validate(
        {
            "name": "orders",
            "source": STREAM,
            "target": {"type": "python", "handler": "m:f"},
            "starting_position": "LATEST",
            "destination_config": {"on_failure": {"destination": "arn:aws:s3:::orders-failed"}},
        }
    )
    _, record, payload = given_up(1)
    destination = destination_for(mapping, clients)
    assert destination is not None
    async with aws_client("s3", moto) as s3:
        await s3.create_bucket(Bucket="orders-failed")
        await destination.deliver(record, payload)
        listed = await s3.list_objects_v2(Bucket="orders-failed")
    assert listed["Contents"][0]["Key"].startswith(f"aws/lambda/{mapping.uuid}/{SHARD}/")


@pytest.mark.parametrize(
    "arn",
    [
        f"arn:aws:sqs:{REGION}:{ACCOUNT}:no-such-queue",
        f"arn:aws:sns:{REGION}:{ACCOUNT}:no-such-topic",
        "arn:aws:s3:::no-such-bucket",
    ],
)
async def test_a_missing_destination_raises_a_clear_delivery_error(
    arn: str, clients: AwsClients
) -> None:
    _, record, payload = given_up(1)
    with pytest.raises(DeliveryError) as raised:
        await build_destination(arn, clients, esm_uuid=ESM_UUID).deliver(record, payload)
    message = str(raised.value)
    assert arn in message
    assert "does not exist" in message
