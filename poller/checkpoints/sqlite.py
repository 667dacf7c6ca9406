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
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from poller.aws import calls
from poller.checkpoints import guard
from poller.checkpoints.base import (
    AllShards,
    Checkpoint,
    StoreHeld,
    StoreUnavailable,
    StoreUnusable,
    decode_position,
    encode_position,
)
from poller.checkpoints.filelock import FileLock
from poller.checkpoints.sqlite_file import (
    ANOTHER_DIRECTORY,
    SCHEMA_VERSION,
    path_problem,
    schema,
    schema_problem,
)
from poller.engine.lifecycle import Shutdown
from poller.ops.status import MappingStatus

T = TypeVar("T")


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
    # 2: the open tumbling window of each shard, stored in the same row as its position.
    """
    ALTER TABLE checkpoints ADD COLUMN window_start INTEGER;
    ALTER TABLE checkpoints ADD COLUMN window_state BLOB;
    """,
)

_COLUMNS = "sequence_number, finished, window_start, window_state"


def _checkpoint(row: tuple[Any, ...]) -> Checkpoint:
    """A row of `_COLUMNS` as a Checkpoint (the position column may hold a start: "at:N")."""
    sequence, finished, start, state = row
    return decode_position(sequence, bool(finished), start, None if state is None else bytes(state))


class SqliteCheckpointStore:
    """CheckpointStore on a local SQLite file (the default `checkpoints.backend`).

    `exclusive` (the daemon's way): the first use takes the file's lock (`filelock`), kept
    until `aclose()`, so a second daemon, or `poller checkpoints set`, cannot use the file
    while this one runs; without it (reading positions) the file is read beside its owner.
    """

    def __init__(self, path: str | Path, *, exclusive: bool = True) -> None:
        self._path = str(path)
        self._file_lock = FileLock(self._path) if exclusive and self._path != ":memory:" else None
        self._connection: sqlite3.Connection | None = None
        self._identity: guard.Identity | None = None  # the file opened, to notice it swapped
        # A thread lock, not an anyio one: it guards the connection inside worker threads,
        # and `_open` may run from any of them.
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------------------

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        """The shard's checkpoint, or None if it never had one."""

        def read(db: sqlite3.Connection) -> Checkpoint | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM checkpoints "
                "WHERE mapping = ? AND stream_arn = ? AND shard_id = ?",
                (mapping, stream_arn, shard_id),
            ).fetchone()
            return None if row is None else _checkpoint(row)

        return await self._run(read)

    async def put(
        self, mapping: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint
    ) -> None:
        """Store the shard's checkpoint; committed (fsynced) before it returns."""

        def write(db: sqlite3.Connection) -> None:
            # One statement in autocommit mode: its own transaction, committed on return, so
            # a window's state and its position are never written apart.
            db.execute(
                f"INSERT INTO checkpoints (mapping, stream_arn, shard_id, {_COLUMNS}, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (mapping, stream_arn, shard_id) DO UPDATE SET "
                "sequence_number = excluded.sequence_number, finished = excluded.finished, "
                "window_start = excluded.window_start, window_state = excluded.window_state, "
                "updated_at = excluded.updated_at",
                (
                    mapping,
                    stream_arn,
                    shard_id,
                    encode_position(checkpoint),
                    int(checkpoint.finished),
                    checkpoint.window_start,
                    checkpoint.window_state,
                    time.time(),
                ),
            )

        await self._run_shielded(write)

    async def clear(self, mapping: str, stream_arn: str, shard_id: str) -> None:
        """Forget the shard's checkpoint: a reader then starts it at TRIM_HORIZON."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM checkpoints WHERE mapping = ? AND stream_arn = ? AND shard_id = ?",
                (mapping, stream_arn, shard_id),
            )

        await self._run_shielded(write)

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard checkpoint of one mapping on one stream, by shard id."""

        def read(db: sqlite3.Connection) -> dict[str, Checkpoint]:
            rows = db.execute(
                f"SELECT shard_id, {_COLUMNS} FROM checkpoints "
                "WHERE mapping = ? AND stream_arn = ?",
                (mapping, stream_arn),
            ).fetchall()
            return {row[0]: _checkpoint(row[1:]) for row in rows}

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
                if self._file_lock is not None:
                    self._file_lock.release()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                db = self._open()
                try:
                    return work(db)
                except sqlite3.Error as exc:
                    # On an open store: a disk full or gone read-only, which may pass.
                    failed = guard.failed_call(exc)
                    raise StoreUnavailable(f"checkpoints.path {self._path!r}: {failed}") from exc

        try:
            return await anyio.to_thread.run_sync(call)
        except Exception:
            calls.failed(calls.CHECKPOINT)
            raise

    async def _run_shielded(self, work: Callable[[sqlite3.Connection], T]) -> T:
        # A write cancelled mid-way would still commit in its thread while the caller believes
        # it failed; shielding keeps what the caller sees equal to what is on disk.
        with anyio.CancelScope(shield=True):
            result = await self._run(work)
        return result

    def _open(self) -> sqlite3.Connection:
        """The connection, opened and migrated on first use (called with the lock held).

        StoreUnusable, naming the path and what to do, when the file cannot be poller's store,
        is missing beside its marker, or was deleted or replaced since it was opened.
        """
        if self._connection is not None:
            guard.check_same_file(self._path, self._identity)
            return self._connection
        try:
            guard.check_not_lost(self._path)
            if self._file_lock is not None:
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                self._file_lock.acquire()
            db = _connect(self._path)
            self._identity = guard.opened(db, self._path, mark=self._file_lock is not None)
        except (OSError, sqlite3.Error, StoreUnusable) as exc:
            if self._file_lock is not None:
                self._file_lock.release(discard=True)
            if isinstance(exc, StoreHeld):
                raise StoreHeld(f"checkpoints.path {self._path!r}: {exc}") from None
            if isinstance(exc, StoreUnusable):
                problem = str(exc)
            else:
                problem = path_problem(self._path) or _open_failed(exc)
            raise StoreUnusable(f"checkpoints.path {self._path!r}: {problem}") from None
        self._connection = db
        return db


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: each write is one statement in its own implicit transaction
    # (migrations BEGIN explicitly);
    # check_same_thread=False: the lock, not the thread, owns the connection.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        # Before anything writes: another program's database is left as it was.
        tables, version = schema(db)
        problem = schema_problem(tables, version)
        if problem is not None:
            raise StoreUnusable(problem)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        _migrate(db, version or 0)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, current: int) -> None:
    """Bring the file's schema from `current` to SCHEMA_VERSION, one migration per transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
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


def _open_failed(exc: OSError | sqlite3.Error) -> str:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return (
            "locked by another process (another poller on the same file?); give each "
            "instance its own checkpoints.path, or share shards through the dynamodb backend"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot be opened ({reason}); {ANOTHER_DIRECTORY}"
