"""Shards as a listing shows them, and their lineage: a child starts only after its parents
are finished. Stores and the lease table reason about this; neither knows a stream API."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as the listing shows it; `ending_sequence` is set once the shard is closed."""

    shard_id: str
    parents: tuple[str, ...] = ()
    ending_sequence: int | None = None


def startable(
    shards: Iterable[ShardInfo], finished: Collection[str], started: Collection[str]
) -> list[ShardInfo]:
    """Shards that may start now: not started or finished, every parent finished.

    A parent the listing no longer shows was trimmed away, and counts as finished: its
    records are gone, so waiting for it would stall the child forever.
    """
    shards = list(shards)
    listed = {shard.shard_id for shard in shards}
    return [
        shard
        for shard in shards
        if shard.shard_id not in finished
        and shard.shard_id not in started
        and all(parent in finished or parent not in listed for parent in shard.parents)
    ]
