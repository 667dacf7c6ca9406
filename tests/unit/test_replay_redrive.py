"""The options of `poller replay` and `poller redrive`, the shard order a replay follows, and
what redrive reads of an invocation record."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from poller.checkpoints.lineage import ShardInfo
from poller.cli import _parser
from poller.filtering.filter_set import FilterSet
from poller.ops.commands.ranges import Progress, RangeEngine
from poller.ops.commands.redrive import Named, named_by
from poller.ops.commands.replay import lineage_order, replay_shards
from poller.sources.streams.shards import StartAt
from poller.wiring import parse_settings

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        ("2024-05-01T12:00:00", "1714564900.75", (1714564800.0, 1714564900.75)),
        ("2024-05-01T12:00:00.250Z", "2024-05-01T14:05:00+02:00", (1714564800.25, 1714565100.0)),
        ("1714564800.125", None, (1714564800.125, None)),
    ],
)
def test_replay_takes_iso_8601_with_or_without_offset_and_epoch_seconds_with_a_fraction(
    since: str, until: str | None, expected: tuple[float, float | None]
) -> None:
    argv = ["replay", "-c", "f.yaml", "--mapping", "orders", "--from", since]
    args = _parser().parse_args(argv + (["--to", until] if until else []))
    assert (args.from_, args.to) == expected
    assert args.shard is None


def _exit_code(argv: list[str], capsys: Any) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "--mapping", "orders"], "--from"),
        (["replay", "--mapping", "orders", "--from", "last tuesday"], "neither ISO 8601"),
        (["redrive", "--limit", "2"], "--mapping"),
        (["redrive", "--mapping", "orders", "--limit", "-1"], "not a positive whole number"),
        (["redrive", "--mapping", "orders", "--limit", "two"], "not a positive whole number"),
    ],
)
def test_bad_options_exit_2_saying_which(argv: list[str], says: str, capsys: Any) -> None:
    code, err = _exit_code(argv, capsys)
    assert code == 2 and says in err and "Traceback" not in err


def test_redrive_takes_a_limit_and_a_dry_run() -> None:
    args = _parser().parse_args(["redrive", "--mapping", "m", "--limit", "3", "--dry-run"])
    assert (args.limit, args.dry_run) == (3, True)


def test_parents_come_before_their_children_whatever_the_listing_order() -> None:
    listing = [
        ShardInfo("merged", ("left", "right")),
        ShardInfo("right", ("root",), 20),
        ShardInfo("left", ("root",), 19),
        ShardInfo("root", ("trimmed-away",), 10),
        ShardInfo("other"),
    ]
    order = [shard.shard_id for shard in lineage_order(listing)]
    assert sorted(order) == sorted(shard.shard_id for shard in listing)
    for child, parent in [("merged", "left"), ("merged", "right"), ("left", "root")]:
        assert order.index(parent) < order.index(child)


def _mapping() -> Any:
    text = (
        "mappings:\n"
        "  - name: orders\n"
        f"    source: {ARN}\n"
        "    starting_position: LATEST\n"
        "    target: {type: http, url: 'http://127.0.0.1:1/'}\n"
    )
    return parse_settings(text, "f.yaml").mappings[0]


def test_redrive_reads_the_shard_and_range_of_its_own_stream_only() -> None:
    info = {
        "shardId": "shardId-000000000001",
        "startSequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "endSequenceNumber": "49590338271490256608559692540925702759324208523137515618",
        "batchSize": 100,
        "streamArn": ARN,
    }
    record = json.dumps({"requestContext": {}, "KinesisBatchInfo": info})
    assert named_by(record, _mapping()) == Named(
        "shardId-000000000001", info["startSequenceNumber"], info["endSequenceNumber"], 100
    )
    other = {**info, "streamArn": ARN.replace("orders", "payments")}
    assert named_by(json.dumps({"KinesisBatchInfo": other}), _mapping()) is None
    assert named_by("not json", _mapping()) is None
    assert named_by(json.dumps({"KinesisBatchInfo": {"streamArn": ARN}}), _mapping()) is None
    garbled = {**info, "endSequenceNumber": "latest"}
    assert named_by(json.dumps({"KinesisBatchInfo": garbled}), _mapping()) is None
    # Given the function that must have failed them: only that function's records.
    arn = "arn:aws:lambda:us-east-1:123456789012:function:orders-fn"
    mine = json.dumps({"requestContext": {"functionArn": arn}, "KinesisBatchInfo": info})
    assert named_by(mine, _mapping(), arn) is not None
    assert named_by(mine, _mapping(), arn.replace("orders", "audit")) is None
    assert named_by(record, _mapping(), arn) is None  # no functionArn to match
    named = named_by(record, _mapping())
    assert named is not None and named.within(named)
    part = Named(named.shard_id, str(int(named.start) + 1), named.end, 1)
    assert part.within(named) and not named.within(part)


async def test_a_range_read_goes_on_after_a_throttle_and_an_expired_iterator() -> None:
    from tests.unit.test_shards import FakeApi, FakeShard, client_error

    shard = FakeShard(ShardInfo("s0"), [(n, "k", 1000.0 + n) for n in range(1, 8)])
    api = FakeApi([shard])
    api.max_records = 3
    api.faults = {
        2: client_error("ProvisionedThroughputExceededException"),
        3: client_error("ExpiredIteratorException"),
    }
    engine = RangeEngine(_mapping(), api, None, FilterSet.compile([]), None)  # type: ignore[arg-type]
    seen: list[int] = []
    async for taken in engine.reads(
        "s0", StartAt("AT_TIMESTAMP", timestamp=1002.0), before=lambda r: r.arrival < 1006.0
    ):
        seen.extend(record.sequence for record, _ in taken)
    assert seen == [2, 3, 4, 5]  # from 1002 (inclusive) to 1006 (exclusive), once each
    assert api.starts[-1] == ("s0", StartAt("AFTER_SEQUENCE_NUMBER", "4"))
    assert engine.tally.read == 4


class _Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_one_line_rewritten_on_a_terminal_and_nothing_elsewhere() -> None:
    terminal, piped = _Terminal(True), _Terminal(False)
    for stream in (terminal, piped):
        progress = Progress(stream)
        progress.show("s0: 10 read")
        progress.show("s0: 9")
        progress.done()
    assert terminal.getvalue() == "\rs0: 10 read\r" + "s0: 9".ljust(11) + "\r" + " " * 11 + "\r"
    assert piped.getvalue() == ""


async def test_a_shard_that_cannot_be_read_stops_the_replay_with_its_own_error() -> None:
    from botocore.exceptions import ClientError

    from tests.unit.test_shards import FakeApi, FakeShard, client_error

    shards = [FakeShard(ShardInfo(f"s{n}"), [(1, "k", 1000.0)]) for n in range(2)]
    api = FakeApi(shards)
    api.faults = {1: client_error("AccessDeniedException")}
    engine = RangeEngine(_mapping(), api, None, FilterSet.compile([]), None)  # type: ignore[arg-type]
    with pytest.raises(ClientError, match="AccessDenied"):
        await replay_shards(engine, [s.info for s in shards], 0.0, 2000.0, Progress())


def test_a_dynamodb_tip_is_a_bounded_run_of_empty_pages_and_kinesis_says_it_itself() -> None:
    from types import SimpleNamespace

    from poller.ops.commands.tip import DYNAMODB_EMPTY_READS, Tip
    from poller.sources.streams.shards import ReadResult

    empty = ReadResult(records=[], next_iterator="i", caught_up=True)
    some = ReadResult(records=[{}], next_iterator="i", caught_up=False)
    tip = Tip(SimpleNamespace(kind="dynamodb"))  # type: ignore[arg-type]
    assert [tip.reached(empty) for _ in range(DYNAMODB_EMPTY_READS - 1)] == [False] * 9
    assert not tip.reached(some)  # records start the run again
    assert [tip.reached(empty) for _ in range(DYNAMODB_EMPTY_READS)][-2:] == [False, True]
    kinesis = Tip(SimpleNamespace(kind="kinesis"))  # type: ignore[arg-type]
    assert kinesis.reached(empty) and not kinesis.reached(some)
    assert kinesis.reached(ReadResult(records=[{}], next_iterator="i", caught_up=True))
