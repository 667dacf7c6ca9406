"""`poller redrive` against moto and a fake Invoke API: the invocation records a stream mapping
sent to its on-failure queue, redriven through the mapping's engine once the function is fixed;
records the stream no longer holds are reported and their invocation record left in place."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from poller.ops.commands import redrive as redrive_command
from tests.support.commands import poller
from tests.support.daemon import events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, event_records
from tests.support.queues import Queue, depth, make_queue, receive_all
from tests.support.streams import (
    dynamodb_gaps,
    make_stream,
    make_table,
    numbers,
    put_records,
    stream_yaml,
)
from tests.support.wait import eventually

FOREIGN = {
    "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
    "KinesisBatchInfo": {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": "1",
        "endSequenceNumber": "1",
        "batchSize": 1,
        "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/payments",
    },
}


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "poller.yaml"
    path.write_text(text)
    return str(path)


async def _poisoned_run(
    moto: str, kinesis: Any, sqs: Any, state: Path, fake: FakeLambda, poison: set[int]
) -> tuple[str, Queue, list[tuple[str, str]]]:
    """Put n 0..5 (batches of 3) and run the daemon until the batches holding a `poison`
    record were sent on failure and everything is checkpointed; the config text, the queue."""
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(6)])
    failed = await make_queue(sqs, "orders-failed")
    await sqs.send_message(QueueUrl=failed.url, MessageBody=json.dumps(FOREIGN))
    mapping = {
        "source": arn,
        "starting_position": "TRIM_HORIZON",
        "batch_size": 3,
        "maximum_retry_attempts": 0,
        "destination_config": {"on_failure": {"destination": failed.arn}},
    }
    text = stream_yaml(moto, fake, state, [mapping])
    async with running(settings_from(text)) as app:
        status = app.mappings[0].status
        shard, last = placed[-1]
        await eventually(
            lambda: shard in status.shards and status.shards[shard].checkpoint == last, timeout=20
        )
        assert events_total(app, "on_failure_delivered") == 3 * len({n // 3 for n in poison})
    return text, failed, placed


def _broken(poison: set[int], broken: list[bool]) -> Any:
    def handler(event: Any, info: Invocation) -> Reply:
        if broken[0] and poison & set(numbers(event["Records"])):
            return Reply.error("poison")
        return Reply.result()

    return handler


async def _bodies(sqs: Any, queue: Queue) -> list[dict[str, Any]]:
    """The invocation records visible now (received, then made visible again)."""
    messages = await receive_all(sqs, queue.url)
    for message in messages:
        await sqs.change_message_visibility(
            QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return [json.loads(message["Body"]) for message in messages]


def _ranges(bodies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    infos = [b["KinesisBatchInfo"] for b in bodies if "payments" not in json.dumps(b)]
    return sorted((i["startSequenceNumber"], i["endSequenceNumber"]) for i in infos)


async def test_redrive_of_a_poisoned_batch_once_fixed_delivers_its_records_then_deletes_it(
    moto: str, kinesis: Any, sqs: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    broken = [True]
    async with FakeLambda(_broken({1, 4}, broken)) as fake:
        text, failed, placed = await _poisoned_run(moto, kinesis, sqs, state, fake, {1, 4})
        config = _config(tmp_path, text)
        sequences = [sequence for _, sequence in placed]
        first, second = (sequences[0], sequences[2]), (sequences[3], sequences[5])
        assert _ranges(await _bodies(sqs, failed)) == [first, second]
        base = ["redrive", "-c", config, "--mapping", "orders"]

        fake.invocations.clear()
        dry = await poller(capsys, *base, "--dry-run")
        assert dry.code == 0, dry.err
        assert dry.out.count(": would be redriven") == 2 and not fake.invocations
        assert await depth(sqs, failed.url) == (3, 0)  # everything it read is visible again

        # Still broken: each batch fails again and goes on failure as a new invocation record
        # (exit 1: the records are not redriven, their new invocation record waits).
        again = await poller(capsys, *base, "--limit", "1")
        assert again.code == 1, again.err
        assert "0 delivered, 3 sent on failure again; the invocation record is deleted" in again.out
        assert len(fake.invocations) == 1
        bodies = await _bodies(sqs, failed)
        assert len(bodies) == 3 and _ranges(bodies) == [first, second]

        broken[0] = False
        fake.invocations.clear()
        fixed = await poller(capsys, *base)
        assert fixed.code == 0, fixed.err
        assert sorted(numbers(event_records(fake))) == [0, 1, 2, 3, 4, 5]
        assert fixed.out.count("3 delivered, 0 sent on failure again") == 2
        assert "redrove 2 invocation record(s) of mapping orders, 0 left in the queue" in fixed.out
        assert "1 of other mappings left as they were" in fixed.out
        # Only the other mapping's record is left, visible at once.
        assert await _bodies(sqs, failed) == [FOREIGN]


@pytest.mark.parametrize("ahead", [0, 60], ids=["clock", "local-clock-60s-ahead"])
async def test_redrive_while_the_function_still_fails_ends_with_one_new_record_per_original(
    moto: str,
    kinesis: Any,
    sqs: Any,
    state: Path,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: Any,
    ahead: float,
) -> None:
    # A local clock ahead of SQS's makes every new invocation record look sent before the
    # command started: its own new records are still told apart by the records they name.
    clock = time.time
    monkeypatch.setattr(redrive_command, "time", SimpleNamespace(time=lambda: clock() + ahead))
    broken = [True]
    poison = _broken({1, 4}, broken)
    async with FakeLambda(poison) as fake:
        text, failed, _ = await _poisoned_run(moto, kinesis, sqs, state, fake, {1, 4})
        before = await receive_all(sqs, failed.url)
        for message in before:
            await sqs.change_message_visibility(
                QueueUrl=failed.url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        originals = {m["MessageId"] for m in before if "payments" not in m["Body"]}
        ranges = _ranges([json.loads(m["Body"]) for m in before])
        fake.invocations.clear()

        def handler(event: Any, info: Invocation) -> Reply:
            # A command that redrives its own new invocation records would run on for as long
            # as the function fails: "fixed" after 20 calls, so that it ends and fails on the
            # counts below instead of hanging the test.
            broken[0] = len(fake.invocations) < 20
            return poison(event, info)

        fake.handler = handler
        ran = await poller(capsys, "redrive", "-c", _config(tmp_path, text), "--mapping", "orders")
        assert ran.code == 1, ran.err
        assert len(fake.invocations) == 2  # each original once, no --limit needed
        assert ran.out.count("0 delivered, 3 sent on failure again") == 2
        assert "redrove 2 invocation record(s) of mapping orders, 0 left in the queue" in ran.out
        after = await receive_all(sqs, failed.url)
        mine = [m for m in after if "payments" not in m["Body"]]
        assert not originals & {m["MessageId"] for m in mine}  # the originals are deleted
        assert len(mine) == 2 and _ranges([json.loads(m["Body"]) for m in mine]) == ranges


async def test_redrive_leaves_the_records_of_another_mapping_of_the_same_stream_and_queue(
    moto: str, kinesis: Any, sqs: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    placed = await put_records(kinesis, arn, [("k", {"n": n}) for n in range(3)])
    failed = await make_queue(sqs, "orders-failed")
    broken = [True]

    def handler(event: Any, info: Invocation) -> Reply:
        return Reply.error("poison") if broken[0] else Reply.result()

    common = {
        "source": arn,
        "starting_position": "TRIM_HORIZON",
        "maximum_retry_attempts": 0,
        "destination_config": {"on_failure": {"destination": failed.arn}},
    }
    async with FakeLambda(handler) as fake:
        mappings = [
            {**common, "function": "orders-fn"},
            {**common, "name": "audit", "function": "audit-fn"},
        ]
        text = stream_yaml(moto, fake, state, mappings)
        async with running(settings_from(text)) as app:
            await eventually(
                lambda: (
                    events_total(app, "on_failure_delivered")
                    + events_total(app, "on_failure_delivered", mapping="audit")
                    == 6
                ),
                timeout=20,
            )
        # Both name the same stream range; only the function that failed them differs.
        bodies = await _bodies(sqs, failed)
        functions = sorted(body["requestContext"]["functionArn"] for body in bodies)
        assert [f.rsplit(":", 1)[1] for f in functions] == ["audit-fn", "orders-fn"]
        broken[0] = False
        fake.invocations.clear()
        ran = await poller(capsys, "redrive", "-c", _config(tmp_path, text), "--mapping", "orders")
        assert ran.code == 0, ran.err
        assert {i.function_name for i in fake.invocations} == {"orders-fn"}
        assert sorted(numbers(event_records(fake))) == [0, 1, 2]
        assert "redrove 1 invocation record(s) of mapping orders" in ran.out
        assert "1 of other mappings left as they were" in ran.out
        [left] = await _bodies(sqs, failed)
        assert left["requestContext"]["functionArn"].endswith(":function:audit-fn")
        assert left["KinesisBatchInfo"]["endSequenceNumber"] == placed[-1][1]


async def test_redrive_interrupted_while_delivering_leaves_that_invocation_record_visible(
    moto: str, kinesis: Any, sqs: Any, state: Path, tmp_path: Path
) -> None:
    release = asyncio.Event()
    broken = [True]

    async def handler(event: Any, info: Invocation) -> Reply:
        if broken[0]:
            return _broken({4}, broken)(event, info)
        await release.wait()  # the redrive's delivery, in progress until the test ends it
        return Reply.result()

    async with FakeLambda(handler) as fake:
        text, failed, _ = await _poisoned_run(moto, kinesis, sqs, state, fake, {4})
        broken[0] = False
        fake.invocations.clear()
        argv = ["redrive", "-c", _config(tmp_path, text), "--mapping", "orders"]
        # A subprocess: Ctrl-C is a SIGINT to the command's process.
        with (tmp_path / "stderr").open("wb") as errors:
            proc = await anyio.open_process(
                [sys.executable, "-m", "poller", *argv], stdout=subprocess.DEVNULL, stderr=errors
            )
        try:
            await eventually(lambda: len(fake.invocations) == 1, timeout=30)
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(30):
                await proc.wait()
        finally:
            release.set()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        err = (tmp_path / "stderr").read_text()
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        # The record being redriven is visible again at once (as is the other mapping's),
        # not hidden until the command's hold on it runs out.
        assert await depth(sqs, failed.url) == (2, 0)


async def test_redrive_of_a_trimmed_range_reports_it_and_leaves_the_invocation_record(
    moto: str, kinesis: Any, sqs: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    async with FakeLambda(_broken({4}, [True])) as fake:
        text, failed, placed = await _poisoned_run(moto, kinesis, sqs, state, fake, {4})
        [record] = [b for b in await _bodies(sqs, failed) if b != FOREIGN]
        # moto never trims a stream: drop the named records from its backend, as retention
        # would (GetRecords then answers with what is left, as Kinesis does past a trim).
        from moto.kinesis.models import kinesis_backends

        shard = kinesis_backends["123456789012"]["us-east-1"].streams["orders"].shards[placed[0][0]]
        for sequence in [s for _, s in placed[3:]]:
            del shard.records[int(sequence)]
        fake.invocations.clear()
        ran = await poller(capsys, "redrive", "-c", _config(tmp_path, text), "--mapping", "orders")
        assert ran.code == 1, ran.err
        assert f"orders {placed[3][0]} {placed[3][1]}..{placed[5][1]} (3 records): no longer" in (
            ran.out
        )
        assert "redrove 0 invocation record(s) of mapping orders, 1 left in the queue" in ran.out
        assert not fake.invocations
        bodies = await _bodies(sqs, failed)
    assert sorted(map(json.dumps, bodies)) == sorted(map(json.dumps, [FOREIGN, record]))


async def test_redrive_with_endless_retries_warns_before_it_starts_but_not_on_a_dry_run(
    moto: str, kinesis: Any, sqs: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    failed = await make_queue(sqs, "orders-failed")
    async with FakeLambda() as fake:
        mapping = {  # maximum_retry_attempts: -1, the default
            "source": arn,
            "starting_position": "LATEST",
            "destination_config": {"on_failure": {"destination": failed.arn}},
        }
        text = stream_yaml(moto, fake, state, [mapping])
    base = ["redrive", "-c", _config(tmp_path, text), "--mapping", "orders"]
    ran = await poller(capsys, *base)
    assert ran.code == 0, ran.err
    assert ran.err.startswith("poller redrive: warning: mapping orders retries a failing batch")
    assert "Ctrl-C, which stops it; invocation records not redriven stay in the queue" in ran.err
    dry = await poller(capsys, *base, "--dry-run")  # invokes nothing: nothing to warn of
    assert dry.code == 0 and dry.err == ""


async def test_redrive_usage_errors_exit_2_naming_the_destination(
    moto: str, kinesis: Any, state: Path, tmp_path: Path, capsys: Any
) -> None:
    arn = await make_stream(kinesis, "orders")
    topic = "arn:aws:sns:us-east-1:123456789012:orders-failed"
    async with FakeLambda() as fake:
        text = stream_yaml(
            moto,
            fake,
            state,
            [
                {
                    "source": arn,
                    "starting_position": "LATEST",
                    "destination_config": {"on_failure": {"destination": topic}},
                },
                {"name": "plain", "source": arn, "starting_position": "LATEST"},
            ],
        )
    text += (
        '  - name: "refunds"\n'
        '    source: "arn:aws:sqs:us-east-1:123456789012:refunds"\n'
        '    target: {"type": "http", "url": "http://127.0.0.1:1/"}\n'
    )
    base = ["redrive", "-c", _config(tmp_path, text), "--mapping"]
    sns = await poller(capsys, *base, "orders")
    assert sns.code == 2 and f"{topic} is an SNS topic" in sns.err
    none = await poller(capsys, *base, "plain")
    assert none.code == 2 and "has no on-failure destination" in none.err
    queue = await poller(capsys, *base, "refunds")
    assert queue.code == 2 and "reads an SQS queue" in queue.err
    limit = await poller(capsys, *base, "orders", "--limit", "0")
    assert limit.code == 2 and "not a positive whole number" in limit.err
    for ran in (sns, none, queue, limit):
        assert "Traceback" not in ran.err


@pytest.mark.parametrize("gaps", [False, True], ids=["pages", "empty-pages-first"])
async def test_redrive_on_dynamodb_streams_delivers_the_named_records_at_their_sequence(
    moto: str,
    dynamodb: Any,
    sqs: Any,
    state: Path,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: Any,
    gaps: bool,
) -> None:
    stream = await make_table(dynamodb, "orders", "KEYS_ONLY")
    for key in ("a", "b", "c", "d"):
        await dynamodb.put_item(TableName="orders", Item={"pk": {"S": key}})
    failed = await make_queue(sqs, "orders-failed")
    broken = [True]

    def handler(event: Any, info: Invocation) -> Reply:
        keys = {r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]}
        return Reply.error("poison") if broken[0] and "c" in keys else Reply.result()

    def keys(fake: FakeLambda) -> list[str]:
        return [r["dynamodb"]["Keys"]["pk"]["S"] for r in event_records(fake)]

    async with FakeLambda(handler) as fake:
        mapping = {
            "source": stream,
            "starting_position": "TRIM_HORIZON",
            "batch_size": 2,
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": failed.arn}},
        }
        text = stream_yaml(moto, fake, state, [mapping])
        async with running(settings_from(text)) as app:
            await eventually(lambda: events_total(app, "on_failure_delivered") == 2, timeout=20)
        assert keys(fake) == ["a", "b", "c", "d"]
        [record] = await _bodies(sqs, failed)
        assert record["DDBStreamBatchInfo"]["batchSize"] == 2
        broken[0] = False
        fake.invocations.clear()
        if gaps:
            # Empty pages before each record (see dynamodb_gaps): the named ones are still there.
            dynamodb_gaps(monkeypatch, empty=3, page=1)
        argv = ["redrive", "-c", _config(tmp_path, text), "--mapping", "orders"]
        ran = await poller(capsys, *argv)
        assert ran.code == 0, ran.err
        assert keys(fake) == ["c", "d"]
        assert "2 delivered, 0 sent on failure again; the invocation record is deleted" in ran.out
        assert await _bodies(sqs, failed) == []
