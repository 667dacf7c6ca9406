"""A stored start (`checkpoints set`): "at N" and "at time T" beside the plain "after N" that
every store written before starts existed holds, in SQLite and in a lease item."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from poller.checkpoints.base import Checkpoint, decode_position, encode_position
from poller.checkpoints.lease_items import lease_update, position_of
from poller.checkpoints.sqlite import SqliteCheckpointStore

STARTS = [
    Checkpoint("17"),
    Checkpoint(None),
    Checkpoint("17", at_sequence=True),
    Checkpoint(None, at_time=1714564800.25),
]


@pytest.mark.parametrize("checkpoint", STARTS)
def test_every_position_reads_back_as_written(checkpoint: Checkpoint) -> None:
    assert decode_position(encode_position(checkpoint)) == checkpoint


def test_a_plain_number_is_the_last_record_handled_as_before() -> None:
    assert encode_position(Checkpoint("17")) == "17"
    assert decode_position("17", True) == Checkpoint("17", finished=True)


async def test_an_sqlite_file_of_an_earlier_poller_loads_and_a_start_round_trips(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteCheckpointStore(path)
    await store.put("m", "arn", "s0", Checkpoint("5"))
    await store.aclose()
    # What an earlier poller wrote: the plain sequence number in the same column.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE checkpoints SET sequence_number = '9' WHERE shard_id = 's0'")
    store = SqliteCheckpointStore(path)
    assert await store.get("m", "arn", "s0") == Checkpoint("9")
    await store.put("m", "arn", "s1", Checkpoint("3", at_sequence=True))
    await store.put("m", "arn", "s2", Checkpoint(None, at_time=1714564800.5))
    assert await store.all("m", "arn") == {
        "s0": Checkpoint("9"),
        "s1": Checkpoint("3", at_sequence=True),
        "s2": Checkpoint(None, at_time=1714564800.5),
    }
    await store.aclose()


def test_a_lease_item_holds_a_start_and_still_reads_old_items() -> None:
    old = {"sk": {"S": "shard|s0"}, "checkpoint": {"S": "12"}, "state": {"S": "open"}}
    assert position_of(old) == Checkpoint("12")
    assert position_of({**old, "checkpoint": {"S": "START"}}) == Checkpoint(None)
    _, request = lease_update(Checkpoint("12", at_sequence=True), "t", 0.0, 0, 0, "")
    stored = request["ExpressionAttributeValues"][":checkpoint"]
    assert position_of({**old, "checkpoint": stored}) == Checkpoint("12", at_sequence=True)
    at_time = {**old, "checkpoint": {"S": encode_position(Checkpoint(None, at_time=5.0))}}
    assert position_of(at_time) == Checkpoint(None, at_time=5.0)
