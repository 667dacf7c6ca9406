"""The SQLite store's guard: its marker tells a lost store from a first start, and a file
deleted or replaced under an open store is noticed at the next call; a call failing on the
open file is StoreUnavailable (passing), not a crash."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from poller.checkpoints import Checkpoint
from poller.checkpoints.base import StoreUnavailable, StoreUnusable
from poller.checkpoints.guard import failed_call, lost_store_problem, marker_path
from poller.checkpoints.sqlite import SqliteCheckpointStore
from poller.checkpoints.sqlite_file import path_problem

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


async def _stored(path: Path, sequence: str = "1") -> None:
    store = SqliteCheckpointStore(path)
    try:
        await store.put("orders", STREAM, "shard-1", Checkpoint(sequence))
    finally:
        await store.aclose()


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_a_first_start_writes_the_marker_beside_the_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _stored(path)
    assert "delete both" in _read(marker_path(str(path)))
    store = SqliteCheckpointStore(path)  # a restart with both: as before
    try:
        assert await store.get("orders", STREAM, "shard-1") == Checkpoint("1")
    finally:
        await store.aclose()


async def test_a_store_missing_beside_its_marker_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _stored(path)
    _remove_store(path)
    store = SqliteCheckpointStore(path)
    with pytest.raises(StoreUnusable) as raised:
        await store.all("orders", STREAM)
    await store.aclose()
    message = str(raised.value)
    assert str(path) in message and marker_path(str(path)) in message, message
    assert "delete" in message
    assert not path.exists()  # refused before SQLite could create an empty one
    assert path_problem(str(path)) == lost_store_problem(str(path))  # `poller validate` too

    os.unlink(marker_path(str(path)))  # starting over on purpose: both gone
    store = SqliteCheckpointStore(path)
    try:
        assert await store.all("orders", STREAM) == {}
    finally:
        await store.aclose()


async def test_a_store_deleted_while_open_fails_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteCheckpointStore(path)
    try:
        await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
        _remove_store(path)
        with pytest.raises(StoreUnusable) as raised:
            await store.put("orders", STREAM, "shard-1", Checkpoint("2"))
        assert str(path) in str(raised.value) and "deleted" in str(raised.value)
    finally:
        await store.aclose()


async def test_a_store_replaced_while_open_fails_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    other = tmp_path / "other.db"
    await _stored(other, "7")
    store = SqliteCheckpointStore(path)
    try:
        await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
        os.replace(other, path)
        with pytest.raises(StoreUnusable) as raised:
            await store.get("orders", STREAM, "shard-1")
        assert str(path) in str(raised.value) and "replaced" in str(raised.value)
    finally:
        await store.aclose()


async def test_a_call_failing_on_the_open_file_is_unavailable_not_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SqliteCheckpointStore(path)
    try:
        await store.put("orders", STREAM, "shard-1", Checkpoint("1"))

        # A real SQLite error on the store's own connection: the database at its page limit
        # refuses to grow, as a full disk would (SQLITE_FULL).
        def shrink(db: sqlite3.Connection) -> None:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")

        await store._run(shrink)
        big = Checkpoint("2", window_start=1, window_state=b"x" * 100_000)
        with pytest.raises(StoreUnavailable) as raised:
            await store.put("orders", STREAM, "shard-1", big)
        message = str(raised.value)
        assert str(path) in message and "SQLITE_FULL" in message, message
        assert "free space" in message
        assert await store.get("orders", STREAM, "shard-1") == Checkpoint("1")
    finally:
        await store.aclose()


def test_failed_call_words_name_the_remedy() -> None:
    error = sqlite3.OperationalError("attempt to write a readonly database")
    error.sqlite_errorname = "SQLITE_READONLY_DBMOVED"  # type: ignore[attr-defined]
    assert "writable" in failed_call(error)
