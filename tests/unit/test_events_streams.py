"""Kinesis and DynamoDB event records built from botocore-shaped GetRecords records."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from poller.events.envelope import dumps
from poller.events.streams import dynamodb_record, kinesis_record, stream_record

KINESIS_ARN = "arn:aws:kinesis:eu-west-1:111122223333:stream/orders"
DDB_ARN = "arn:aws:dynamodb:eu-west-1:111122223333:table/orders/stream/2025-01-01T00:00:00.000"
ROLE = "arn:aws:iam::111122223333:role/consumer-role"
SHARD = "shardId-000000000003"
SEQUENCE = "49650000000000000000000000000000000000000000000000000123"


def kinesis_raw() -> dict[str, Any]:
    # As aiobotocore hands it over: bytes data, a timezone-aware datetime.
    return {
        "SequenceNumber": SEQUENCE,
        "ApproximateArrivalTimestamp": datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "Data": b'{"orderId": 42}',
        "PartitionKey": "customer-7",
    }


def test_kinesis_record_has_lambdas_exact_shape() -> None:
    record = kinesis_record(
        kinesis_raw(),
        shard_id=SHARD,
        stream_arn=KINESIS_ARN,
        region="eu-west-1",
        invoke_identity_arn=ROLE,
    )
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "customer-7",
            "sequenceNumber": SEQUENCE,
            "data": "eyJvcmRlcklkIjogNDJ9",
            "approximateArrivalTimestamp": 1735732800.123,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{SEQUENCE}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": ROLE,
        "awsRegion": "eu-west-1",
        "eventSourceARN": KINESIS_ARN,
    }
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)


def test_kinesis_data_is_base64_of_the_raw_bytes() -> None:
    raw = {**kinesis_raw(), "Data": bytes(range(256))}
    record = kinesis_record(
        raw, shard_id=SHARD, stream_arn=KINESIS_ARN, region="eu-west-1", invoke_identity_arn=ROLE
    )
    assert base64.b64decode(record["kinesis"]["data"]) == bytes(range(256))


def test_kinesis_arrival_from_any_timezone_is_epoch_seconds() -> None:
    local = datetime(2025, 1, 1, 14, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2)))
    raw = {**kinesis_raw(), "ApproximateArrivalTimestamp": local}
    record = kinesis_record(
        raw, shard_id=SHARD, stream_arn=KINESIS_ARN, region="eu-west-1", invoke_identity_arn=ROLE
    )
    assert record["kinesis"]["approximateArrivalTimestamp"] == 1735732800.5


def test_kinesis_stream_record() -> None:
    record = kinesis_record(
        kinesis_raw(),
        shard_id=SHARD,
        stream_arn=KINESIS_ARN,
        region="eu-west-1",
        invoke_identity_arn=ROLE,
    )
    wrapped = stream_record(record, kind="kinesis")
    assert wrapped.sequence_number == SEQUENCE
    assert wrapped.sequence == int(SEQUENCE)
    assert wrapped.key == "customer-7"
    assert wrapped.arrival == 1735732800.123
    assert json.loads(wrapped.serialized) == record
    assert wrapped.serialized == dumps(record)  # compact, serialized once


def dynamodb_raw() -> dict[str, Any]:
    # As aiobotocore hands it over from moto: eventVersion "1.0", no eventSourceARN,
    # a datetime creation time, binary attributes as bytes.
    return {
        "eventID": "7de3041dd709b024af6f29e4fa13d34c",
        "eventName": "MODIFY",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2025, 1, 1, 12, 0, 0, 874000, tzinfo=UTC),
            "Keys": {"sk": {"N": "1"}, "pk": {"S": "order#42"}},
            "OldImage": {"pk": {"S": "order#42"}, "status": {"S": "NEW"}},
            "NewImage": {
                "pk": {"S": "order#42"},
                "status": {"S": "PAID"},
                "blob": {"B": b"\x00\x01"},
                "nested": {"M": {"tags": {"BS": [b"a", b"b"]}, "list": {"L": [{"N": "1"}]}}},
                "flags": {"BOOL": True},
                "nothing": {"NULL": True},
                "names": {"SS": ["x", "y"]},
            },
            "SequenceNumber": "300000000012345678901",
            "SizeBytes": 71,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def test_dynamodb_record_has_lambdas_exact_shape() -> None:
    record = dynamodb_record(dynamodb_raw(), stream_arn=DDB_ARN, region="eu-west-1")
    assert record == {
        "eventID": "7de3041dd709b024af6f29e4fa13d34c",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1735732800,
            "Keys": {"sk": {"N": "1"}, "pk": {"S": "order#42"}},
            "OldImage": {"pk": {"S": "order#42"}, "status": {"S": "NEW"}},
            "NewImage": {
                "pk": {"S": "order#42"},
                "status": {"S": "PAID"},
                "blob": {"B": "AAE="},
                "nested": {"M": {"tags": {"BS": ["YQ==", "Yg=="]}, "list": {"L": [{"N": "1"}]}}},
                "flags": {"BOOL": True},
                "nothing": {"NULL": True},
                "names": {"SS": ["x", "y"]},
            },
            "SequenceNumber": "300000000012345678901",
            "SizeBytes": 71,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": DDB_ARN,
    }
    # A JSON float, whole seconds, as AWS sends it (1693997155.0).
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)


def test_dynamodb_keys_only_and_ttl_identity() -> None:
    raw = dynamodb_raw()
    raw["eventName"] = "REMOVE"
    raw["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    change = dict(raw["dynamodb"])
    del change["OldImage"], change["NewImage"]
    change["StreamViewType"] = "KEYS_ONLY"
    raw["dynamodb"] = change
    record = dynamodb_record(raw, stream_arn=DDB_ARN, region="eu-west-1")
    assert "OldImage" not in record["dynamodb"] and "NewImage" not in record["dynamodb"]
    assert record["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def test_dynamodb_region_falls_back_to_the_mappings() -> None:
    raw = dynamodb_raw()
    del raw["awsRegion"]
    assert dynamodb_record(raw, stream_arn=DDB_ARN, region="us-west-2")["awsRegion"] == "us-west-2"


def test_dynamodb_stream_record_routes_by_canonical_keys() -> None:
    record = dynamodb_record(dynamodb_raw(), stream_arn=DDB_ARN, region="eu-west-1")
    wrapped = stream_record(record, kind="dynamodb")
    assert wrapped.sequence_number == "300000000012345678901"
    assert wrapped.sequence == 300000000012345678901
    assert wrapped.arrival == 1735732800.0
    assert wrapped.key == '{"pk":{"S":"order#42"},"sk":{"N":"1"}}'
    # The same item with its keys listed in another order routes the same way.
    reordered = dynamodb_raw()
    reordered["dynamodb"]["Keys"] = {"pk": {"S": "order#42"}, "sk": {"N": "1"}}
    other = stream_record(
        dynamodb_record(reordered, stream_arn=DDB_ARN, region="eu-west-1"), kind="dynamodb"
    )
    assert other.key == wrapped.key
    assert json.loads(wrapped.serialized) == record


def test_sequence_numbers_compare_as_integers() -> None:
    def kinesis(sequence: str) -> int:
        raw = {**kinesis_raw(), "SequenceNumber": sequence}
        record = kinesis_record(
            raw, shard_id=SHARD, stream_arn=KINESIS_ARN, region="r", invoke_identity_arn=ROLE
        )
        return stream_record(record, kind="kinesis").sequence

    assert kinesis("9") < kinesis("10")
