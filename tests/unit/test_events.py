"""SQS event records and the partial batch response table (ESM-SEMANTICS §1.2, §2.1)."""

from __future__ import annotations

import json
import re

import pytest

from poller.engine.verdict import parse_batch_item_failures, verdict_for
from poller.events.envelope import (
    MAX_PAYLOAD_BYTES,
    event_payload,
    new_trace_header,
    payload_size,
)
from poller.events.sqs import sqs_record
from poller.targets.base import InvokeResult, Outcome

IDS = ["id-1", "id-2", "id-3"]


def answer(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("payload", "failed"),
    [
        (None, set()),
        (b"", set()),
        (b"null", set()),
        (answer({}), set()),
        (answer({"batchItemFailures": None}), set()),
        (answer({"batchItemFailures": []}), set()),
        (answer({"other": 1}), set()),
        # An empty JSON array: success to AWS (LocalStack's AWS-validated snapshot
        # test_kinesis_report_batch_item_success_scenarios[empty_list_success]).
        (b"[]", set()),
        (answer({"batchItemFailures": [{"itemIdentifier": "id-2"}]}), {"id-2"}),
        (
            answer({"batchItemFailures": [{"itemIdentifier": "id-1"}, {"itemIdentifier": "id-3"}]}),
            {"id-1", "id-3"},
        ),
        (answer({"batchItemFailures": [{"itemIdentifier": "id-2"}] * 2}), {"id-2"}),
        # Every malformed answer fails the whole batch (None).
        (b"{not json", None),
        (answer("a string"), None),
        (answer([{"itemIdentifier": "id-1"}]), None),
        (answer(42), None),
        (answer({"batchItemFailures": [{"itemIdentifier": ""}]}), None),
        (answer({"batchItemFailures": [{"itemIdentifier": None}]}), None),
        (answer({"batchItemFailures": [{"messageId": "id-1"}]}), None),
        (answer({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}), None),
        (answer({"batchItemFailures": ["id-1"]}), None),
        (answer({"batchItemFailures": {"itemIdentifier": "id-1"}}), None),
        (answer({"batchItemFailures": [{"itemIdentifier": 7}]}), None),
    ],
)
def test_partial_batch_response_table(payload: bytes | None, failed: set[str] | None) -> None:
    verdict = parse_batch_item_failures(payload, IDS)
    if failed is None:
        assert verdict.whole_batch_failed and verdict.reason
    else:
        assert verdict.failed_ids == frozenset(failed)


def test_response_body_is_ignored_without_report_batch_item_failures() -> None:
    result = InvokeResult(Outcome.SUCCESS, payload=b"{not json")
    assert verdict_for(result, IDS, report_batch_item_failures=False).all_succeeded


@pytest.mark.parametrize("outcome", [Outcome.FUNCTION_ERROR, Outcome.TIMEOUT])
def test_function_errors_fail_the_whole_batch_even_with_a_valid_answer(outcome: Outcome) -> None:
    result = InvokeResult(outcome, payload=answer({"batchItemFailures": []}))
    assert verdict_for(result, IDS, report_batch_item_failures=True).whole_batch_failed


RAW = {
    "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
    "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
    "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
    "Body": "test",
    "Attributes": {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185",
        "AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    },
    "MD5OfMessageAttributes": "00484c68d6f0c6d9f8d6e1c3f7a3b2a1",
    "MessageAttributes": {
        "tenant": {"StringValue": "acme", "DataType": "String"},
        "count": {"StringValue": "3", "DataType": "Number"},
        "raw": {"BinaryValue": b"\xff\x00", "DataType": "Binary"},
    },
}
ARN = "arn:aws:sqs:eu-west-1:111122223333:orders"


def test_sqs_record_has_lambdas_fields_names_and_types() -> None:
    record = sqs_record(RAW, queue_arn=ARN, region="eu-west-1")
    assert list(record) == [
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "md5OfMessageAttributes", "eventSource", "eventSourceARN", "awsRegion",
    ]  # fmt: skip
    assert record["messageId"] == RAW["MessageId"]
    assert record["receiptHandle"] == RAW["ReceiptHandle"]
    assert record["body"] == "test"
    assert record["attributes"] == RAW["Attributes"]
    assert record["messageAttributes"] == {
        "tenant": {
            "stringValue": "acme", "stringListValues": [], "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3", "stringListValues": [], "binaryListValues": [],
            "dataType": "Number",
        },
        "raw": {
            "binaryValue": "/wA=", "stringListValues": [], "binaryListValues": [],
            "dataType": "Binary",
        },
    }  # fmt: skip
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == ARN
    assert record["awsRegion"] == "eu-west-1"


def test_md5_of_message_attributes_only_when_there_are_attributes() -> None:
    bare = {
        k: v for k, v in RAW.items() if k not in ("MessageAttributes", "MD5OfMessageAttributes")
    }
    record = sqs_record(bare, queue_arn=ARN, region="eu-west-1")
    assert "md5OfMessageAttributes" not in record
    assert record["messageAttributes"] == {}


def test_payload_joins_serialized_records_and_its_size_is_exact() -> None:
    records = [json.dumps({"n": i}, separators=(",", ":")).encode() for i in range(3)]
    payload = event_payload(records)
    assert json.loads(payload) == {"Records": [{"n": 0}, {"n": 1}, {"n": 2}]}
    assert payload_size(sum(len(r) for r in records), len(records)) == len(payload)
    assert payload_size(0, 0) == len(event_payload([]))
    assert MAX_PAYLOAD_BYTES == 6 * 1024 * 1024


def test_new_trace_header_has_the_x_ray_shape() -> None:
    header = new_trace_header(now=0x5F3A8B2C)
    assert re.fullmatch(r"Root=1-5f3a8b2c-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", header)
    assert new_trace_header() != new_trace_header()
