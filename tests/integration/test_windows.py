"""Tumbling windows end to end: the daemon against moto, a function counting records per key
through its state, and the final invocation of each window carrying the exact counts."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anyio

from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess, running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply
from tests.support.streams import (
    backdate_dynamodb_records,
    backdate_kinesis_records,
    make_stream,
    make_table,
    put_records,
    reshard,
)
from tests.support.wait import eventually

WINDOW = 60
# Three windows of records, a minute apart (their arrival times moved back in moto): each
# dict is what the final invocation of its window must report.
WINDOWS = [{"a": 2, "b": 1}, {"a": 1}, {"b": 2}]


def _key(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return str(json.loads(base64.b64decode(record["kinesis"]["data"]))["key"])
    return str(record["dynamodb"]["NewImage"]["key"]["S"])


class Counter:
    """A windowed function: counts records per key in its state; keeps each final state."""

    def __init__(self) -> None:
        self.finals: list[tuple[str, dict[str, int]]] = []
        self.by_shard: dict[str, list[dict[str, Any]]] = {}  # every event, per shard

    def __call__(self, event: Any, info: Invocation) -> Any:
        self.by_shard.setdefault(event["shardId"], []).append(event)
        state = dict(event["state"])
        if event["isFinalInvokeForWindow"]:
            self.finals.append((event["window"]["start"], state))
            return {}
        for record in event["Records"]:
            state[_key(record)] = state.get(_key(record), 0) + 1
        return {"state": state}


def _keys(counts: dict[str, int]) -> list[str]:
    return [key for key, count in counts.items() for _ in range(count)]


async def _run(moto: str, state: Path, source: str, counter: Counter) -> None:
    mapping = {
        "source": source,
        "function": "windowed",
        "starting_position": "TRIM_HORIZON",
        "batch_size": 1,  # several invocations per window: the state is handed on
        "tumbling_window_in_seconds": WINDOW,
    }
    async with FakeLambda(counter) as fake:
        text = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(text)):
            await eventually(lambda: len(counter.finals) == len(WINDOWS), timeout=30)


async def test_kinesis_windows_report_exact_counts(moto: str, kinesis: Any, state: Path) -> None:
    arn = await make_stream(kinesis, "clicks")
    for counts in WINDOWS:
        await put_records(kinesis, arn, [("p", {"key": key}) for key in _keys(counts)])
        backdate_kinesis_records("clicks", WINDOW)
    backdate_kinesis_records("clicks", 5)  # the last window ended more than 2 s ago
    counter = Counter()
    await _run(moto, state, arn, counter)
    assert [counts for _, counts in counter.finals] == WINDOWS
    starts = [start for start, _ in counter.finals]
    assert starts == sorted(starts) and len(set(starts)) == 3


async def test_dynamodb_windows_report_exact_counts(moto: str, dynamodb: Any, state: Path) -> None:
    stream_arn = await make_table(dynamodb, "clicks", "NEW_IMAGE", key="id")
    arn = stream_arn
    n = 0
    for counts in WINDOWS:
        for key in _keys(counts):
            n += 1
            item = {"id": {"S": f"click-{n}"}, "key": {"S": key}}
            await dynamodb.put_item(TableName="clicks", Item=item)
        backdate_dynamodb_records("clicks", WINDOW)
    backdate_dynamodb_records("clicks", 5)
    counter = Counter()
    await _run(moto, state, arn, counter)
    assert [counts for _, counts in counter.finals] == WINDOWS


async def test_a_window_survives_sigkill_with_its_state(
    moto: str, kinesis: Any, tmp_path: Path
) -> None:
    # The daemon dies while the window's fourth invocation is in flight; the one started
    # after it resumes the window with the state stored with the third's checkpoint.
    arn = await make_stream(kinesis, "clicks")
    expected = {"a": 4, "b": 2}
    await put_records(kinesis, arn, [("p", {"key": key}) for key in ["a", "b", "a", "a", "b", "a"]])
    backdate_kinesis_records("clicks", WINDOW + 5)  # one window, ended a while ago
    counter = Counter()
    release = anyio.Event()
    calls = 0

    async def function(event: Any, info: Invocation) -> Any:
        nonlocal calls
        calls += 1
        if calls == 4:
            await release.wait()
        return counter(event, info)

    async with FakeLambda(function) as fake:
        mapping = {
            "source": arn,
            "function": "windowed",
            "starting_position": "TRIM_HORIZON",
            "batch_size": 1,
            "tumbling_window_in_seconds": WINDOW,
        }
        config = tmp_path / "poller.yaml"
        config.write_text(
            config_yaml(
                moto,
                [mapping],
                lambda_url=fake.endpoint_url,
                checkpoints={"path": str(tmp_path / "state.db")},
            )
        )
        first = DaemonProcess(config, tmp_path / "first.log")
        first.start()
        try:
            await fake.wait_for(4, timeout=30)
        finally:
            first.kill()  # SIGKILL with the fourth batch in flight
        release.set()
        second = DaemonProcess(config, tmp_path / "second.log")
        second.start()
        try:
            await eventually(lambda: counter.finals, timeout=30)
        finally:
            await second.stop(timeout=30)
    [(_, counts)] = counter.finals
    # At least once: never fewer, and more only by the batch that was in flight.
    assert all(counts.get(key, 0) >= n for key, n in expected.items()), counts
    assert sum(counts.values()) <= sum(expected.values()) + 1, counts


async def test_a_reshard_closes_the_parents_window_and_children_start_afresh(
    moto: str, kinesis: Any, state: Path
) -> None:
    arn = await make_stream(kinesis, "clicks")

    async def put(start: int) -> list[str]:
        sent = [("p", {"key": f"k{n % 2}", "n": n}) for n in range(start, start + 12)]
        return sorted({shard for shard, _ in await put_records(kinesis, arn, sent)})

    phases = await reshard(kinesis, arn, put)
    [parent], children = phases["parent"], phases["split"]
    counter = Counter()
    mapping = {
        "source": arn,
        "function": "windowed",
        "starting_position": "TRIM_HORIZON",
        "batch_size": 5,
        "tumbling_window_in_seconds": WINDOW,
    }
    async with FakeLambda(counter) as fake:
        text = config_yaml(
            moto,
            [mapping],
            lambda_url=fake.endpoint_url,
            checkpoints={"path": str(state)},
            tuning={"shard_discovery_interval_seconds": 1},
        )
        async with running(settings_from(text)):
            # The parent and both children end (split, then merged): each closes its window.
            await eventually(
                lambda: all(
                    any(e["isFinalInvokeForWindow"] for e in counter.by_shard.get(s, []))
                    for s in [parent, *children]
                ),
                timeout=30,
            )
    finals = {
        shard: next(e for e in events if e["isFinalInvokeForWindow"])
        for shard, events in counter.by_shard.items()
        if any(e["isFinalInvokeForWindow"] for e in events)
    }
    assert finals[parent]["state"] == {"k0": 6, "k1": 6}  # the parent's 12 records
    assert sum(sum(finals[c]["state"].values()) for c in children) == 12
    for child in children:
        assert counter.by_shard[child][0]["state"] == {}  # children start with a fresh state


async def test_a_failing_final_invocation_holds_the_shard_until_it_succeeds(
    moto: str, kinesis: Any, state: Path
) -> None:
    # Two windows; the first window's final invocation fails twice. Meanwhile nothing of the
    # second window reaches the function and the checkpoint stays inside the first window.
    arn = await make_stream(kinesis, "clicks")
    first = await put_records(kinesis, arn, [("p", {"key": "a"}), ("p", {"key": "b"})])
    backdate_kinesis_records("clicks", WINDOW)
    await put_records(kinesis, arn, [("p", {"key": "c"})])
    backdate_kinesis_records("clicks", WINDOW + 5)  # both windows ended a while ago
    counter = Counter()
    events: list[dict[str, Any]] = []
    checkpoints_seen: list[str | None] = []
    failures = 2

    def function(event: Any, info: Invocation) -> Any:
        nonlocal failures
        events.append(event)
        if event["isFinalInvokeForWindow"] and failures:
            failures -= 1
            shard = app.mappings[0].status.shards[event["shardId"]]
            checkpoints_seen.append(shard.checkpoint)
            return Reply.error("not yet", "RuntimeError")
        return counter(event, info)

    mapping = {
        "source": arn,
        "function": "windowed",
        "starting_position": "TRIM_HORIZON",
        "tumbling_window_in_seconds": WINDOW,
    }
    async with FakeLambda(function) as fake:
        text = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(text)) as app:
            await eventually(lambda: len(counter.finals) == 2, timeout=30)
    kinds = ["final" if e["isFinalInvokeForWindow"] else e["window"]["start"] for e in events]
    first_window, second_window = events[0]["window"]["start"], events[-1]["window"]["start"]
    # records of window 1, three finals (two failed), records of window 2, its final
    assert kinds == [first_window, "final", "final", "final", second_window, "final"]
    assert first_window != second_window
    assert checkpoints_seen == [first[-1][1], first[-1][1]]  # never past window 1 meanwhile
    assert [counts for _, counts in counter.finals] == [{"a": 1, "b": 1}, {"c": 1}]
