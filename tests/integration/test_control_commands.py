"""`poller status` against a running daemon, and `poller checkpoints list | set` on the SQLite
file with the real daemon reading from where they put it (moto, a fake Invoke API)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from poller.checkpoints import Checkpoint
from poller.checkpoints.sqlite import SqliteCheckpointStore
from tests.support.commands import poller
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.ports import free_port
from tests.support.streams import (
    backdate_dynamodb_records,
    backdate_kinesis_records,
    dynamodb_gaps,
    make_stream,
    make_table,
    numbers,
    put_records,
    stream_yaml,
)
from tests.support.wait import eventually


async def _delivered(fake: FakeLambda, count: int) -> None:
    await eventually(lambda: len(event_records(fake)) >= count, timeout=15)


async def _checkpointed(app: Any, shard: str, sequence: str) -> None:
    status = app.mappings[0].status
    await eventually(
        lambda: shard in status.shards and status.shards[shard].checkpoint == sequence, timeout=10
    )


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "poller.yaml"
    path.write_text(text)
    return str(path)


async def test_status_prints_mappings_and_shards_and_the_json_as_received(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3)])
    shard, last = placed[-1]
    async with FakeLambda() as fake:
        config = stream_yaml(
            moto, fake, state, [{"source": arn, "starting_position": "TRIM_HORIZON"}]
        )
        config = config.replace('"port": 0', f'"port": {free_port()}')
        async with running(settings_from(config)) as app:
            await _checkpointed(app, shard, last)
            url = f"http://127.0.0.1:{app.server.port}"
            shown = await poller(capsys, "status", "--url", url)
            from_file = await poller(capsys, "status", "-c", _config(tmp_path, config))
            as_json = await poller(capsys, "status", "--url", url, "--json")
            served = app.mappings[0].status.as_json()
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0].split() == ["MAPPING", "STATE", "ERROR"]
    assert lines[1].split() == ["orders", "running", "-"]
    assert lines[2].split() == ["SHARD", "OWNER", "CHECKPOINT", "ITERATOR", "AGE", "WINDOW"]
    row = lines[3].split()
    assert row[:3] == [shard, "-", last] and row[3].endswith("s") and row[4] == "-"
    assert from_file == shown
    assert as_json.code == 0
    document = json.loads(as_json.out)
    assert as_json.out == json.dumps(document, indent=2) + "\n"
    [mapping] = document["mappings"]
    assert mapping["name"] == "orders" and mapping["shards"][0]["checkpoint"] == last
    assert mapping["uuid"] == served["uuid"]


async def test_status_of_no_daemon_exits_1_naming_the_url(capsys: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ran = await poller(capsys, "status", "--url", url)
    assert ran.code == 1 and ran.out == ""
    assert ran.err.startswith(f"poller status: {url}/status: no answer")
    assert len(ran.err.splitlines()) == 1


async def _run_again(fake: FakeLambda, config: str, shard: str, last: str, count: int) -> list[int]:
    """Run the daemon until it delivered `count` records and checkpointed `last`; their `n`."""
    fake.invocations.clear()
    async with running(settings_from(config)) as app:
        await _delivered(fake, count)
        await _checkpointed(app, shard, last)
    return numbers(event_records(fake))


async def test_set_moves_a_shard_back_and_the_next_run_redelivers_from_there(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(6)])
    shard = placed[0][0]
    sequences = [sequence for _, sequence in placed]
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": arn, "starting_position": "LATEST"}])
        config = _config(tmp_path, text)
        base = ["checkpoints", "set", "-c", config, "--mapping", "orders"]
        # LATEST: nothing is read until a position says otherwise.
        moved = await poller(capsys, *base, "--sequence", sequences[1])
        assert moved.code == 0, moved.err
        # N is the next record delivered, not the last one handled.
        assert f"orders {shard}: TRIM_HORIZON (no checkpoint) -> at {sequences[1]}" in moved.out
        listed = await poller(capsys, "checkpoints", "list", "-c", config)
        assert listed.out.splitlines()[1].split()[:3] == ["orders", shard, f"at:{sequences[1]}"]
        assert await _run_again(fake, text, shard, sequences[-1], 5) == [1, 2, 3, 4, 5]

        listed = await poller(capsys, "checkpoints", "list", "-c", config)
        assert listed.code == 0
        assert listed.out.splitlines()[1].split() == ["orders", shard, sequences[-1], "no", "-"]

        moved = await poller(capsys, *base, "--shard", shard, "--sequence", sequences[3])
        assert moved.code == 0, moved.err
        assert f"after {sequences[-1]} -> at {sequences[3]}" in moved.out
        assert await _run_again(fake, text, shard, sequences[-1], 3) == [3, 4, 5]

        moved = await poller(capsys, *base, "--trim-horizon")
        assert moved.code == 0, moved.err
        assert await _run_again(fake, text, shard, sequences[-1], 6) == list(range(6))


async def test_set_by_timestamp_puts_each_shard_at_its_first_record_from_then(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    old = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3)])
    backdate_kinesis_records("orders", 600)
    new = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3, 5)])
    shard = old[0][0]
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": arn, "starting_position": "LATEST"}])
        config = _config(tmp_path, text)
        base = ["checkpoints", "set", "-c", config, "--mapping", "orders"]
        past = await poller(capsys, *base, "--timestamp", str(time.time() + 3600))
        assert past.code == 2 and "nothing in" in past.err and "arrived at or after" in past.err
        then = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 300))
        moved = await poller(capsys, *base, "--timestamp", then)
        assert moved.code == 0, moved.err
        assert f"-> at {new[0][1]} (the next record delivered)" in moved.out
        assert await _run_again(fake, text, shard, new[-1][1], 2) == [3, 4]

        before_all = await poller(capsys, *base, "--timestamp", str(time.time() - 3600))
        assert f"after {new[-1][1]} -> at {old[0][1]}" in before_all.out
        assert await _run_again(fake, text, shard, new[-1][1], 5) == [0, 1, 2, 3, 4]


async def test_set_by_a_timestamp_older_than_retention_exits_2_and_moves_nothing(
    moto: str, kinesis: Any, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    await kinesis.increase_stream_retention_period(StreamARN=arn, RetentionPeriodHours=48)
    await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3)])
    table = await make_table(dynamodb, "payments", "KEYS_ONLY")
    await dynamodb.put_item(TableName="payments", Item={"pk": {"S": "a"}})
    async with FakeLambda() as fake:
        mappings = [
            {"source": arn, "starting_position": "LATEST"},
            {"name": "payments", "source": table, "starting_position": "LATEST"},
        ]
        config = _config(tmp_path, stream_yaml(moto, fake, state, mappings))
    base = ["checkpoints", "set", "-c", config, "--mapping"]
    three_days = str(time.time() - 3 * 86400)
    old = await poller(capsys, *base, "orders", "--timestamp", three_days)
    assert old.code == 2, old.out
    assert "orders: --timestamp " in old.err and "older than what stream" in old.err
    assert "(48 hours, so nothing before" in old.err and "pass a later --timestamp" in old.err
    # DynamoDB Streams keeps 24 hours, whatever the table.
    day_and_more = str(time.time() - 25 * 3600)
    dynamo = await poller(capsys, *base, "payments", "--timestamp", day_and_more)
    assert dynamo.code == 2 and "(24 hours, so nothing before" in dynamo.err
    for ran in (old, dynamo):
        assert "Traceback" not in ran.err and "moved" not in ran.out
    listed = await poller(capsys, "checkpoints", "list", "-c", config)
    assert listed.out == "no stored positions\n"
    kept = await poller(capsys, *base, "orders", "--timestamp", str(time.time() - 47 * 3600))
    assert kept.code == 0, kept.err


async def test_dynamodb_set_by_a_fractional_timestamp_keeps_the_second_it_falls_in(
    moto: str, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    from moto.dynamodb.models import dynamodb_backends

    stream = await make_table(dynamodb, "orders", "KEYS_ONLY")
    await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "a"}})
    backdate_dynamodb_records("orders", 600)
    await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "b"}})
    shard = dynamodb_backends["123456789012"]["us-east-1"].tables["orders"].stream_shard
    created = shard.items[-1].record["dynamodb"]["ApproximateCreationDateTime"]
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": stream, "starting_position": "LATEST"}])
    base = ["checkpoints", "set", "-c", _config(tmp_path, text), "--mapping", "orders"]
    # Half a second into the second b was created in (its arrival time, to the second).
    moved = await poller(capsys, *base, "--timestamp", str(int(created.timestamp()) + 0.5))
    assert moved.code == 0, moved.err
    first = moved.out.split(" -> at ")[1].split()[0]
    assert first == shard.items[-1].record["dynamodb"]["SequenceNumber"]


async def test_dynamodb_set_by_timestamp_reads_past_empty_pages_to_the_first_record(
    moto: str, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    stream = await make_table(dynamodb, "orders", "KEYS_ONLY")
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"a{n}"}})
    backdate_dynamodb_records("orders", 600)
    await dynamodb.put_item(TableName="orders", Item={"pk": {"S": "b"}})
    empties = dynamodb_gaps(monkeypatch, empty=4, page=2)  # empty pages before each page
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": stream, "starting_position": "LATEST"}])
    base = ["checkpoints", "set", "-c", _config(tmp_path, text), "--mapping", "orders"]
    moved = await poller(capsys, *base, "--timestamp", str(time.time() - 300))
    assert moved.code == 0, moved.err
    from moto.dynamodb.models import dynamodb_backends

    shard = dynamodb_backends["123456789012"]["us-east-1"].tables["orders"].stream_shard
    assert f"-> at {shard.items[-1].record['dynamodb']['SequenceNumber']} (the next" in moved.out
    assert empties[0] == 8  # before each of the two pages read


async def test_set_latest_stores_now_and_the_next_run_delivers_only_what_came_after(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders", shards=2)
    await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(6)])
    async with FakeLambda() as fake:
        text = stream_yaml(
            moto, fake, state, [{"source": arn, "starting_position": "TRIM_HORIZON"}]
        )
        config = _config(tmp_path, text)
        before = time.time()
        latest = await poller(
            capsys, "checkpoints", "set", "-c", config, "--mapping", "orders", "--latest"
        )
        assert latest.code == 0, latest.err
        # A LATEST start at the command's time, not a record number read from the stream.
        assert latest.out.count("TRIM_HORIZON (no checkpoint) -> at 20") == 2
        listed = await poller(capsys, "checkpoints", "list", "-c", config)
        rows = [line.split() for line in listed.out.splitlines()[1:]]
        assert [row[2].startswith("at:20") for row in rows] == [True, True]
        stored = await SqliteCheckpointStore(state, exclusive=False).all("orders", arn)
        assert all(
            cp.at_time is not None and cp.at_time >= before - 0.001 for cp in stored.values()
        )
        later = await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(6, 10)])
        fake.invocations.clear()
        async with running(settings_from(text)) as app:
            await _delivered(fake, 4)
            for shard, sequence in {shard: seq for shard, seq in later}.items():
                await _checkpointed(app, shard, sequence)
    assert sorted(numbers(event_records(fake))) == [6, 7, 8, 9]


async def test_set_refuses_while_a_daemon_holds_the_file(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": 0})])
    shard, sequence = placed[0]
    async with FakeLambda() as fake:
        text = stream_yaml(
            moto, fake, state, [{"source": arn, "starting_position": "TRIM_HORIZON"}]
        )
        config = _config(tmp_path, text)
        argv = ["checkpoints", "set", "-c", config, "--mapping", "orders", "--trim-horizon"]
        async with running(settings_from(text)) as app:
            await _checkpointed(app, shard, sequence)
            refused = await poller(capsys, *argv)
            # Reading positions beside the running daemon is fine.
            listed = await poller(capsys, "checkpoints", "list", "-c", config)
        assert refused.code == 1
        assert "in use by a running poller" in refused.err and "stop that daemon" in refused.err
        assert sequence in listed.out
        moved = await poller(capsys, *argv)
    assert moved.code == 0, moved.err
    assert f"after {sequence} -> TRIM_HORIZON" in moved.out


async def test_usage_errors_exit_2_with_what_is_known(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders", shards=2)
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": arn, "starting_position": "LATEST"}])
    text += (
        '  - name: "refunds"\n'
        '    source: "arn:aws:sqs:us-east-1:123456789012:refunds"\n'
        '    target: {"type": "http", "url": "http://127.0.0.1:1/"}\n'
    )
    config = _config(tmp_path, text)
    base = ["checkpoints", "set", "-c", config]
    unknown = await poller(capsys, *base, "--mapping", "nope", "--latest")
    assert unknown.code == 2 and "its mappings: orders, refunds" in unknown.err
    queue = await poller(capsys, *base, "--mapping", "refunds", "--latest")
    assert queue.code == 2 and "SQS queue" in queue.err
    shard = await poller(capsys, *base, "--mapping", "orders", "--shard", "shardId-9", "--latest")
    assert shard.code == 2 and "no shard shardId-9" in shard.err
    assert "shardId-000000000000, shardId-000000000001" in shard.err
    several = await poller(capsys, *base, "--mapping", "orders", "--sequence", "1")
    assert several.code == 2 and "pass --shard" in several.err
    neither = await poller(capsys, *base, "--mapping", "orders")
    assert neither.code == 2
    for ran in (unknown, queue, shard, several, neither):
        assert "Traceback" not in ran.err


async def test_dynamodb_positions_by_timestamp_and_latest_and_the_window_size_listed(
    moto: str, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    stream = await make_table(dynamodb, "orders", "NEW_IMAGE")
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"a{n}"}})
    backdate_dynamodb_records("orders", 600)
    for n in range(2):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"b{n}"}})
    async with FakeLambda() as fake:
        text = stream_yaml(
            moto,
            fake,
            state,
            [{"source": stream, "starting_position": "LATEST", "tumbling_window_in_seconds": 900}],
        )
    config = _config(tmp_path, text)
    base = ["checkpoints", "set", "-c", config, "--mapping", "orders"]
    latest = await poller(capsys, *base, "--latest")
    assert latest.code == 0, latest.err
    assert "TRIM_HORIZON (no checkpoint) -> at 20" in latest.out
    moved = await poller(capsys, *base, "--timestamp", str(time.time() - 300))
    assert moved.code == 0, moved.err
    # DynamoDB Streams has no AT_TIMESTAMP: the shard is read to the first record from then.
    first = moved.out.split(" -> at ")[1].split()[0]
    listed = await poller(capsys, "checkpoints", "list", "-c", config)
    assert listed.out.splitlines()[1].split()[2:] == [f"at:{first}", "no", "-"]
    third = first
    # What a windowed run leaves: the open window's state beside the position.
    store = SqliteCheckpointStore(state)
    shard = listed.out.splitlines()[1].split()[1]
    await store.put(
        "orders", stream, shard, Checkpoint(third, window_start=0, window_state=b"{}" * 21)
    )
    await store.aclose()
    listed = await poller(capsys, "checkpoints", "list", "-c", config)
    assert listed.out.splitlines()[0].split()[-2:] == ["WINDOW", "STATE"]
    assert listed.out.splitlines()[1].split()[2:] == [third, "no", "42", "B"]
    moved = await poller(capsys, *base, "--trim-horizon")
    assert "(open window, 42 B of state, dropped) -> TRIM_HORIZON" in moved.out
