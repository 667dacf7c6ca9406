"""Kinesis and DynamoDB Streams events as a function receives them from the running daemon
(moto behind it), held against the events AWS recorded (fixtures/kinesis.json,
fixtures/dynamodb_*.json; SOURCES.md names each sample)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from poller.events.streams import dynamodb_record
from tests.conformance import handlers
from tests.conformance.facts import Facts, facts
from tests.support.config import config_yaml
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.streams import make_stream, make_table, put_records
from tests.support.wait import eventually

ROLE = "arn:aws:iam::123456789012:role/clicks-consumer"

# Values moto makes differently from AWS, which poller passes on as the API gave them: their
# formats are not checked (their presence and JSON types still are).
MOTO_KINESIS = {
    "kinesis.sequenceNumber": "moto's sequence numbers are small integers, AWS's 56 digits",
    "eventID": "`shardId:sequenceNumber`, with moto's short sequence number",
}
MOTO_DYNAMODB = {
    "dynamodb.SequenceNumber": "moto's sequence numbers are short, AWS's 21 digits or more",
    "eventID": "moto's eventID is not AWS's 32 hex digits",
    "eventSourceARN": "moto's stream label carries microseconds, AWS's milliseconds",
}


def _stream_config(moto: str, fake: FakeLambda, state: Path, mappings: list[Any]) -> str:
    return config_yaml(
        moto,
        [{"starting_position": "TRIM_HORIZON", **m} for m in mappings],
        lambda_url=fake.endpoint_url,
        checkpoints={"path": str(state)},
        # What a deployment sets when poller's own credentials are not the consumer's role
        # (moto's credentials resolve to a user).
        aws={"invoke_identity_arn": ROLE},
    )


async def test_kinesis_records_have_the_recorded_shape(
    moto: str, kinesis: Any, state: Path
) -> None:
    arn = await make_stream(kinesis, "clicks")
    await put_records(kinesis, arn, [("user-7", {"click": "buy"}), ("user-8", {"click": "see"})])
    async with FakeLambda() as fake:
        text = _stream_config(moto, fake, state, [{"source": arn, "function": "clicks"}])
        async with running(settings_from(text)):
            await eventually(lambda: len(event_records(fake)) == 2)
    for record in event_records(fake):
        assert facts("kinesis").differences(record, moto_gets_wrong=MOTO_KINESIS) == []


VIEWS = {
    "NEW_AND_OLD_IMAGES": "dynamodb_new_and_old_images",
    "NEW_IMAGE": "dynamodb_new_image",
    "OLD_IMAGE": "dynamodb_old_image",
    "KEYS_ONLY": "dynamodb_keys_only",
}


def _for_event(recorded: Facts, event_name: str) -> Facts:
    """The facts of one event name: the fixture's example, or its variant of that name."""
    return recorded if recorded.example["eventName"] == event_name else recorded.variant(event_name)


async def test_dynamodb_records_of_every_view_and_event_have_the_recorded_shapes(
    moto: str, dynamodb: Any, state: Path
) -> None:
    mappings = []
    for view in VIEWS:
        name = view.lower().replace("_", "-")
        arn = await make_table(dynamodb, name, view, key="order_id")
        mappings.append({"name": name, "source": arn, "function": name})
        await dynamodb.put_item(
            TableName=name, Item={"order_id": {"S": "o-17"}, "state": {"S": "new"}}
        )
        await dynamodb.put_item(
            TableName=name, Item={"order_id": {"S": "o-17"}, "state": {"S": "paid"}}
        )
        await dynamodb.delete_item(TableName=name, Key={"order_id": {"S": "o-17"}})
    async with FakeLambda() as fake:
        async with running(settings_from(_stream_config(moto, fake, state, mappings))):
            for mapping in mappings:
                name = mapping["function"]
                await eventually(lambda n=name: len(event_records(fake, n)) == 3)
    for view, fixture in VIEWS.items():
        records = event_records(fake, view.lower().replace("_", "-"))
        assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
        for record in records:
            recorded = _for_event(facts(fixture), record["eventName"])
            problems = recorded.differences(record, moto_gets_wrong=MOTO_DYNAMODB)
            assert problems == [], (view, record["eventName"])


async def test_every_attribute_type_keeps_its_recorded_encoding(
    moto: str, dynamodb: Any, state: Path
) -> None:
    recorded = facts("dynamodb_attribute_values")
    arn = await make_table(dynamodb, "typed", "NEW_IMAGE", key="order_id")
    # One attribute per type, named after its type, holding the recorded value.
    item = {"order_id": {"S": "o-1"}}
    for label, value in recorded.example.items():
        [(kind, inner)] = value.items()
        if kind == "B":
            inner = b"foobar"
        elif kind == "BS":
            inner = [b"\x00\x01*A", b"A*\x01\x00"]
        item[label] = {kind: inner}
    await dynamodb.put_item(TableName="typed", Item=item)
    async with FakeLambda() as fake:
        mappings = [{"source": arn, "function": "typed"}]
        async with running(settings_from(_stream_config(moto, fake, state, mappings))):
            await eventually(lambda: event_records(fake))
    [record] = event_records(fake)
    image = record["dynamodb"]["NewImage"]
    # Values and JSON types alike: numbers and number sets as strings, blobs in base64.
    assert {label: image[label] for label in recorded.example} == recorded.example
    assert recorded.differences({label: image[label] for label in recorded.example}) == []


def test_a_ttl_deletion_carries_the_service_identity() -> None:
    # moto cannot expire items by TTL: the record the Streams API returns for one (its
    # userIdentity as the API spells it) goes through the same builder the reader uses.
    recorded = facts("dynamodb_ttl_user_identity")
    example = recorded.example
    raw = {
        "eventID": example["eventID"],
        "eventName": "REMOVE",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": example["dynamodb"]["ApproximateCreationDateTime"],
            "Keys": example["dynamodb"]["Keys"],
            "OldImage": example["dynamodb"]["OldImage"],
            "SequenceNumber": example["dynamodb"]["SequenceNumber"],
            "SizeBytes": example["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
    }
    record = dynamodb_record(raw, stream_arn=example["eventSourceARN"], region="eu-west-1")
    assert recorded.differences(record) == []
    assert record["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


async def test_a_python_handler_on_a_stream_gets_a_trace_id(
    moto: str, kinesis: Any, state: Path
) -> None:
    # Lambda sets _X_AMZN_TRACE_ID for every invocation, stream batches included.
    arn = await make_stream(kinesis, "traced")
    await put_records(kinesis, arn, [("user-7", {"n": 1}), ("user-8", {"n": 2})])
    handlers.seen.clear()
    mapping = {
        "source": arn,
        "starting_position": "TRIM_HORIZON",
        "batch_size": 1,
        "target": {"type": "python", "handler": "tests.conformance.handlers:remember"},
    }
    text = config_yaml(moto, [mapping], checkpoints={"path": str(state)})
    async with running(settings_from(text)):
        await eventually(lambda: len(handlers.seen) == 2)
    traces = [seen["trace"] for seen in handlers.seen]
    for trace in traces:
        assert trace is not None
        assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", trace)
    assert len(set(traces)) == 2  # one per invocation
