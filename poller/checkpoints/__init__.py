"""Checkpoint stores for stream mappings; `open_checkpoint_store` picks the configured backend."""

from __future__ import annotations

from poller.checkpoints.base import Checkpoint, CheckpointStore
from poller.config import CheckpointSettings

__all__ = ["Checkpoint", "CheckpointStore", "open_checkpoint_store"]


def open_checkpoint_store(settings: CheckpointSettings) -> CheckpointStore:
    """The store `checkpoints:` configures (SPEC §2). The caller awaits `aclose()` when done."""
    if settings.backend == "sqlite":
        from poller.checkpoints.sqlite import SqliteCheckpointStore

        return SqliteCheckpointStore(settings.path)
    raise NotImplementedError("the lease table arrives with issue 6")
