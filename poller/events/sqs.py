"""The Lambda SQS event record for one received message."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any


def _sqs_message_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for name, value in raw.items():
        converted: dict[str, Any] = {}
        if "StringValue" in value:
            converted["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        converted["stringListValues"] = list(value.get("StringListValues", []))
        converted["binaryListValues"] = [
            base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
        ]
        converted["dataType"] = value.get("DataType", "String")
        attributes[name] = converted
    return attributes


def sqs_record(message: Mapping[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """The Lambda SQS event record for one message from ReceiveMessage."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        # System attributes are all strings already; they are passed through as SQS gave them.
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": _sqs_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody", ""),
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record
