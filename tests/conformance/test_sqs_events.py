"""SQS events as a function receives them from the running daemon (moto behind it), held
against the events AWS recorded (fixtures/sqs_*.json; SOURCES.md names each sample)."""

from __future__ import annotations

import base64
from typing import Any

from tests.conformance.facts import facts
from tests.support.config import config_yaml
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.queues import make_queue, send
from tests.support.wait import eventually

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


async def _deliver(moto: str, mappings: list[dict[str, Any]]) -> FakeLambda:
    """Run the daemon until every mapping's function got one record; the fake, stopped."""
    async with FakeLambda() as fake:
        text = config_yaml(moto, mappings, lambda_url=fake.endpoint_url)
        async with running(settings_from(text)):
            for mapping in mappings:
                function = mapping["function"]
                await eventually(lambda f=function: event_records(fake, f))
    return fake


async def test_standard_and_fifo_records_have_the_recorded_shapes(moto: str, sqs: Any) -> None:
    with_attributes = await make_queue(sqs, "with-attributes")
    plain = await make_queue(sqs, "plain")
    windowed = await make_queue(sqs, "windowed")
    fifo = await make_queue(sqs, "orders.fifo")
    attributes = {
        "Colour": {"DataType": "String", "StringValue": "teal"},
        "Count": {"DataType": "Number", "StringValue": "6"},
    }
    await send(sqs, with_attributes.url, ['{"order": 17}'], MessageAttributes=attributes)
    await send(sqs, plain.url, ['{"order": 17}'])
    await send(sqs, windowed.url, ['{"order": 17}'])
    # An explicit deduplication id: with content-based deduplication moto leaves out the
    # message's SequenceNumber, which AWS always sends.
    await send(
        sqs, fifo.url, ['{"order": 17}'], group="customer-42", MessageDeduplicationId="o-17-v1"
    )
    fake = await _deliver(
        moto,
        [
            {"name": "a", "source": with_attributes.arn, "function": "a", "batch_size": 1},
            {"name": "b", "source": plain.arn, "function": "b"},
            {
                "name": "c",
                "source": windowed.arn,
                "function": "c",
                "maximum_batching_window_in_seconds": 1,
            },
            {
                "name": "d",
                "source": fifo.arn,
                "function": "d",
                "function_response_types": ["ReportBatchItemFailures"],
            },
        ],
    )
    expected = {
        "a": facts("sqs_standard"),
        "b": facts("sqs_standard_no_attributes"),
        "c": facts("sqs_standard_no_attributes_batching_window"),
        "d": facts("sqs_fifo"),
    }
    moto_gets_wrong = {
        # moto's FIFO SequenceNumber is random, not AWS's 20 increasing digits.
        "attributes.SequenceNumber": "moto numbers FIFO messages its own way",
    }
    for function, recorded in expected.items():
        [record] = event_records(fake, function)
        assert recorded.differences(record, moto_gets_wrong=moto_gets_wrong) == [], function


async def test_trace_header_binary_and_custom_typed_attributes(moto: str, sqs: Any) -> None:
    # Not in any AWS recording: the shapes AWS documents for SQS message attributes (camelCase
    # keys, binary values in base64, the data type as sent, custom suffix included) and the
    # AWSTraceHeader system attribute, which the event carries under `attributes`.
    queue = await make_queue(sqs, "typed")
    attributes = {
        "Blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01poller"},
        "Price": {"DataType": "Number.float", "StringValue": "1.5"},
        "Tag": {"DataType": "String.custom", "StringValue": "x"},
    }
    # SendMessage, not a batch: moto drops MessageSystemAttributes from batch entries.
    await sqs.send_message(
        QueueUrl=queue.url,
        MessageBody="typed",
        MessageAttributes=attributes,
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}},
    )
    fake = await _deliver(moto, [{"source": queue.arn, "function": "typed-fn"}])
    [record] = event_records(fake, "typed-fn")
    assert record["attributes"]["AWSTraceHeader"] == TRACE
    assert record["messageAttributes"] == {
        "Blob": {
            "binaryValue": base64.b64encode(b"\x00\x01poller").decode(),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
        "Price": {
            "stringValue": "1.5",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number.float",
        },
        "Tag": {
            "stringValue": "x",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String.custom",
        },
    }
    # Everything else as AWS recorded it (the attribute names are this test's own).
    differences = facts("sqs_standard").differences(record)
    assert [d for d in differences if "messageAttributes" not in d] == []
