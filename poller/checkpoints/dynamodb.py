"""The lease-table checkpoint store: several instances share stream shards through DynamoDB.

`DynamoDBCheckpointStore` is the CheckpointStore of `checkpoints.backend: dynamodb`; the
table's layout and calls are in `poller.checkpoints.lease_table`, the lease loop of each
mapping in `poller.checkpoints.leases`.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import anyio

from poller.aws.clients import AwsClients
from poller.checkpoints.base import Checkpoint, LeaseLost
from poller.checkpoints.lease_items import (
    WINDOW_PREFIX,
    TornWindow,
    checkpoint_of,
    chunks_named,
    is_conditional_failure,
    partition,
    replica_id,
    shard_key,
)
from poller.checkpoints.lease_table import (
    LeaseTable,
)
from poller.engine.lifecycle import Shutdown
from poller.ops.status import MappingStatus

if TYPE_CHECKING:
    from poller.checkpoints.leases import LeaseManager

# A chunked window state read while its owner rewrote it is read again, after these pauses.
_REREAD_PAUSES = (0.02, 0.05, 0.1, 0.2)


class DynamoDBCheckpointStore:
    """CheckpointStore on a DynamoDB lease table (`checkpoints.backend: dynamodb`).

    Checkpoint writes need the shard's lease: `put` on a shard this instance does not hold
    raises LeaseLost, except for the position-less START checkpoint the first start writes.
    A checkpoint's open window is written with its position, in the same write (a transaction
    when its state takes chunk items: `poller.checkpoints.lease_table`).
    """

    def __init__(
        self,
        clients: AwsClients,
        table: str,
        *,
        lease_duration: float = 10.0,
        replica: str | None = None,
    ) -> None:
        self.replica = replica or replica_id()
        self.lease_duration = lease_duration
        # A request outliving a renewal period is of no use to the lease loop.
        self.table = LeaseTable(clients, table, request_timeout=max(1.0, lease_duration / 3))
        self._managers: dict[str, LeaseManager] = {}
        # How many window chunk items each shard's lease item named when last written or read
        # here, by (pk, shard id): what the next checkpoint write expects (and corrects).
        self._chunks: dict[tuple[str, str], int] = {}

    async def get(self, mapping: str, stream_arn: str, shard_id: str) -> Checkpoint | None:
        """The shard's checkpoint, or None if it never had one; a chunked window state read
        while it was being rewritten is read again (TimeoutError if that never stops)."""
        pk = partition(mapping, stream_arn)
        for pause in _REREAD_PAUSES:
            with contextlib.suppress(TornWindow):
                return await self._read(pk, shard_id)
            await anyio.sleep(pause)
        try:
            return await self._read(pk, shard_id)
        except TornWindow:
            raise TimeoutError(
                f"mapping {mapping}: shard {shard_id}: its window state changed during each of "
                f"{len(_REREAD_PAUSES) + 1} reads (or its chunk items are missing)"
            ) from None

    async def _read(self, pk: str, shard_id: str) -> Checkpoint | None:
        """One read of a shard's checkpoint: the lease item, then the chunk items it names."""
        item = await self.table.get(pk, shard_key(shard_id))
        if item is None:
            return None
        count = chunks_named(item)
        checkpoint = checkpoint_of(
            item, await self.table.window_chunks(pk, shard_id) if count else {}
        )
        self._chunks[(pk, shard_id)] = count
        return checkpoint

    async def put(
        self, mapping: str, stream_arn: str, shard_id: str, checkpoint: Checkpoint
    ) -> None:
        """Store the shard's checkpoint under this instance's lease; LeaseLost if it is not
        (or no longer) held, in which case nothing was written."""
        pk = partition(mapping, stream_arn)
        manager = self._managers.get(pk)
        token = manager.token(shard_id) if manager is not None else None
        if token is None:
            if checkpoint.sequence_number is None and not checkpoint.finished:
                await self.table.mark_start(pk, shard_id)
                return
            raise LeaseLost(
                f"mapping {mapping}: shard {shard_id}: this instance holds no lease on it; "
                f"checkpoint {checkpoint.sequence_number} not written"
            )
        before = self._chunks.get((pk, shard_id), 0)
        try:
            self._chunks[(pk, shard_id)] = await self.table.checkpoint(
                pk, shard_id, token, checkpoint, time.time(), chunks_before=before
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            self._chunks.pop((pk, shard_id), None)
            if manager is not None:
                manager.lost(shard_id, "a checkpoint write found another owner")
            raise LeaseLost(
                f"mapping {mapping}: shard {shard_id}: the lease was taken by another instance; "
                f"checkpoint {checkpoint.sequence_number} not written"
            ) from None

    async def all(self, mapping: str, stream_arn: str) -> dict[str, Checkpoint]:
        """Every shard checkpoint of one mapping on one stream, by shard id."""
        found: dict[str, Checkpoint] = {}
        items = await self.table.query(partition(mapping, stream_arn))
        chunks = {
            item["sk"]["S"]: item for item in items if item["sk"]["S"].startswith(WINDOW_PREFIX)
        }
        for item in items:
            if item["sk"]["S"].startswith("shard|"):
                shard_id = item["sk"]["S"].removeprefix("shard|")
                try:
                    checkpoint = checkpoint_of(item, chunks)
                except TornWindow:  # its owner rewrote the window while the Query went on
                    checkpoint = await self.get(mapping, stream_arn, shard_id)
                if checkpoint is not None:
                    found[shard_id] = checkpoint
        return found

    async def mapping_started_at(self, mapping: str, stream_arn: str) -> float | None:
        """When the mapping first started on this stream (epoch seconds), or None."""
        item = await self.table.get(partition(mapping, stream_arn), "started")
        return None if item is None else float(item["started_at"]["N"])

    async def set_mapping_started_at(self, mapping: str, stream_arn: str, at: float) -> None:
        """Record the first start time; a time already stored is kept (it is the first)."""
        await self.table.start_once(partition(mapping, stream_arn), at)

    def leases(
        self, mapping: str, stream_arn: str, status: MappingStatus, shutdown: Shutdown
    ) -> LeaseManager:
        """The lease loop of one mapping on one stream (poller.checkpoints.leases)."""
        from poller.checkpoints.leases import LeaseManager

        manager = LeaseManager(
            self.table,
            mapping=mapping,
            stream_arn=stream_arn,
            replica=self.replica,
            duration=self.lease_duration,
            status=status,
            shutdown=shutdown,
        )
        self._managers[partition(mapping, stream_arn)] = manager
        return manager

    async def aclose(self) -> None:
        """Nothing to flush: every write is durable when it returns; clients close with the app."""
