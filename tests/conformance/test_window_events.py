"""Tumbling-window events from the running daemon held against aws-lambda-go's time-window
samples (fixtures/*_time_window.json), and read back by Powertools' event data classes, as a
Lambda handler using them would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent, KinesisStreamEvent

from tests.conformance.facts import facts
from tests.support.config import config_yaml
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation
from tests.support.streams import (
    backdate_dynamodb_records,
    backdate_kinesis_records,
    make_stream,
    make_table,
    put_records,
)
from tests.support.wait import eventually

MOTO = {"shardId": "moto names every DynamoDB stream's one shard alike"}


async def _events(moto: str, state: Path, source: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def function(event: Any, info: Invocation) -> Any:
        events.append(event)
        return {} if event["isFinalInvokeForWindow"] else {"state": {"seen": len(events)}}

    mapping = {
        "source": source,
        "function": "windowed",
        "starting_position": "TRIM_HORIZON",
        "tumbling_window_in_seconds": 60,
    }
    async with FakeLambda(function) as fake:
        text = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(text)):
            await eventually(lambda: any(e["isFinalInvokeForWindow"] for e in events), timeout=30)
    return events


def _hold(events: list[dict[str, Any]], fixture: str, data_class: Any) -> None:
    recorded = facts(fixture)
    first, final = events[0], events[-1]
    for event in (first, final):
        assert list(event) == recorded.raw["order"]
        # The state's keys are the function's own: an object is what AWS sends there.
        assert isinstance(event["state"], dict)
        envelope = {**event, "Records": [], "state": recorded.example["state"]}
        assert recorded.differences(envelope, moto_gets_wrong=MOTO) == []
    assert first["Records"] and first["state"] == {}
    assert final["Records"] == [] and final["state"] == {"seen": len(events) - 1}
    read = data_class(final)
    assert read.is_final_invoke_for_window is True
    assert read.is_window_terminated_early is False
    assert read.state == final["state"] and read.shard_id == final["shardId"]
    assert (read.window.start, read.window.end) == (
        final["window"]["start"],
        final["window"]["end"],
    )


async def test_kinesis_window_events(moto: str, kinesis: Any, state: Path) -> None:
    arn = await make_stream(kinesis, "clicks")
    await put_records(kinesis, arn, [("user-7", {"n": 1}), ("user-8", {"n": 2})])
    backdate_kinesis_records("clicks", 65)
    _hold(await _events(moto, state, arn), "kinesis_time_window", KinesisStreamEvent)


async def test_dynamodb_window_events(moto: str, dynamodb: Any, state: Path) -> None:
    stream_arn = await make_table(dynamodb, "orders", "NEW_IMAGE", key="id")
    await dynamodb.put_item(TableName="orders", Item={"id": {"S": "o-1"}})
    backdate_dynamodb_records("orders", 65)
    arn = stream_arn
    _hold(await _events(moto, state, arn), "dynamodb_time_window", DynamoDBStreamEvent)
