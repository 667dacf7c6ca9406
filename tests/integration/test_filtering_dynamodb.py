"""DynamoDB Streams filter criteria end to end: the real daemon, moto's server, a fake Invoke API.

Two mappings read one table's stream, each with one filter (ESM-SEMANTICS §1.3, the whole
record is matched): `active` keeps items with no `archived` flag (`exists: false` on the
typed leaf `archived.BOOL`), `bulk` keeps items whose `quantity` is a DynamoDB number above 10
(`numeric` on the string inside `{"N": ...}`; a quantity stored as a string does not count).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.queues import aws_client
from tests.support.streams import make_table, stream_yaml
from tests.support.wait import eventually

ACTIVE = '{"dynamodb": {"NewImage": {"archived": {"BOOL": [{"exists": false}]}}}}'
BULK = '{"dynamodb": {"NewImage": {"quantity": {"N": [{"numeric": [">", 10]}]}}}}'

# (pk, the other attributes); written in this order, one INSERT each. The last records are
# filtered out by both mappings, so a checkpoint at the stream's end proves the checkpoint
# moved past records that were never invoked.
ITEMS: list[tuple[str, dict[str, Any]]] = [
    ("a", {"quantity": {"N": "5"}}),
    ("b", {"archived": {"BOOL": True}, "quantity": {"N": "11"}}),
    ("c", {"archived": {"BOOL": False}, "quantity": {"N": "10"}}),
    ("d", {"quantity": {"N": "250"}}),
    ("e", {"quantity": {"S": "20"}}),
    ("f", {"archived": {"BOOL": True}}),
]
EXPECTED = {"active": ["a", "d", "e"], "bulk": ["b", "d"]}
RECORD_KEYS = {
    "eventID",
    "eventName",
    "eventVersion",
    "eventSource",
    "awsRegion",
    "dynamodb",
    "eventSourceARN",
}


@pytest.fixture
async def streams(moto: str) -> AsyncIterator[Any]:
    async with aws_client("dynamodbstreams", moto) as client:
        yield client


async def stream_records(streams: Any, arn: str) -> list[dict[str, Any]]:
    """Every record of the stream as GetRecords returns it (moto: one shard)."""
    shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]
    assert len(shards) == 1
    iterator = (
        await streams.get_shard_iterator(
            StreamArn=arn, ShardId=shards[0]["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )
    )["ShardIterator"]
    return list((await streams.get_records(ShardIterator=iterator))["Records"])


def delivered(fake: FakeLambda, mapping: str) -> list[dict[str, Any]]:
    """What the mapping's function (`<mapping>-fn`) received."""
    return event_records(fake, f"{mapping}-fn")


def pks(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]


def checkpointed(app: Any, mapping: str, sequence_number: str) -> Callable[[], bool]:
    """Whether the mapping's (only) shard is checkpointed at `sequence_number`."""

    def check() -> bool:
        status = next(m.status for m in app.mappings if m.settings.name == mapping)
        return [shard.checkpoint for shard in status.shards.values()] == [sequence_number]

    return check


def more_than(fake: FakeLambda, mapping: str, count: int) -> Callable[[], bool]:
    return lambda: len(delivered(fake, mapping)) > count


async def test_exists_false_and_typed_numeric_filters_invoke_only_matching_records(
    moto: str, dynamodb: Any, streams: Any, tmp_path: Path
) -> None:
    arn = await make_table(dynamodb, "orders", "NEW_AND_OLD_IMAGES")
    for pk, attributes in ITEMS:
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": pk}, **attributes})
    raw = await stream_records(streams, arn)
    assert pks(raw) == [pk for pk, _ in ITEMS]
    last = str(raw[-1]["dynamodb"]["SequenceNumber"])

    mappings = [
        {
            "name": name,
            "function": f"{name}-fn",
            "source": arn,
            "starting_position": "TRIM_HORIZON",
            "filter_criteria": {"filters": [{"pattern": pattern}]},
        }
        for name, pattern in (("active", ACTIVE), ("bulk", BULK))
    ]
    async with FakeLambda() as fake:
        config = settings_from(stream_yaml(moto, fake, tmp_path / "state.db", mappings))
        async with running(config) as app:
            for name, expected in EXPECTED.items():
                await eventually(checkpointed(app, name, last))
                # Every record was read; the ones no filter kept were counted, never invoked.
                assert events_total(app, "polled", mapping=name) == 6
                filtered = events_total(app, "filtered_out", mapping=name)
                assert filtered == len(ITEMS) - len(expected)
        assert not fake.errors
        by_sequence = {r["dynamodb"]["SequenceNumber"]: r for r in raw}
        for name, expected in EXPECTED.items():
            records = delivered(fake, name)
            assert pks(records) == expected
            for record in records:
                # The original record: typed images as read (numbers stay {"N": "250"}).
                original = by_sequence[record["dynamodb"]["SequenceNumber"]]
                assert set(record) == RECORD_KEYS
                assert record["eventID"] == original["eventID"]
                assert record["eventName"] == "INSERT"
                assert record["eventSourceARN"] == arn
                assert record["dynamodb"]["Keys"] == original["dynamodb"]["Keys"]
                assert record["dynamodb"]["NewImage"] == original["dynamodb"]["NewImage"]
        assert delivered(fake, "bulk")[1]["dynamodb"]["NewImage"]["quantity"] == {"N": "250"}

        # A restart resumes after the checkpoints: the filtered-out tail is not read again.
        await dynamodb.put_item(
            TableName="orders", Item={"pk": {"S": "g"}, "quantity": {"N": "12"}}
        )
        before = {name: len(delivered(fake, name)) for name in EXPECTED}
        async with running(config) as app:
            for name in EXPECTED:
                await eventually(more_than(fake, name, before[name]))
                assert events_total(app, "polled", mapping=name) == 1
                assert events_total(app, "filtered_out", mapping=name) == 0
        for name, expected in EXPECTED.items():
            # Records of one shard arrive in order: a replay would have come before "g".
            assert pks(delivered(fake, name)) == [*expected, "g"]
