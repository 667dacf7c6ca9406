"""Stream positions as an operator sees and moves them (`poller checkpoints`), per backend.

A position is moved only where no live instance holds it: for SQLite, where no daemon holds the
file's lock (`filelock`); for the lease table, where the shard's lease is free or expired (its
owner stopped renewing it), and the write is conditional on the lease counter read, so a lease
taken meanwhile makes it fail instead of moving the new owner's position. A moved position
never keeps the tumbling window open at the old one. No checkpoint (None) is where a reader
starts a shard at TRIM_HORIZON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from poller.checkpoints.base import Checkpoint, StoreHeld, encode_position
from poller.checkpoints.dynamodb import DynamoDBCheckpointStore
from poller.checkpoints.lease_items import (
    START,
    WINDOW_ATTRIBUTES,
    WINDOW_PREFIX,
    Item,
    TornWindow,
    attribute_names,
    checkpoint_of,
    chunk_writes,
    chunks_named,
    is_conditional_failure,
    partition,
    position_of,
    shard_key,
)
from poller.checkpoints.sqlite import SqliteCheckpointStore

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef

    from poller.aws.clients import AwsClients
    from poller.checkpoints.base import CheckpointStore


class PositionHeld(Exception):
    """A live instance holds the position; the message says who, and until when."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One shard's stored position, with its lease when the backend has leases."""

    checkpoint: Checkpoint | None
    owner: str | None = None
    expires_at: float | None = None  # epoch seconds: when the owner's lease runs out
    counter: int | None = None  # the lease item's counter as read; None: no lease item
    chunks: int = 0  # window chunk items the lease item names


class Positions(Protocol):
    """The stored positions of one backend, read and moved by an operator."""

    leases: bool  # whether positions have owners (the lease table)

    @property
    def store(self) -> CheckpointStore:
        """The backend's checkpoint store (for what every store does; closed by the caller)."""
        ...

    async def read(self, mapping: str, stream_arn: str) -> dict[str, Stored]:
        """Every stored shard position of one mapping on one stream."""
        ...

    async def hold(self, mapping: str, stream_arn: str, shards: dict[str, Stored]) -> None:
        """PositionHeld unless `shards` may be moved now (the SQLite file is locked for the
        rest of the command)."""
        ...

    async def write(
        self, mapping: str, stream_arn: str, shard_id: str, to: Checkpoint | None, seen: Stored
    ) -> None:
        """Move the shard to `to` (None: no checkpoint); PositionHeld if taken meanwhile."""
        ...


class SqlitePositions:
    """Positions in the SQLite file; moving them needs the file's lock."""

    leases = False

    def __init__(self, path: str) -> None:
        self._path = path
        self.store: SqliteCheckpointStore = SqliteCheckpointStore(path, exclusive=False)

    async def read(self, mapping: str, stream_arn: str) -> dict[str, Stored]:
        """Every stored shard position (read beside a running daemon)."""
        stored = await self.store.all(mapping, stream_arn)
        return {shard: Stored(checkpoint) for shard, checkpoint in stored.items()}

    async def hold(self, mapping: str, stream_arn: str, shards: dict[str, Stored]) -> None:
        """Reopen the file under its lock; PositionHeld while a daemon holds it."""
        await self.store.aclose()
        locked = SqliteCheckpointStore(self._path)
        try:
            await locked.mapping_started_at(mapping, stream_arn)
        except StoreHeld as exc:
            await locked.aclose()
            raise PositionHeld(f"{exc}; stop that daemon first") from None
        self.store = locked

    async def write(
        self, mapping: str, stream_arn: str, shard_id: str, to: Checkpoint | None, seen: Stored
    ) -> None:
        """Store the position, or forget it for None."""
        if to is None:
            await self.store.clear(mapping, stream_arn, shard_id)
        else:
            await self.store.put(mapping, stream_arn, shard_id, to)


