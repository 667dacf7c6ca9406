"""Invocation records as on-failure destinations receive them from the running daemon (moto
behind it), held against what AWS recorded (fixtures/invocation_record_*.json and
fixtures/destination_*.json; SOURCES.md names each sample): after the function raised, after
partial responses failed the batch, and for records too old, before or while being retried;
through SQS, SNS and S3."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conformance.facts import facts
from tests.support.config import config_yaml
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, invocations
from tests.support.queues import aws_client, make_queue, receive_all
from tests.support.streams import backdate_kinesis_records, make_stream, make_table, put_records
from tests.support.wait import eventually

# Values moto makes differently from AWS, which poller passes on as the API gave them: their
# formats are not checked (presence and JSON types still are).
MOTO = {
    "KinesisBatchInfo.startSequenceNumber": "moto's Kinesis sequence numbers are small integers",
    "KinesisBatchInfo.endSequenceNumber": "moto's Kinesis sequence numbers are small integers",
    "DDBStreamBatchInfo.shardId": "moto names every DynamoDB stream's one shard alike",
    "DDBStreamBatchInfo.streamArn": "moto's stream label carries microseconds",
}


RAISING = {"k-error", "d-error", "k-aging", "k-sns", "k-s3", "d-s3"}


def behaviour(event: Any, info: Invocation) -> Any:
    """Each mapping's function, by its name: raise, answer a partial response that fails the
    batch (an empty itemIdentifier), or succeed."""
    name = info.function_name.split(":")[-1]
    if name in RAISING:
        return Reply.error("boom", "ZeroDivisionError")
    if name.endswith("-partial"):
        return {"batchItemFailures": [{"itemIdentifier": ""}]}
    return None


async def _table(dynamodb: Any, name: str) -> str:
    stream_arn = await make_table(dynamodb, name, "NEW_IMAGE", key="order_id")
    await dynamodb.put_item(TableName=name, Item={"order_id": {"S": "o-17"}})
    return stream_arn


async def test_invocation_records_have_the_recorded_shapes(
    moto: str, kinesis: Any, dynamodb: Any, sqs: Any, state: Path
) -> None:
    streams = {}
    for name in ("k-error", "k-partial", "k-old", "k-discard", "k-aging", "k-sns", "k-s3"):
        streams[name] = await make_stream(kinesis, name)
    for name in ("k-error", "k-partial", "k-sns", "k-s3"):
        await put_records(kinesis, streams[name], [("user-7", {"click": "buy"})])
    # Too old before the first invocation: 2 minutes old, against a maximum age of 60 s.
    await put_records(kinesis, streams["k-old"], [("user-7", {"click": "buy"})])
    backdate_kinesis_records("k-old", 120)
    # One too old record, then five fresh ones.
    await put_records(kinesis, streams["k-discard"], [("user-7", {"n": 0})])
    backdate_kinesis_records("k-discard", 120)
    await put_records(kinesis, streams["k-discard"], [("user-7", {"n": n}) for n in range(1, 6)])
    # 50 s old: invoked while young enough, it expires while the function keeps failing.
    await put_records(kinesis, streams["k-aging"], [("user-7", {"click": "buy"})])
    backdate_kinesis_records("k-aging", 50)
    for name in ("d-error", "d-partial", "d-s3"):
        streams[name] = await _table(dynamodb, name)

    queues = {name: await make_queue(sqs, f"{name}-failed") for name in streams}
    async with aws_client("sns", moto) as sns, aws_client("s3", moto) as s3:
        topic = (await sns.create_topic(Name="k-sns-failed"))["TopicArn"]
        # Not raw: the queue holds SNS's notification, with the record as its Message.
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queues["k-sns"].arn)
        for bucket in ("k-s3-failed", "d-s3-failed"):
            await s3.create_bucket(Bucket=bucket)
        destinations = {name: queue.arn for name, queue in queues.items()}
        destinations.update(
            {"k-sns": topic, "k-s3": "arn:aws:s3:::k-s3-failed", "d-s3": "arn:aws:s3:::d-s3-failed"}
        )
        ages = {"k-old": 0, "k-discard": 0, "k-aging": -1}
        mappings = [
            {
                "name": name,
                "source": streams[name],
                "function": name,
                "starting_position": "TRIM_HORIZON",
                "batch_size": 10 if name == "k-discard" else 1,
                "maximum_retry_attempts": ages.get(name, 1),
                "maximum_record_age_in_seconds": 60 if name in ages else -1,
                "function_response_types": ["ReportBatchItemFailures"],
                "destination_config": {"on_failure": {"destination": destinations[name]}},
            }
            for name in streams
        ]
        async with FakeLambda(behaviour) as fake:
            text = config_yaml(
                moto, mappings, lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
            )
            async with running(settings_from(text)):
                received = {}
                for name, queue in queues.items():
                    if name in ("k-s3", "d-s3"):
                        continue
                    received[name] = await eventually(
                        lambda u=queue.url: receive_all(sqs, u), timeout=30
                    )
                objects = {}
                for name in ("k-s3", "d-s3"):
                    bucket = f"{name}-failed"
                    listed = await eventually(
                        lambda b=bucket: _listed(s3, b),
                        timeout=30,  # type: ignore[misc]
                    )
                    [key] = [item["Key"] for item in listed]
                    body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
                    objects[name] = (key, json.loads(body))

    def record_of(name: str) -> dict[str, Any]:
        [message] = received[name]
        assert facts("destination_sqs").differences(message) == [] or name == "k-sns"
        return dict(json.loads(message["Body"]))

    # Retries ran out after the function raised: one retry, two invocations.
    for name, fixture in (
        ("k-error", "invocation_record_kinesis_function_error"),
        ("d-error", "invocation_record_dynamodb_function_error"),
    ):
        record = record_of(name)
        assert facts(fixture).differences(record, moto_gets_wrong=MOTO) == [], name
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert len(invocations(fake, name)) == 2
    # Retries ran out on partial responses that failed the batch: functionError is null.
    for name, fixture in (
        ("k-partial", "invocation_record_kinesis_partial_failure"),
        ("d-partial", "invocation_record_dynamodb_partial_failure"),
    ):
        record = record_of(name)
        assert facts(fixture).differences(record, moto_gets_wrong=MOTO) == [], name
        assert record["responseContext"]["functionError"] is None
        assert record["requestContext"]["approximateInvokeCount"] == len(invocations(fake, name))
    # Too old: no responseContext at all; one invocation counted although none was made.
    aged = facts("invocation_record_kinesis_record_age_exceeded")
    record = record_of("k-old")
    assert aged.differences(record, moto_gets_wrong=MOTO) == []
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert invocations(fake, "k-old") == []
    # One expired record then five fresh: the expired one alone goes, the function gets the rest.
    record = record_of("k-discard")
    assert aged.differences(record, moto_gets_wrong=MOTO) == []
    assert record["KinesisBatchInfo"]["batchSize"] == 1
    assert record["requestContext"]["approximateInvokeCount"] == 1
    [fresh] = invocations(fake, "k-discard")
    assert len(fresh.event["Records"]) == 5
    # Expired while retrying: the attempts made.
    record = record_of("k-aging")
    assert aged.differences(record, moto_gets_wrong=MOTO) == []
    assert record["requestContext"]["approximateInvokeCount"] == len(invocations(fake, "k-aging"))
    assert len(invocations(fake, "k-aging")) >= 2

    # SNS: the notification's Message is the record, published without subject or attributes.
    [notification] = received["k-sns"]
    envelope = json.loads(notification["Body"])
    assert "Subject" not in envelope and "MessageAttributes" not in envelope
    assert envelope["Type"] == "Notification"
    published = json.loads(envelope["Message"])
    fixture = facts("invocation_record_kinesis_function_error")
    assert fixture.differences(published, moto_gets_wrong=MOTO) == []
    assert "payload" not in published
    # S3: the record plus the whole event under `payload`, at Lambda's key.
    for name, fixture_name in (
        ("k-s3", "destination_s3_kinesis"),
        ("d-s3", "destination_s3_dynamodb"),
    ):
        key, stored = objects[name]
        recorded = facts(fixture_name)
        assert re.fullmatch(recorded.raw["object_key"]["regex"], key), key
        problems = recorded.differences(stored, moto_gets_wrong=MOTO)
        assert [p for p in problems if ".payload.Records" not in p] == [], name
        assert len(stored["payload"]["Records"]) == 1


async def _listed(s3: Any, bucket: str) -> list[dict[str, Any]]:
    answer = await s3.list_objects_v2(Bucket=bucket)
    return list(answer.get("Contents", []))
