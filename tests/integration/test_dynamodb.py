"""DynamoDB Streams mappings end to end: the real daemon, moto's server, a fake Invoke API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.daemon import events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.streams import make_table, stream_yaml
from tests.support.wait import eventually


async def change_one_item(dynamodb: Any, table: str, pk: str = "order#1") -> None:
    """INSERT, MODIFY, REMOVE of one item."""
    await dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "status": {"S": "NEW"}})
    await dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": pk}},
        UpdateExpression="SET #s = :paid",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":paid": {"S": "PAID"}},
    )
    await dynamodb.delete_item(TableName=table, Key={"pk": {"S": pk}})


IMAGES = {
    "KEYS_ONLY": ([], [], []),
    "NEW_IMAGE": (["NewImage"], ["NewImage"], []),
    "OLD_IMAGE": ([], ["OldImage"], ["OldImage"]),
    "NEW_AND_OLD_IMAGES": (["NewImage"], ["NewImage", "OldImage"], ["OldImage"]),
}


@pytest.mark.parametrize("view_type", list(IMAGES))
async def test_insert_modify_remove_with_each_stream_view_type(
    moto: str, dynamodb: Any, state: Path, view_type: str
) -> None:
    arn = await make_table(dynamodb, "orders", view_type)
    await change_one_item(dynamodb, "orders")
    async with FakeLambda() as fake:
        mapping = {"source": arn, "starting_position": "TRIM_HORIZON"}
        async with running(settings_from(stream_yaml(moto, fake, state, [mapping]))) as app:
            await eventually(lambda: len(event_records(fake)) >= 3)
            await eventually(lambda: events_total(app, "polled") == 3)
        delivered = event_records(fake)
        assert [r["eventName"] for r in delivered] == ["INSERT", "MODIFY", "REMOVE"]
        for record, images in zip(delivered, IMAGES[view_type], strict=True):
            change = record["dynamodb"]
            assert sorted(k for k in change if k.endswith("Image")) == sorted(images)
            assert change["Keys"] == {"pk": {"S": "order#1"}}
            assert change["StreamViewType"] == view_type
            assert isinstance(change["ApproximateCreationDateTime"], float)
            assert record["eventSourceARN"] == arn
            assert record["eventSource"] == "aws:dynamodb"
            assert record["eventVersion"] == "1.1"
        if "NewImage" in IMAGES[view_type][1]:
            assert delivered[1]["dynamodb"]["NewImage"]["status"] == {"S": "PAID"}
        if "OldImage" in IMAGES[view_type][1]:
            assert delivered[1]["dynamodb"]["OldImage"]["status"] == {"S": "NEW"}
        sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in delivered]
        assert sequences == sorted(sequences)


async def test_filtered_out_records_are_counted_and_checkpointed_past(
    moto: str, dynamodb: Any, state: Path
) -> None:
    arn = await make_table(dynamodb, "orders", "NEW_AND_OLD_IMAGES")
    await change_one_item(dynamodb, "orders")
    async with FakeLambda() as fake:
        mapping = {
            "source": arn,
            "starting_position": "TRIM_HORIZON",
            "filter_criteria": {"filters": [{"pattern": '{"eventName": ["MODIFY"]}'}]},
        }
        async with running(settings_from(stream_yaml(moto, fake, state, [mapping]))) as app:
            await fake.wait_for(1)
            shards = app.mappings[0].status.shards
            last = str(
                max(int(s) for s in [event_records(fake)[0]["dynamodb"]["SequenceNumber"]]) + 1
            )
            await eventually(lambda: [s.checkpoint for s in shards.values()] == [last])
            assert events_total(app, "filtered_out") == 2
        assert [r["eventName"] for r in event_records(fake)] == ["MODIFY"]


async def test_a_latest_start_resumes_at_its_first_start_after_a_restart(
    moto: str, dynamodb: Any, state: Path
) -> None:
    """DynamoDB Streams has no AT_TIMESTAMP: a LATEST mapping restarted before its first
    checkpoint reads from TRIM_HORIZON and skips what is older than its first start."""
    arn = await make_table(dynamodb, "orders", "KEYS_ONLY")
    await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "before"}})
    # Creation times are whole seconds: let the first start fall in a later second.
    await anyio.sleep(1.05 - time.time() % 1)
    async with FakeLambda() as fake:
        mapping = {"source": arn, "starting_position": "LATEST"}
        config = settings_from(stream_yaml(moto, fake, state, [mapping]))
        async with running(config) as app:
            await eventually(
                lambda: (
                    [s.iterator_age_seconds for s in app.mappings[0].status.shards.values()] == [0]
                )
            )
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "while-down"}})
        async with running(config):
            await fake.wait_for(1)
            # A later marker: the stream's one shard is read in order, so once the marker is
            # delivered, "before" would have come already had it not been skipped.
            await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "marker"}})
            await eventually(lambda: keys(fake)[-1:] == ["marker"])
        assert keys(fake) == ["while-down", "marker"]


def keys(fake: FakeLambda) -> list[str]:
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in event_records(fake)]
