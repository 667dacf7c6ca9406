"""The embedded checkpoint store: one SQLite file, WAL, every write durable before it returns.

sqlite3 calls block, so each runs in a worker thread; one connection and a lock serialise them
(sqlite3 connections are not safe for concurrent use from several threads). WAL with
synchronous=FULL makes each committed transaction survive a power cut or SIGKILL, which is what
lets a shard move on the moment `put` returns (killing the daemon loses no record).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from poller.checkpoints.base import AllShards, Checkpoint
from poller.engine.lifecycle import Shutdown
from poller.ops.status import MappingStatus

T = TypeVar("T")

SCHEMA_VERSION = 1

# Each entry takes the schema from version N-1 to N; future migrations append here.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE checkpoints (
        mapping TEXT NOT NULL,
        stream_arn TEXT NOT NULL,
        shard_id TEXT NOT NULL,
        sequence_number TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (mapping, stream_arn, shard_id)
    ) WITHOUT ROWID;
    CREATE TABLE mapping_starts (
        mapping TEXT NOT NULL,
        stream_arn TEXT NOT NULL,
        started_at REAL NOT NULL,
        PRIMARY KEY (mapping, stream_arn)
    ) WITHOUT ROWID;
    """,
)


class SqliteCheckpointStore:
    """CheckpointStore on a local SQLite file (the default `checkpoints.backend`)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._connection: sqlite3.Connection | None = None
        # A thread lock, not an anyio one: it guards the connection inside worker threads,
        # and `_open` may run from any of them.
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------------------

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        """The shard's checkpoint, or None if it never had one."""

        def read(db: sqlite3.Connection) -> Checkpoint | None:
            row = db.execute(
                "SELECT sequence_number, finished FROM checkpoints "
                "WHERE mapping = ? AND stream_arn = ? AND shard_id = ?",
                (mapping, stream_arn, shard_id),
            ).fetchone()
            return None if row is None else Checkpoint(row[0], bool(row[1]))

        return await self._run(read)

    async def put(
        self, mapping: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint
    ) -> None:
        """Store the shard's checkpoint; committed (fsynced) before it returns."""

        def write(db: sqlite3.Connection) -> None:
            # One statement in autocommit mode: its own transaction, committed on return.
            db.execute(
                "INSERT INTO checkpoints (mapping, stream_arn, shard_id, sequence_number, "
                "finished, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (mapping, stream_arn, shard_id) DO UPDATE SET "
                "sequence_number = excluded.sequence_number, "
                "finished = excluded.finished, updated_at = excluded.updated_at",
                (
                    mapping,
                    stream_arn,
                    shard_id,
                    checkpoint.sequence_number,
                    int(checkpoint.finished),
                    time.time(),
                ),
            )

        await self._run_shielded(write)

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard checkpoint of one mapping on one stream, by shard id."""

        def read(db: sqlite3.Connection) -> dict[str, Checkpoint]:
            rows = db.execute(
                "SELECT shard_id, sequence_number, finished FROM checkpoints "
                "WHERE mapping = ? AND stream_arn = ?",
                (mapping, stream_arn),
            ).fetchall()
            return {row[0]: Checkpoint(row[1], bool(row[2])) for row in rows}

        return await self._run(read)

    async def mapping_started_at(self, mapping: str, stream_arn: str) -> float | None:
        """When the mapping first started on this stream (epoch seconds), or None."""

        def read(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT started_at FROM mapping_starts WHERE mapping = ? AND stream_arn = ?",
                (mapping, stream_arn),
            ).fetchone()
            return None if row is None else float(row[0])

        return await self._run(read)

    async def set_mapping_started_at(self, mapping: str, stream_arn: str, at: float) -> None:
        """Record the first start time; a time already stored is kept (it is the first)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO mapping_starts (mapping, stream_arn, started_at) "
                "VALUES (?, ?, ?) ON CONFLICT (mapping, stream_arn) DO NOTHING",
                (mapping, stream_arn, at),
            )

        await self._run_shielded(write)

    def leases(
        self, mapping: str, stream_arn: str, status: MappingStatus, shutdown: Shutdown
    ) -> AllShards:
        """One instance reads every shard: a local file has no other readers."""
        return AllShards()

    async def aclose(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""

        def close() -> None:
            with self._lock:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                return work(self._open())

        return await anyio.to_thread.run_sync(call)

    async def _run_shielded(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # A write cancelled mid-way would still commit in its thread while the caller believes
        # it failed; shielding keeps what the caller sees equal to what is on disk.
        with anyio.CancelScope(shield=True):
            result = await self._run(work)
        return result

    def _open(self) -> sqlite3.Connection:
        """The connection, opened and migrated on first use (called with the lock held)."""
        if self._connection is not None:
            return self._connection
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each write is one statement in its own implicit transaction
        # (migrations BEGIN explicitly);
        # check_same_thread=False: the lock, not the thread, owns the connection.
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            _migrate(db)
        except BaseException:
            db.close()
            raise
        self._connection = db
        return db


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the file's schema to SCHEMA_VERSION, one migration per transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT version FROM schema_version").fetchone()
    current = 0 if row is None else int(row[0])
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"checkpoint file was written by a newer poller (schema {current}, this one knows "
            f"{SCHEMA_VERSION}); upgrade poller or point checkpoints.path at another file"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
