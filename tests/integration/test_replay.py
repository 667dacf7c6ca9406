"""`poller replay` against moto and a fake Invoke API: a time range of a stream delivered again
through the mapping's engine, beside a running daemon whose checkpoints it leaves untouched.

moto has no per-record arrival control: records are put in groups and the earlier groups'
arrival times moved back in moto's backend (`backdate_*_records`) rather than waited for.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from tests.support.commands import poller
from tests.support.daemon import running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, event_records, invocations
from tests.support.streams import (
    assert_parents_before_children,
    backdate_dynamodb_records,
    backdate_kinesis_records,
    dynamodb_gaps,
    list_shards,
    make_stream,
    make_table,
    numbers,
    put_records,
    reshard,
    stream_yaml,
)
from tests.support.wait import eventually


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "poller.yaml"
    path.write_text(text)
    return str(path)


def _rows(state: Path) -> list[tuple[Any, ...]]:
    """Every stored row, every column (updated_at too), as the file holds them."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        return [
            *db.execute("SELECT * FROM checkpoints ORDER BY shard_id").fetchall(),
            *db.execute("SELECT * FROM mapping_starts").fetchall(),
        ]


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


async def test_replay_delivers_exactly_the_range_beside_the_daemon_and_moves_no_checkpoint(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders", shards=2)
    await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(6)])
    backdate_kinesis_records("orders", 600)  # 0..5 arrived 15 minutes ago ...
    await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(6, 12)])
    backdate_kinesis_records("orders", 300)  # ... 6..11 five minutes ago, 12..15 now
    placed = await put_records(kinesis, arn, [(f"k{n}", {"n": n}) for n in range(12, 16)])
    last = {shard: sequence for shard, sequence in placed}
    async with FakeLambda() as fake:
        text = stream_yaml(
            moto,
            fake,
            state,
            [{"source": arn, "starting_position": "TRIM_HORIZON", "batch_size": 2}],
        )
        config = _config(tmp_path, text)
        async with running(settings_from(text)) as app:
            status = app.mappings[0].status
            await eventually(
                lambda: all(
                    shard in status.shards and status.shards[shard].checkpoint == sequence
                    for shard, sequence in last.items()
                ),
                timeout=20,
            )
            assert sorted(numbers(event_records(fake))) == list(range(16))
            before = _rows(state)
            fake.invocations.clear()
            now = time.time()
            ran = await poller(
                capsys,
                *("replay", "-c", config, "--mapping", "orders"),
                *("--from", _iso(now - 450), "--to", str(now - 150)),
            )
            after = _rows(state)
    assert ran.code == 0, ran.err
    # maximum_retry_attempts -1 (the default) with no age limit: said before it starts.
    assert ran.err.startswith(
        "poller replay: warning: mapping orders retries a failing batch without end "
        "(maximum_retry_attempts: -1, and the record age limit does not apply here)"
    )
    assert "until Ctrl-C, which stops it; what was not delivered by then" in ran.err
    assert sorted(numbers(event_records(fake))) == list(range(6, 12))
    # The mapping's batch size, no window fields, in each shard's order.
    assert all(len(inv.event["Records"]) <= 2 for inv in invocations(fake))
    assert all("window" not in inv.event for inv in invocations(fake))
    assert after == before
    assert "6 read, 0 filtered out, 6 delivered, 0 sent on failure, 0 dropped" in ran.out
    assert len([line for line in ran.out.splitlines() if line.startswith("orders shardId-")]) == 2


async def test_replay_on_dynamodb_without_to_ends_at_the_start_and_exits_1_on_a_drop(
    moto: str, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    stream = await make_table(dynamodb, "orders", "NEW_IMAGE")
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"old{n}"}})
    backdate_dynamodb_records("orders", 600)
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"new{n}"}})

    def poisoned(event: Any, info: Invocation) -> Reply:
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        return Reply.error("poison") if "new1" in keys else Reply.result()

    async with FakeLambda(poisoned) as fake:
        mapping = {
            "source": stream,
            "starting_position": "LATEST",
            "batch_size": 1,
            "maximum_retry_attempts": 0,
            "maximum_record_age_in_seconds": 60,  # every record is older: replay ignores it
            "tumbling_window_in_seconds": 60,  # replayed as plain batches
        }
        config = _config(tmp_path, stream_yaml(moto, fake, state, [mapping]))
        ran = await poller(
            capsys, "replay", "-c", config, "--mapping", "orders", "--from", str(time.time() - 300)
        )
        delivered = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event_records(fake)]
        events = [inv.event for inv in invocations(fake)]
    assert events and all(set(event) == {"Records"} for event in events)  # no window fields
    # new1 failed, was given up with no on-failure destination: dropped, so exit 1.
    assert ran.code == 1, ran.err
    assert "warning" not in ran.err  # retries are bounded
    assert delivered == ["new0", "new1", "new2"]
    assert "3 read, 0 filtered out, 2 delivered, 0 sent on failure, 1 dropped" in ran.out
    assert not await anyio.Path(state).exists()  # the checkpoint store was never opened


