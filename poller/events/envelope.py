"""Lambda-shaped events (ESM-SEMANTICS §2) and the reading of partial batch responses (§1.2)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Lambda's synchronous invoke limit; a batch closes before its serialized event passes it.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# b'{"Records":[' + b']}': what the envelope adds around the records.
_ENVELOPE_BYTES = len(b'{"Records":[]}')


def dumps(value: Any) -> bytes:
    """Compact JSON, as Lambda sends it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def event_payload(serialized_records: Iterable[bytes]) -> bytes:
    """Join records that were serialized once each into `{"Records": [...]}` bytes."""
    return b'{"Records":[' + b",".join(serialized_records) + b"]}"


def payload_size(record_sizes: int, count: int) -> int:
    """Size of the event holding `count` records whose serialized sizes add up to record_sizes."""
    return _ENVELOPE_BYTES + record_sizes + max(count - 1, 0)


def new_trace_header(now: float | None = None) -> str:
    """A fresh X-Ray trace header: Root=1-<epoch hex>-<96 random bits>."""
    epoch = int(now if now is not None else time.time())
    return f"Root=1-{epoch:08x}-{os.urandom(12).hex()};Sampled=0"


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
    """The Lambda SQS event record for one message from ReceiveMessage (ESM-SEMANTICS §2.1)."""
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


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """What a function's answer means for a batch: all good, all failed, or these ids failed.

    `failed_ids` is None when the whole batch failed, empty when all succeeded.
    """

    failed_ids: frozenset[str] | None
    reason: str = ""

    @property
    def whole_batch_failed(self) -> bool:
        return self.failed_ids is None

    @property
    def all_succeeded(self) -> bool:
        return self.failed_ids is not None and not self.failed_ids


ALL_SUCCEEDED = BatchVerdict(frozenset())


def whole_batch_failed(reason: str) -> BatchVerdict:
    return BatchVerdict(None, reason)


def parse_batch_item_failures(payload: bytes | None, batch_ids: Sequence[str]) -> BatchVerdict:
    """Read a `{"batchItemFailures": [...]}` answer per the outcome table of ESM-SEMANTICS §1.2.

    Only called when the mapping lists ReportBatchItemFailures and the function succeeded.
    Anything malformed fails the whole batch (fail-safe): a record is never deleted or
    checkpointed on an answer poller cannot read.
    """
    if payload is None or not payload.strip():
        return ALL_SUCCEEDED
    try:
        answer = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return whole_batch_failed("function response is not valid JSON")
    if answer is None:
        return ALL_SUCCEEDED
    if not isinstance(answer, dict):
        return whole_batch_failed("function response is JSON but not an object")
    failures = answer.get("batchItemFailures")
    if failures is None or failures == []:
        return ALL_SUCCEEDED
    if not isinstance(failures, list):
        return whole_batch_failed("batchItemFailures is not a list")
    known = set(batch_ids)
    failed: set[str] = set()
    for entry in failures:
        if not isinstance(entry, dict):
            return whole_batch_failed("a batchItemFailures entry is not an object")
        identifier = entry.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier:
            return whole_batch_failed("a batchItemFailures entry has no itemIdentifier")
        if identifier not in known:
            # The value is the function's to choose: it is not echoed into logs.
            return whole_batch_failed("a reported itemIdentifier is not in the batch")
        failed.add(identifier)
    return BatchVerdict(frozenset(failed))
