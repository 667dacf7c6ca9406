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
from tests.support.queues import make_queue, receive_all
from tests.support.streams import make_stream, put_records
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
    answer = await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    for n in range(1, items + 1):
        await dynamodb.put_item(TableName=name, Item={"order_id": {"S": f"o-{n}"}})
    return str(answer["TableDescription"]["LatestStreamArn"])


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
