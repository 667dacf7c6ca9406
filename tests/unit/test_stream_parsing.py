"""The stream clients parse GetRecords the cheap way (epoch seconds, base64 text), and a big
answer off the event loop: through real aiobotocore clients against a canned HTTP server."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from poller.aws import parsing
from poller.aws.clients import AwsClients
from poller.config.arns import parse_source_arn
from poller.config.settings import AwsSettings
from poller.sources.streams.kinesis import KinesisShards
from tests.conformance import golden_inputs
from tests.conformance.test_golden import STREAM, canned_aws


async def _read(endpoint: str) -> list[dict[str, Any]]:
    async with AwsClients(AwsSettings(endpoint_url=endpoint)) as clients:
        api = KinesisShards(
            await clients.client("kinesis"), parse_source_arn(STREAM), invoke_identity_arn="i"
        )
        return list((await api.read("iterator", 10_000)).records)


async def test_kinesis_records_keep_base64_text_and_epoch_seconds() -> None:
    async with canned_aws() as endpoint:
        records = await _read(endpoint)
    wire = golden_inputs.KINESIS_GET_RECORDS["Records"]
    assert [r["Data"] for r in records] == [r["Data"] for r in wire]
    assert [r["ApproximateArrivalTimestamp"] for r in records] == [
        float(r["ApproximateArrivalTimestamp"]) for r in wire
    ]
    assert all(type(r["ApproximateArrivalTimestamp"]) is float for r in records)


async def test_a_big_answer_is_parsed_in_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    data = base64.b64encode(json.dumps({"pad": "x" * 900}).encode()).decode()
    big = {
        "Records": [
            {
                "SequenceNumber": str(1000 + n),
                "ApproximateArrivalTimestamp": 1.735732800123e9,
                "Data": data,
                "PartitionKey": "k",
            }
            for n in range(1_500)
        ],
        "NextShardIterator": "next",
        "MillisBehindLatest": 0,
    }
    assert len(json.dumps(big)) > parsing.OFFLOAD_BYTES
    monkeypatch.setattr(golden_inputs, "KINESIS_GET_RECORDS", big)
    threads: list[int] = []
    original = parsing._OffloadingJSONParser._handle_json_body

    def spy(self: Any, body: bytes, shape: Any) -> Any:
        threads.append(threading.get_ident())
        return original(self, body, shape)

    monkeypatch.setattr(parsing._OffloadingJSONParser, "_handle_json_body", spy)
    async with canned_aws() as endpoint:
        records = await _read(endpoint)
    assert threads and threading.get_ident() not in threads
    assert [r["SequenceNumber"] for r in records] == [str(1000 + n) for n in range(1_500)]
    assert all(r["Data"] == data for r in records)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1735732800, 1735732800.0),
        (1.735732800123e9, 1735732800.123),
        ("2025-01-01T12:00:00Z", 1735732800.0),
    ],
)
def test_timestamps_become_epoch_seconds(value: Any, seconds: float) -> None:
    assert parsing.epoch_seconds(value) == seconds
