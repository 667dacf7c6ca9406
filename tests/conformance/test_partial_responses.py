"""Every partial batch response AWS was recorded answering (fixtures/partial_responses.json),
given by a function behind the running daemon: how many invocations, and what reached the
on-failure destination (streams) or the queue's dead-letter queue (SQS)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.conformance.facts import scenarios
from tests.support.config import config_yaml
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, invocations
from tests.support.queues import make_queue, receive_all, send
from tests.support.streams import make_stream, make_table, put_records
from tests.support.wait import eventually


def _name(scenario: dict[str, Any]) -> str:
    return f"{scenario['source'][0]}-{scenario['localstack_id']}".replace("_", "-")[:60]


def _sequence(record: dict[str, Any]) -> str:
    inner = record.get("kinesis") or record["dynamodb"]
    return str(inner.get("sequenceNumber") or inner["SequenceNumber"])


def _is_sixth(record: dict[str, Any]) -> bool:
    """Whether a record is the sixth the scenario wrote (the one its function fails)."""
    if "kinesis" in record:
        return bool(json.loads(base64.b64decode(record["kinesis"]["data"]))["n"] == 6)
    return bool(record["dynamodb"]["Keys"]["order_id"]["S"] == "o-6")


def _answer(scenario: dict[str, Any], event: Any) -> Any:
    returns = scenario["function_returns"]
    if returns == "raises ZeroDivisionError":
        return Reply.error("division by zero", "ZeroDivisionError")
    if scenario["localstack_id"] == "report_batch_item_failures":
        failed = [r for r in event["Records"] if _is_sixth(r)]
        return {"batchItemFailures": [{"itemIdentifier": _sequence(r)} for r in failed]}
    return Reply.result(returns)


async def _table(dynamodb: Any, name: str, items: int) -> str:
    stream_arn = await make_table(dynamodb, name, "NEW_IMAGE", key="order_id")
    for n in range(1, items + 1):
        await dynamodb.put_item(TableName=name, Item={"order_id": {"S": f"o-{n}"}})
    return stream_arn


async def test_stream_partial_responses_are_answered_as_aws_answered_them(
    moto: str, kinesis: Any, dynamodb: Any, sqs: Any, state: Path
) -> None:
    recorded = scenarios("kinesis") + scenarios("dynamodb")
    by_name = {_name(s): s for s in recorded}
    mappings, queues = [], {}
    for name, scenario in by_name.items():
        count = scenario["records_in_batch"]
        if scenario["source"] == "kinesis":
            source = await make_stream(kinesis, name)
            await put_records(kinesis, source, [("user-7", {"n": n}) for n in range(1, count + 1)])
        else:
            source = await _table(dynamodb, name, count)
        plan = scenario["mapping"]
        mapping: dict[str, Any] = {
            "name": name,
            "source": source,
            "function": name,
            "starting_position": "TRIM_HORIZON",
            "batch_size": plan["BatchSize"],
            "maximum_batching_window_in_seconds": plan["MaximumBatchingWindowInSeconds"],
            "maximum_retry_attempts": plan["MaximumRetryAttempts"],
            "function_response_types": plan["FunctionResponseTypes"],
        }
        if plan["DestinationConfig"]:
            queues[name] = await make_queue(sqs, f"{name}-failed"[:80])
            mapping["destination_config"] = {"on_failure": {"destination": queues[name].arn}}
        mappings.append(mapping)

    def function(event: Any, info: Invocation) -> Any:
        return _answer(by_name[info.function_name.split(":")[-1]], event)

    async with FakeLambda(function) as fake:
        text = config_yaml(
            moto, mappings, lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(text)) as app:
            given_up = {}
            for name, queue in queues.items():
                given_up[name] = await eventually(
                    lambda u=queue.url: receive_all(sqs, u), timeout=30
                )
            # Every scenario settled up to its last record (which every function sees), so
            # no retry can still be on its way when the invocations are counted.
            for entry in app.mappings:
                await eventually(lambda e=entry: _settled(e, fake), timeout=30)

    for name, scenario in by_name.items():
        calls = invocations(fake, name)
        if scenario["localstack_id"] == "report_batch_item_failures":
            sixth = [c for c in calls if any(_is_sixth(r) for r in c.event["Records"])]
            others = [r for c in calls for r in c.event["Records"] if not _is_sixth(r)]
            assert len(sixth) == scenario["invocations"]["record 6"], name
            assert len(others) == 5 * scenario["invocations"]["record 1-5"], name
        else:
            assert len(calls) == scenario["invocations"], name
        expected = scenario["destination"]
        if not isinstance(expected, dict):
            assert name not in given_up, name
            continue
        [message] = given_up[name]
        record = json.loads(message["Body"])
        info = record.get("KinesisBatchInfo") or record["DDBStreamBatchInfo"]
        assert record["requestContext"]["condition"] == expected["condition"], name
        count = record["requestContext"]["approximateInvokeCount"]
        assert count == expected["approximateInvokeCount"], name
        assert (
            record["responseContext"]["functionError"] == expected["responseContext.functionError"]
        )
        assert info["batchSize"] == expected["batchSize"], name


def _settled(entry: Any, fake: FakeLambda) -> bool:
    """Whether a mapping's checkpoint reached the last record its function was given."""
    seen = [
        int(_sequence(r))
        for c in invocations(fake, entry.settings.name)
        for r in c.event["Records"]
    ]
    shards = list(entry.status.shards.values())
    return bool(seen and shards) and all(
        s.checkpoint is not None and int(s.checkpoint) >= max(seen) for s in shards
    )


