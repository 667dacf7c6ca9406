"""An in-memory CheckpointStore: positions in a dict, every write kept in order."""

from __future__ import annotations

from typing import Any

from poller.checkpoints.base import AllShards, Checkpoint


class MemoryStore:
    """Checkpoints by shard id (one mapping, one stream); `puts` records every write."""

    def __init__(self) -> None:
        self.checkpoints: dict[str, Checkpoint] = {}
        self.started: float | None = None
        self.puts: list[tuple[str, Checkpoint]] = []  # every checkpoint written, in order

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        return self.checkpoints.get(shard_id)

    async def put(self, mapping: str, stream_arn: str, shard_id: str, cp: Checkpoint) -> None:
        self.checkpoints[shard_id] = cp
        self.puts.append((shard_id, cp))

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        return dict(self.checkpoints)

    async def mapping_started_at(self, mapping: str, stream_arn: str) -> float | None:
        return self.started

    async def set_mapping_started_at(self, mapping: str, stream_arn: str, at: float) -> None:
        self.started = self.started or at

    def leases(self, *_: Any) -> AllShards:
        """One instance reads every shard."""
        return AllShards()

    async def aclose(self) -> None:
        pass