async def test_replay_on_dynamodb_reads_past_empty_pages_before_the_records(
    moto: str, dynamodb: Any, state: Path, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    stream = await make_table(dynamodb, "orders", "KEYS_ONLY")
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"old{n}"}})
    backdate_dynamodb_records("orders", 600)
    for n in range(3):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": f"new{n}"}})
    # Three empty pages before each page of two records (see dynamodb_gaps).
    empties = dynamodb_gaps(monkeypatch, empty=3, page=2)
    async with FakeLambda() as fake:
        mapping = {"source": stream, "starting_position": "LATEST", "batch_size": 10}
        config = _config(tmp_path, stream_yaml(moto, fake, state, [mapping]))
        ran = await poller(
            capsys, "replay", "-c", config, "--mapping", "orders", "--from", str(time.time() - 300)
        )
        delivered = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event_records(fake)]
    assert ran.code == 0, ran.err
    assert delivered == ["new0", "new1", "new2"]
    assert "3 read, 0 filtered out, 3 delivered" in ran.out
    assert empties[0] == 9  # the gaps before each of the three pages were all read past


async def test_replay_usage_errors_exit_2_saying_what_is_wrong(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": arn, "starting_position": "LATEST"}])
    text += (
        '  - name: "refunds"\n'
        '    source: "arn:aws:sqs:us-east-1:123456789012:refunds"\n'
        '    target: {"type": "http", "url": "http://127.0.0.1:1/"}\n'
    )
    base = ["replay", "-c", _config(tmp_path, text)]
    now = time.time()
    unknown = await poller(capsys, *base, "--mapping", "nope", "--from", str(now - 60))
    assert unknown.code == 2 and "no mapping 'nope'" in unknown.err
    queue = await poller(capsys, *base, "--mapping", "refunds", "--from", str(now - 60))
    assert queue.code == 2 and "mapping refunds reads an SQS queue" in queue.err
    old = await poller(capsys, *base, "--mapping", "orders", "--from", str(now - 2 * 86400))
    assert old.code == 2 and "older than what stream" in old.err and "24 hours" in old.err
    empty = await poller(
        capsys, *base, "--mapping", "orders", "--from", str(now - 60), "--to", str(now - 120)
    )
    assert empty.code == 2 and "is not after --from" in empty.err
    shard = await poller(
        capsys, *base, "--mapping", "orders", "--from", str(now - 60), "--shard", "shardId-9"
    )
    assert shard.code == 2 and "no shard shardId-9" in shard.err
    garbled = await poller(capsys, *base, "--mapping", "orders", "--from", "yesterday")
    assert garbled.code == 2 and "neither ISO 8601" in garbled.err
    for ran in (unknown, queue, old, empty, shard, garbled):
        assert "Traceback" not in ran.err


async def test_replay_covers_closed_shards_and_their_children_parents_first(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")

    async def put(start: int) -> list[str]:
        sent = [(f"k{n % 4}", {"key": n % 4, "n": n}) for n in range(start, start + 12)]
        placed = await put_records(kinesis, arn, sent)
        if start == 0:
            backdate_kinesis_records("orders", 600)  # the parent's records: 10 minutes ago
        return sorted({shard for shard, _ in placed})

    phases = await reshard(kinesis, arn, put)
    async with FakeLambda() as fake:
        text = stream_yaml(moto, fake, state, [{"source": arn, "starting_position": "LATEST"}])
        base = ["replay", "-c", _config(tmp_path, text), "--mapping", "orders"]
        recent = await poller(capsys, *base, "--from", str(time.time() - 300))
        assert recent.code == 0, recent.err
        # The parent is read too (it is closed, and nothing in it is recent): none of it comes.
        assert sorted(numbers(event_records(fake))) == list(range(12, 36))
        assert_parents_before_children(fake, await list_shards(kinesis, arn))
        fake.invocations.clear()
        everything = await poller(capsys, *base, "--from", str(time.time() - 900))
        assert everything.code == 0, everything.err
        assert sorted(numbers(event_records(fake))) == list(range(36))
        assert_parents_before_children(fake, await list_shards(kinesis, arn))
    shards = {shard for phase in phases.values() for shard in phase}
    assert len(shards) == 4
    assert all(f"orders {shard}:" in everything.out for shard in shards)
