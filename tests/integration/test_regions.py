"""What has an ARN is reached in its ARN's region, whatever `aws.region` says: sources,
on-failure destinations and functions given by ARN (moto serves every region on one endpoint,
so each resource is created by a client of its own region)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.config import config_yaml
from tests.support.daemon import events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, Reply, event_records
from tests.support.queues import ACCOUNT, REGION, aws_client, depth, make_queue, receive_all, send
from tests.support.streams import make_stream, make_table, put_records
from tests.support.wait import eventually

SOURCE_REGION = "eu-west-1"
DESTINATION_REGION = "ap-southeast-2"
FUNCTION_REGION = "eu-central-1"


async def test_a_queue_in_another_region_than_aws_region_is_read_and_deleted_there(
    moto: str,
) -> None:
    async with aws_client("sqs", moto, SOURCE_REGION) as sqs, FakeLambda() as fake:
        queue = await make_queue(sqs, "orders")
        assert f":sqs:{SOURCE_REGION}:" in queue.arn
        await send(sqs, queue.url, ["a", "b", "c"])
        config = config_yaml(
            moto, [{"source": queue.arn, "function": "orders-fn"}], lambda_url=fake.endpoint_url
        )
        settings = settings_from(config)
        assert settings.aws.region == REGION != SOURCE_REGION
        async with running(settings) as app:
            await eventually(lambda: events_total(app, "deleted") == 3)
            status = app.mappings[0].status
            assert status.state.value == "running", status.error
        assert await depth(sqs, queue.url) == (0, 0)
    records = event_records(fake)
    assert sorted(r["body"] for r in records) == ["a", "b", "c"]
    assert {r["awsRegion"] for r in records} == {SOURCE_REGION}
    assert {r["eventSourceARN"] for r in records} == {queue.arn}


async def test_a_stream_its_destination_and_its_function_are_each_reached_in_their_region(
    moto: str, state: Path
) -> None:
    function = f"arn:aws:lambda:{FUNCTION_REGION}:{ACCOUNT}:function:events-fn"
    async with (
        aws_client("kinesis", moto, SOURCE_REGION) as kinesis,
        aws_client("sqs", moto, DESTINATION_REGION) as sqs,
        FakeLambda(lambda event, info: Reply.error()) as fake,
    ):
        stream = await make_stream(kinesis, "events")
        failed = await make_queue(sqs, "events-failed")
        await put_records(kinesis, stream, [("k", {"n": 1})])
        mapping = {
            "source": stream,
            "function": function,
            "starting_position": "TRIM_HORIZON",
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": failed.arn}},
        }
        config = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        settings = settings_from(config)
        assert (
            settings.aws.region
            == REGION
            not in (SOURCE_REGION, DESTINATION_REGION, FUNCTION_REGION)
        )
        async with running(settings) as app:
            await eventually(lambda: events_total(app, "on_failure_delivered") == 1, timeout=30)
        (message,) = await receive_all(sqs, failed.url)
    record = json.loads(message["Body"])
    assert record["requestContext"]["functionArn"] == function
    assert record["KinesisBatchInfo"]["streamArn"] == stream
    # The Invoke was signed for the function's region: its credential scope names it.
    scopes = {
        inv.headers["Authorization"].split("Credential=")[1].split("/")[2]
        for inv in fake.invocations
    }
    assert scopes == {FUNCTION_REGION}


async def test_a_dynamodb_stream_in_another_region_is_read_there(moto: str, state: Path) -> None:
    async with aws_client("dynamodb", moto, SOURCE_REGION) as dynamodb, FakeLambda() as fake:
        stream = await make_table(dynamodb, "orders", "NEW_IMAGE")
        assert f":dynamodb:{SOURCE_REGION}:" in stream
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "item-1"}})
        mapping = {"source": stream, "function": "orders-fn", "starting_position": "TRIM_HORIZON"}
        config = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(config)):
            await eventually(lambda: len(event_records(fake)) == 1, timeout=30)
    (record,) = event_records(fake)
    assert record["awsRegion"] == SOURCE_REGION
    assert record["dynamodb"]["Keys"] == {"pk": {"S": "item-1"}}