async def test_sqs_responses_are_answered_as_aws_answered_them(moto: str, sqs: Any) -> None:
    # The recordings' visibility timeouts were 4 to 8 s; 2 s keeps the same order of events.
    recorded = {s["localstack_id"]: s for s in scenarios("sqs")}
    empty = await make_queue(sqs, "empty-json", visibility_timeout=2, max_receive_count=1)
    invalid = await make_queue(sqs, "invalid-json", visibility_timeout=2, max_receive_count=2)
    fifo = await make_queue(sqs, "partial.fifo", visibility_timeout=2, max_receive_count=2)
    flaky = await make_queue(sqs, "flaky", visibility_timeout=2, max_receive_count=2)
    failing = await make_queue(sqs, "failing", visibility_timeout=2, max_receive_count=2)
    await send(sqs, empty.url, ["m"])
    await send(sqs, invalid.url, ["m"])
    fifo_ids = await send(sqs, fifo.url, ["m1", "m2", "m3", "m4"], group="g")
    await send(sqs, flaky.url, ["m"])
    await send(sqs, failing.url, ["m"])
    report = ["ReportBatchItemFailures"]

    def function(event: Any, info: Invocation) -> Any:
        name = info.function_name.split(":")[-1]
        if name == "empty":
            return {}
        if name == "invalid":
            return {"batchItemFailures": [{"foo": "notvalid"}]}
        if name == "fifo":
            first = len(invocations(fake, "fifo")) == 1
            failed = fifo_ids[1:] if first else fifo_ids[3:]
            return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}
        if name == "flaky" and len(invocations(fake, "flaky")) > 1:
            return None
        return Reply.error("boom", "ValueError")  # flaky's first attempt, failing's every one

    async with FakeLambda(function) as fake:
        mappings = [
            {"name": "empty", "source": empty.arn, "function_response_types": report},
            {"name": "invalid", "source": invalid.arn, "function_response_types": report},
            {"name": "fifo", "source": fifo.arn, "function_response_types": report},
            {"name": "flaky", "source": flaky.arn, "batch_size": 1},
            {"name": "failing", "source": failing.arn, "batch_size": 1},
        ]
        for mapping in mappings:
            mapping["function"] = mapping["name"]
        text = config_yaml(moto, mappings, lambda_url=fake.endpoint_url)
        async with running(settings_from(text)):
            dead = {}
            for queue in (invalid, fifo, failing):  # what AWS moved to the dead-letter queue
                assert queue.dlq_url is not None
                dead[queue.url] = await eventually(
                    lambda u=queue.dlq_url: receive_all(sqs, u), timeout=30
                )
            await eventually(lambda: len(invocations(fake, "flaky")) == 2, timeout=30)
            await eventually(lambda: _queue_empty(sqs, flaky.url), timeout=30)
            await eventually(lambda: _queue_empty(sqs, empty.url), timeout=30)

    counts = {
        "empty": "test_report_batch_item_failures_empty_json_batch_succeeds",
        "invalid": "test_report_batch_item_failures_invalid_result_json_batch_fails",
        "fifo": "test_report_batch_item_failures (FIFO)",
        "flaky": "test_failing_lambda_retries_after_visibility_timeout",
        "failing": "test_redrive_policy_with_failing_lambda",
    }
    for name, scenario in counts.items():
        assert len(invocations(fake, name)) == recorded[scenario]["invocations"], name
    # FIFO: the second invocation held exactly m2-m4; only m4 reached the dead-letter queue.
    second = invocations(fake, "fifo")[1]
    assert [r["messageId"] for r in second.event["Records"]] == fifo_ids[1:]
    assert [m["MessageId"] for m in dead[fifo.url]] == fifo_ids[3:]
    # Nothing of the successful ones went to a dead-letter queue.
    for queue in (empty, flaky):
        assert queue.dlq_url is None or await receive_all(sqs, queue.dlq_url) == []


async def _queue_empty(sqs: Any, url: str) -> bool:
    attributes = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return all(value == "0" for value in attributes.values())
