"""Lambda-shaped stream event records (Kinesis, DynamoDB Streams).

Pure builders from one element of GetRecords' `Records` as the stream clients return it (blobs
as base64 text, timestamps as epoch seconds: `aws.parsing`; bytes and datetimes, botocore's
defaults, are taken too) to the record Lambda puts in `{"Records": [...]}`, plus
`stream_record`, which wraps a built record into the StreamRecord the engine moves around.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import orjson

from poller.engine.records import StreamRecord
from poller.events.envelope import dumps

StreamKind = Literal["kinesis", "dynamodb"]

# DynamoDB attribute types whose values are blobs (botocore hands them over as bytes).
_BINARY = "B"
_BINARY_SET = "BS"


def epoch_seconds(value: Any) -> float:
    """A botocore timestamp (datetime) or a number as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _base64(value: bytes | bytearray | str) -> str:
    if isinstance(value, str):  # already base64 on the wire: never re-encoded
        return value
    return base64.b64encode(bytes(value)).decode("ascii")


def kinesis_record(
    raw: Mapping[str, Any],
    *,
    shard_id: str,
    stream_arn: str,
    region: str,
    invoke_identity_arn: str,
) -> dict[str, Any]:
    """The Lambda Kinesis event record for one GetRecords record."""
    sequence_number = str(raw["SequenceNumber"])
    arrival = raw.get("ApproximateArrivalTimestamp")
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            # AUTO-distributed streams may omit the key; Lambda's shape always has the field.
            "partitionKey": raw.get("PartitionKey", ""),
            "sequenceNumber": sequence_number,
            "data": _base64(raw.get("Data", b"")),
            # Seconds with millisecond precision, as Lambda writes it (1735732800.123).
            "approximateArrivalTimestamp": (
                round(epoch_seconds(arrival), 3) if arrival is not None else 0.0
            ),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": invoke_identity_arn,
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }


class KinesisRecords:
    """`kinesis_record` then `stream_record` for one stream, without the dict in between: the
    serialized record is written from a template whose constant parts (the stream, region and
    identity) are serialized once, and only the record's own values per record. The bytes are
    those of `dumps(kinesis_record(...))` (tests/unit/test_stream_events_fast.py holds them to
    it); building and serializing 10,000 records costs about half of what the dict path does.
    """

    __slots__ = ("_suffix",)

    def __init__(self, *, stream_arn: str, region: str, invoke_identity_arn: str) -> None:
        self._suffix = b"".join(
            (
                b',"eventName":"aws:kinesis:record","invokeIdentityArn":',
                orjson.dumps(invoke_identity_arn),
                b',"awsRegion":',
                orjson.dumps(region),
                b',"eventSourceARN":',
                orjson.dumps(stream_arn),
                b"}",
            )
        )

    def record(self, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        """The StreamRecord of one GetRecords record."""
        encode = orjson.dumps
        sequence_number = str(raw["SequenceNumber"])
        key = raw.get("PartitionKey", "")
        arrival = raw.get("ApproximateArrivalTimestamp")
        seconds = round(epoch_seconds(arrival), 3) if arrival is not None else 0.0
        serialized = b"".join(
            (
                b'{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":',
                encode(key),
                b',"sequenceNumber":',
                encode(sequence_number),
                b',"data":',
                encode(_base64(raw.get("Data", b""))),
                b',"approximateArrivalTimestamp":',
                encode(seconds),
                b'},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":',
                encode(f"{shard_id}:{sequence_number}"),
                self._suffix,
            )
        )
        return StreamRecord(
            sequence_number=sequence_number,
            sequence=int(sequence_number),
            key=key,
            arrival=float(seconds),
            serialized=serialized,
        )


def _attribute_value(value: Mapping[str, Any]) -> dict[str, Any]:
    """One DynamoDB JSON attribute value with blobs back in base64, as the wire had them."""
    converted: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == _BINARY:
            converted[kind] = _base64(inner)
        elif kind == _BINARY_SET:
            converted[kind] = [_base64(item) for item in inner]
        elif kind == "M":
            converted[kind] = _attribute_map(inner)
        elif kind == "L":
            converted[kind] = [_attribute_value(item) for item in inner]
        elif kind in ("SS", "NS"):
            converted[kind] = list(inner)
        else:
            converted[kind] = inner
    return converted


def _attribute_map(image: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _attribute_value(value) for name, value in image.items()}


def dynamodb_record(raw: Mapping[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """The Lambda DynamoDB event record for one GetRecords record.

    `eventVersion` is "1.1" whatever the emulator says, as in real events, and `eventSourceARN`
    is added, since the Streams API does not return it.
    """
    change = raw.get("dynamodb", {})
    body: dict[str, Any] = {}
    created = change.get("ApproximateCreationDateTime")
    if created is not None:
        # Rounded down to the second, as the Streams API documents; Lambda sends it as a JSON
        # float (1693997155.0), as AWS-recorded events show.
        body["ApproximateCreationDateTime"] = float(math.floor(epoch_seconds(created)))
    body["Keys"] = _attribute_map(change.get("Keys", {}))
    for image in ("OldImage", "NewImage"):
        if image in change:
            body[image] = _attribute_map(change[image])
    body["SequenceNumber"] = str(change["SequenceNumber"])
    if "SizeBytes" in change:
        body["SizeBytes"] = int(change["SizeBytes"])
    if "StreamViewType" in change:
        body["StreamViewType"] = change["StreamViewType"]
    record: dict[str, Any] = {
        "eventID": raw.get("eventID", ""),
        "eventName": raw.get("eventName", ""),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        # The stream's own region: on AWS the record says the same, an emulator may not.
        "awsRegion": region,
        "dynamodb": body,
        "eventSourceARN": stream_arn,
    }
    identity = raw.get("userIdentity")
    if identity:
        # The API's Identity is {PrincipalId, Type}; Lambda's event spells it in camelCase.
        record["userIdentity"] = {
            "type": identity.get("Type", ""),
            "principalId": identity.get("PrincipalId", ""),
        }
    return record


def routing_key(keys: Mapping[str, Any]) -> str:
    """A DynamoDB item's key attributes as canonical JSON: equal keys, equal strings."""
    return json.dumps(keys, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stream_record(event_record: dict[str, Any], *, kind: StreamKind) -> StreamRecord:
    """Wrap a built event record into a StreamRecord, serializing it once."""
    if kind == "kinesis":
        inner = event_record["kinesis"]
        sequence_number = inner["sequenceNumber"]
        key = inner["partitionKey"]
        arrival = float(inner["approximateArrivalTimestamp"])
    else:
        inner = event_record["dynamodb"]
        sequence_number = inner["SequenceNumber"]
        key = routing_key(inner.get("Keys", {}))
        arrival = float(inner.get("ApproximateCreationDateTime", 0))
    return StreamRecord(
        sequence_number=sequence_number,
        sequence=int(sequence_number),
        key=key,
        arrival=arrival,
        serialized=dumps(event_record),
    )
