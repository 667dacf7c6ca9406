"""Where stream positions live: the CheckpointStore protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's durable position.

    `sequence_number` is the last record fully handled (a reader resumes AFTER_SEQUENCE_NUMBER
    it); None means nothing handled yet. `finished` means the shard was read to its end and
    everything in it checkpointed, so its children may start.
    """

    sequence_number: str | None
    finished: bool = False


class CheckpointStore(Protocol):
    """Durable positions keyed by (mapping name, stream ARN, shard id)."""

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        """The shard's checkpoint, or None if it never had one."""
        ...

    async def put(
        self, mapping: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint
    ) -> None:
        """Store the shard's checkpoint; durable before it returns."""
        ...

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard checkpoint of one mapping on one stream, by shard id."""
        ...

    async def mapping_started_at(self, mapping: str, stream_arn: str) -> float | None:
        """When the mapping first started on this stream (epoch seconds), or None if never.

        ESM-SEMANTICS §0 "where a shard starts": a LATEST start is pinned to this time, so a
        restart before the first checkpoint resumes there instead of jumping forward.
        """
        ...

    async def set_mapping_started_at(self, mapping: str, stream_arn: str, at: float) -> None:
        """Record the first start time (kept if one is already stored); durable at once."""
        ...

    async def aclose(self) -> None:
        """Flush and release the backend."""
        ...