class LeaseTablePositions:
    """Positions in the lease table; a shard is moved only while its lease is free or expired."""

    leases = True

    def __init__(self, clients: AwsClients, table: str, lease_duration: float) -> None:
        self.store: DynamoDBCheckpointStore = DynamoDBCheckpointStore(
            clients, table, lease_duration=lease_duration
        )
        self._table = self.store.table
        self._duration = lease_duration

    async def read(self, mapping: str, stream_arn: str) -> dict[str, Stored]:
        """Every shard's lease item, with its position, owner and lease expiry."""
        items = await self._table.query(partition(mapping, stream_arn))
        chunks = {i["sk"]["S"]: i for i in items if i["sk"]["S"].startswith(WINDOW_PREFIX)}
        found: dict[str, Stored] = {}
        for item in items:
            if item["sk"]["S"].startswith("shard|"):
                found[item["sk"]["S"].removeprefix("shard|")] = self._stored(item, chunks)
        return found

    def _stored(self, item: Item, chunks: dict[str, Item]) -> Stored:
        try:
            checkpoint = checkpoint_of(item, chunks)
        except TornWindow:  # its owner rewrote the window meanwhile: the position is enough
            checkpoint = position_of(item)
        owner = item.get("owner", {}).get("S")
        renewed = item.get("renewed_at", {}).get("N")
        expires = None if owner is None or renewed is None else float(renewed) + self._duration
        counter = int(item.get("counter", {}).get("N", "0"))
        return Stored(checkpoint, owner, expires, counter, chunks_named(item))

    async def hold(self, mapping: str, stream_arn: str, shards: dict[str, Stored]) -> None:
        """PositionHeld for the first shard whose lease has an owner and has not expired."""
        now = time.time()
        for shard_id, stored in sorted(shards.items()):
            if stored.owner is not None and (stored.expires_at or 0) > now:
                until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.expires_at))
                raise PositionHeld(
                    f"mapping {mapping}: shard {shard_id}: leased by {stored.owner} until "
                    f"{until} (renewed while it runs); stop that instance, or wait for its lease "
                    "to expire"
                )

    async def write(
        self, mapping: str, stream_arn: str, shard_id: str, to: Checkpoint | None, seen: Stored
    ) -> None:
        """One conditional write of the lease item (with the chunk items' deletes, if any)."""
        pk = partition(mapping, stream_arn)
        values: dict[str, Any] = {":open": {"S": "open"}, ":id": {"S": shard_id}}
        sets = ["#state = :open", "#shard_id = :id"]
        removes = list(WINDOW_ATTRIBUTES)
        if to is None:
            removes.append("checkpoint")
        else:
            sets.append("#checkpoint = :checkpoint")
            values[":checkpoint"] = {"S": encode_position(to) or START}
        if seen.counter is None:
            sets.append("#counter = :zero")
            values[":zero"] = {"N": "0"}
            condition = "attribute_not_exists(#counter)"
        else:
            values[":counter"] = {"N": str(seen.counter)}
            condition = "#counter = :counter"
        update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": {"pk": {"S": pk}, "sk": {"S": shard_key(shard_id)}},
            "UpdateExpression": f"SET {', '.join(sets)} REMOVE "
            + ", ".join(f"#{name}" for name in removes),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": attribute_names(
                "state", "shard_id", "checkpoint", "counter", *WINDOW_ATTRIBUTES
            ),
            "ExpressionAttributeValues": values,
        }
        client = await self._table.client()
        try:
            if seen.chunks:
                deletes = chunk_writes(self._table.name, pk, shard_id, [], seen.chunks, "")
                actions = cast("list[TransactWriteItemTypeDef]", [{"Update": update}, *deletes])
                await client.transact_write_items(TransactItems=actions)
            else:
                await client.update_item(**update)
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            raise PositionHeld(
                f"mapping {mapping}: shard {shard_id}: its lease was taken while the position "
                "was being set; nothing was written (run the command again once it is free)"
            ) from None


def open_positions(
    backend: str, *, path: str, table: str | None, lease_duration: float, clients: AwsClients
) -> Positions:
    """The configured backend's positions."""
    if backend == "sqlite":
        return SqlitePositions(path)
    if table is None:
        raise ValueError("backend dynamodb needs checkpoints.table")
    return LeaseTablePositions(clients, table, lease_duration)
