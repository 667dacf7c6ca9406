"""The SQLite checkpoint store: durable across reopen, isolated per mapping, safe concurrently."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from poller.aws.clients import AwsClients
from poller.checkpoints import Checkpoint, open_checkpoint_store
from poller.checkpoints.base import StoreUnusable
from poller.checkpoints.sqlite import SqliteCheckpointStore
from poller.checkpoints.sqlite_file import SCHEMA_VERSION, path_problem
from poller.config.settings import AwsSettings, CheckpointSettings

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
OTHER_STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/refunds"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCheckpointStore]:
    opened = SqliteCheckpointStore(tmp_path / "state.db")
    yield opened
    await opened.aclose()


async def test_get_of_an_unknown_shard_is_none(store: SqliteCheckpointStore) -> None:
    assert await store.get("orders", STREAM, "shardId-000000000000") is None
    assert await store.all("orders", STREAM) == {}


async def test_put_then_get_and_overwrite(store: SqliteCheckpointStore) -> None:
    await store.put("orders", STREAM, "shard-1", Checkpoint("9"))
    assert await store.get("orders", STREAM, "shard-1") == Checkpoint("9")
    await store.put("orders", STREAM, "shard-1", Checkpoint("10"))
    assert await store.get("orders", STREAM, "shard-1") == Checkpoint("10")


async def test_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"
    first = SqliteCheckpointStore(path)
    await first.put("orders", STREAM, "shard-1", Checkpoint("49650000000000000000000000001"))
    await first.put("orders", STREAM, "shard-2", Checkpoint(None))
    await first.set_mapping_started_at("orders", STREAM, 1_735_732_800.25)
    await first.aclose()

    second = SqliteCheckpointStore(path)
    try:
        assert await second.all("orders", STREAM) == {
            "shard-1": Checkpoint("49650000000000000000000000001"),
            "shard-2": Checkpoint(None),
        }
        assert await second.mapping_started_at("orders", STREAM) == 1_735_732_800.25
    finally:
        await second.aclose()


async def test_a_put_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """Another connection (as after a SIGKILL) sees the write without the store closing."""
    path = tmp_path / "state.db"
    store = SqliteCheckpointStore(path)
    await store.put("orders", STREAM, "shard-1", Checkpoint("7", finished=True))
    try:
        other = sqlite3.connect(path)
        row = other.execute(
            "SELECT sequence_number, finished FROM checkpoints WHERE shard_id = 'shard-1'"
        ).fetchone()
        modes = other.execute("PRAGMA journal_mode").fetchone()
        other.close()
        assert row == ("7", 1)
        assert modes == ("wal",)
    finally:
        await store.aclose()


async def test_finished_flag(store: SqliteCheckpointStore) -> None:
    await store.put("orders", STREAM, "parent", Checkpoint("20", finished=True))
    await store.put("orders", STREAM, "child", Checkpoint("21"))
    everything = await store.all("orders", STREAM)
    assert everything["parent"].finished
    assert not everything["child"].finished


async def test_mapping_started_at_keeps_the_first_time(store: SqliteCheckpointStore) -> None:
    assert await store.mapping_started_at("orders", STREAM) is None
    await store.set_mapping_started_at("orders", STREAM, 100.0)
    await store.set_mapping_started_at("orders", STREAM, 200.0)
    assert await store.mapping_started_at("orders", STREAM) == 100.0
    assert await store.mapping_started_at("orders", OTHER_STREAM) is None
    assert await store.mapping_started_at("refunds", STREAM) is None


async def test_two_mappings_and_two_streams_are_isolated(store: SqliteCheckpointStore) -> None:
    await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
    await store.put("audit", STREAM, "shard-1", Checkpoint("2"))
    await store.put("orders", OTHER_STREAM, "shard-1", Checkpoint("3"))
    assert await store.get("orders", STREAM, "shard-1") == Checkpoint("1")
    assert await store.get("audit", STREAM, "shard-1") == Checkpoint("2")
    assert await store.all("orders", OTHER_STREAM) == {"shard-1": Checkpoint("3")}
    assert await store.all("audit", OTHER_STREAM) == {}


async def test_concurrent_puts(store: SqliteCheckpointStore) -> None:
    async def advance(shard: str) -> None:
        for sequence in range(1, 51):
            await store.put("orders", STREAM, shard, Checkpoint(str(sequence)))

    async with anyio.create_task_group() as tg:
        for index in range(8):
            tg.start_soon(advance, f"shard-{index}")
    assert await store.all("orders", STREAM) == {
        f"shard-{index}": Checkpoint("50") for index in range(8)
    }


async def test_schema_version_is_recorded_and_a_newer_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteCheckpointStore(path)
    await store.get("orders", STREAM, "shard-1")
    await store.aclose()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    with db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    newer = SqliteCheckpointStore(path)
    with pytest.raises(StoreUnusable, match="newer poller"):
        await newer.get("orders", STREAM, "shard-1")
    await newer.aclose()


async def test_open_checkpoint_store_picks_the_backend(tmp_path: Path) -> None:
    store = open_checkpoint_store(CheckpointSettings(path=str(tmp_path / "x.db")))
    await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
    assert await store.get("orders", STREAM, "shard-1") == Checkpoint("1")
    await store.aclose()
    leases = CheckpointSettings(backend="dynamodb", table="poller-leases")
    with pytest.raises(ValueError, match="AWS clients"):
        open_checkpoint_store(leases)
    assert type(open_checkpoint_store(leases, AwsClients(AwsSettings()))).__name__ == (
        "DynamoDBCheckpointStore"
    )


# --- a path that cannot hold the checkpoints: named, with what to do, never a traceback -------


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n")
    return path


def _another_programs_database(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER)")
    db.close()
    return path


@pytest.mark.parametrize(
    ("make_path", "expected"),
    [
        (lambda tmp: Path("/proc/poller-state.db"), "cannot create files in /proc"),
        (lambda tmp: Path("/proc/poller/state.db"), "cannot create files in /proc"),
        (_not_a_database, "not a poller checkpoint file (not an SQLite database)"),
        (_another_programs_database, "an SQLite database of another program (tables users)"),
        (lambda tmp: tmp, "a directory, not a file; name a file in it"),
    ],
    ids=["proc", "proc-subdirectory", "text-file", "foreign-database", "directory"],
)
async def test_an_unusable_path_is_named_with_what_to_do(
    tmp_path: Path, make_path: Any, expected: str
) -> None:
    path = make_path(tmp_path)
    before = listing(tmp_path)
    problem = path_problem(str(path))
    assert problem is not None and expected in problem
    assert "point checkpoints.path at" in problem or "name a file" in problem
    assert listing(tmp_path) == before  # the check changed nothing
    store = SqliteCheckpointStore(path)
    with pytest.raises(StoreUnusable) as raised:
        await store.get("orders", STREAM, "shard-1")
    await store.aclose()
    assert str(raised.value).startswith(f"checkpoints.path {str(path)!r}: ")
    assert expected in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert listing(tmp_path) == before  # nor did opening it, refused


async def test_usable_paths_have_no_problem(tmp_path: Path) -> None:
    assert path_problem(str(tmp_path / "new" / "dir" / "state.db")) is None
    assert not (tmp_path / "new").exists()  # checking creates no directory
    empty = tmp_path / "empty.db"
    empty.touch()
    assert path_problem(str(empty)) is None
    existing = tmp_path / "state.db"
    store = SqliteCheckpointStore(existing)
    await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
    assert path_problem(str(existing)) is None  # while the store has it open
    await store.aclose()
    assert path_problem(str(existing)) is None
    # The store's lock file stays: only a live process's flock on it means anything; its
    # marker stays too: it says a store was there (see test_checkpoint_guard.py).
    assert listing(tmp_path) == ["empty.db", "state.db", "state.db.lock", "state.db.marker"]
