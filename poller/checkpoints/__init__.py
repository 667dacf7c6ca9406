"""Checkpoint stores for stream mappings; `open_checkpoint_store` picks the configured backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller.checkpoints.base import (
    AllShards,
    Checkpoint,
    CheckpointStore,
    LeaseLost,
    LeaseState,
    ShardLeases,
)
from poller.config.settings import CheckpointSettings

if TYPE_CHECKING:
    from poller.aws.clients import AwsClients

__all__ = [
    "AllShards",
    "Checkpoint",
    "CheckpointStore",
    "LeaseLost",
    "LeaseState",
    "ShardLeases",
    "open_checkpoint_store",
    "store_problem",
]


def open_checkpoint_store(
    settings: CheckpointSettings, clients: AwsClients | None = None
) -> CheckpointStore:
    """The store `checkpoints:` configures. The caller awaits `aclose()` when done.

    Nothing is read or written here: the lease table is created or checked on first use.
    """
    if settings.backend == "sqlite":
        from poller.checkpoints.sqlite import SqliteCheckpointStore

        return SqliteCheckpointStore(settings.path)
    if clients is None or settings.table is None:
        raise ValueError("backend dynamodb needs AWS clients and checkpoints.table")
    from poller.checkpoints.dynamodb import DynamoDBCheckpointStore

    return DynamoDBCheckpointStore(
        clients, settings.table, lease_duration=settings.lease_duration_seconds
    )


def store_problem(settings: CheckpointSettings) -> str | None:
    """What keeps the configured store from opening, as far as it shows without AWS (a local
    file: its directory takes files, and it is poller's); None when nothing is wrong, or when
    only AWS could tell (the lease table)."""
    if settings.backend != "sqlite":
        return None
    from poller.checkpoints.sqlite_file import path_problem

    problem = path_problem(settings.path)
    return None if problem is None else f"{settings.path!r}: {problem}"
