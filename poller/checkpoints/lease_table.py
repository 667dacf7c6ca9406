"""The lease table: its item layout and every call poller makes on it, created or checked first.

One table serves every mapping and stream; `pk` (`{mapping}|{stream ARN}`) keeps them apart,
and one strongly consistent Query reads everything a mapping's lease loop needs. Its items, by
`sk`:

- `shard|{shard id}`: the shard's lease: owner, token, counter, checkpoint, state
  (`open`/`finished`), parent shard ids; with an open tumbling window, also its start
  (`window_start`) and either its state inline (`window_state`, binary) or how many chunk items
  hold it (`window_chunks`) and the id of that write (`window_id`);
- `replica|{id}`: one replica's heartbeat for that mapping: counter, host, pid, stopping;
- `started`: the mapping's first start (where its LATEST shards start);
- `window|{shard id}|{n}`: chunk n (from 0) of a window state too large for the lease item
  (`data`, binary; `window_id`, the write it belongs to).

Chunk items sort after every other item of the partition ("window|" > "started" > "shard|" >
"replica|"), so the lease loop's Query stops below them and never reads them.

Every write that depends on who owns a lease is a conditional write: taking one on the counter
last read, renewing, checkpointing and releasing on the token the take wrote. A token changes
on every take, so a replica that lost a lease can never move the new owner's checkpoint, even
after taking the same lease back. A checkpoint whose window state is chunked, or replaces one
that was, is one TransactWriteItems: the lease item's update (under the token) with the chunk
items written and the left-over ones deleted, so the position and its state move together or
not at all.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from poller.aws.clients import AwsClients
from poller.checkpoints.base import Checkpoint
from poller.checkpoints.lease_items import (
    CONFLICT_PAUSES,
    LEASE_LOOP_ATTRIBUTES,
    START,
    WINDOW_PREFIX,
    Item,
    attribute_names,
    chunk_writes,
    chunked,
    chunks_named,
    is_conditional_failure,
    is_conflict,
    lease_update,
    replica_key,
    shard_key,
)
from poller.checkpoints.lease_schema import ensure_table

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        QueryInputTypeDef,
        TransactWriteItemTypeDef,
    )

T = TypeVar("T")

log = logging.getLogger("poller.leases")


class LeaseTable:
    """The lease table's calls, each expression in one place; created or checked on first use."""

    def __init__(self, clients: AwsClients, name: str, *, request_timeout: float) -> None:
        self.name = name
        self._clients = clients
        self._timeout = request_timeout
        self._client: DynamoDBClient | None = None
        self._lock = anyio.Lock()

    async def client(self) -> DynamoDBClient:
        """The DynamoDB client, once the table exists, is ACTIVE and has poller's key schema."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                client = await self._clients.client("dynamodb", read_timeout=self._timeout)
                await ensure_table(client, self.name)
                self._client = client
        return self._client

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, pk: str, sk: str) -> Item | None:
        """One item, strongly consistent."""
        client = await self.client()
        answer = await client.get_item(
            TableName=self.name, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        )
        item: Item | None = answer.get("Item")
        return item

    async def query(self, pk: str) -> list[Item]:
        """Every item of one partition, strongly consistent, following pagination."""
        return await self._query(
            {
                "TableName": self.name,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": pk}},
                "ConsistentRead": True,
            }
        )

    async def lease_loop_items(self, pk: str) -> list[Item]:
        """What the lease loop reads of one partition: every item but window chunks (the Query
        stops below them), without window states."""
        return await self._query(
            {
                "TableName": self.name,
                "KeyConditionExpression": "pk = :pk AND sk < :chunks",
                "ProjectionExpression": ", ".join(f"#{name}" for name in LEASE_LOOP_ATTRIBUTES),
                "ExpressionAttributeNames": attribute_names(*LEASE_LOOP_ATTRIBUTES),
                "ExpressionAttributeValues": {":pk": {"S": pk}, ":chunks": {"S": WINDOW_PREFIX}},
                "ConsistentRead": True,
            }
        )

    async def window_chunks(self, pk: str, shard_id: str) -> dict[str, Item]:
        """A shard's window chunk items, by `sk`, strongly consistent."""
        items = await self._query(
            {
                "TableName": self.name,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "ExpressionAttributeValues": {
                    ":pk": {"S": pk},
                    # The closing "|" keeps shard-1 from reading shard-10's chunks.
                    ":prefix": {"S": f"{WINDOW_PREFIX}{shard_id}|"},
                },
                "ConsistentRead": True,
            }
        )
        return {str(item["sk"]["S"]): item for item in items}

    async def _query(self, request: QueryInputTypeDef) -> list[Item]:
        client = await self.client()
        items: list[Item] = []
        while True:
            answer = await client.query(**request)
            items.extend(answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return items
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- writes --------------------------------------------------------------------------------

    async def _update(self, pk: str, sk: str, expression: str, **kwargs: Any) -> Item:
        client = await self.client()
        answer = await _conflicts_retried(
            lambda: client.update_item(
                TableName=self.name,
                Key={"pk": {"S": pk}, "sk": {"S": sk}},
                UpdateExpression=expression,
                **kwargs,
            )
        )
        attributes: Item = answer.get("Attributes", {})
        return attributes

    async def _transact(self, actions: Sequence[Mapping[str, Any]]) -> None:
        client = await self.client()
        items = cast("list[TransactWriteItemTypeDef]", list(actions))
        # botocore fills in ClientRequestToken, so its own retries of one call are idempotent.
        await _conflicts_retried(lambda: client.transact_write_items(TransactItems=items))

    async def ensure_lease(self, pk: str, shard_id: str, parents: tuple[str, ...]) -> None:
        """Create a shard's lease item if missing (free, open); never touches an owner."""
        values: dict[str, Any] = {
            ":zero": {"N": "0"},
            ":open": {"S": "open"},
            ":id": {"S": shard_id},
        }
        expression = (
            "SET #counter = if_not_exists(#counter, :zero), "
            "#state = if_not_exists(#state, :open), #shard_id = :id"
        )
        names = attribute_names("counter", "state", "shard_id")
        if parents:
            expression += ", #parents = :parents"
            values[":parents"] = {"SS": list(parents)}
            names.update(attribute_names("parents"))
        await self._update(
            pk,
            shard_key(shard_id),
            expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    async def mark_start(self, pk: str, shard_id: str) -> None:
        """Give a shard with no checkpoint the START one (idempotent, needs no lease)."""
        await self._update(
            pk,
            shard_key(shard_id),
            "SET #checkpoint = if_not_exists(#checkpoint, :start), "
            "#counter = if_not_exists(#counter, :zero), #state = if_not_exists(#state, :open), "
            "#shard_id = :id",
            ExpressionAttributeNames=attribute_names("checkpoint", "counter", "state", "shard_id"),
            ExpressionAttributeValues={
                ":start": {"S": START},
                ":zero": {"N": "0"},
                ":open": {"S": "open"},
                ":id": {"S": shard_id},
            },
        )

    async def take(
        self, pk: str, shard_id: str, *, counter: int, owner: str, token: str, now: float
    ) -> Item:
        """Own a lease if its counter is still the one read; the item as it is now."""
        return await self._update(
            pk,
            shard_key(shard_id),
            "SET #owner = :owner, #token = :token, #counter = :next, #renewed_at = :now",
            ConditionExpression="#counter = :counter",
            ExpressionAttributeNames=attribute_names("owner", "token", "counter", "renewed_at"),
            ExpressionAttributeValues={
                ":owner": {"S": owner},
                ":token": {"S": token},
                ":counter": {"N": str(counter)},
                ":next": {"N": str(counter + 1)},
                ":now": {"N": f"{now:.3f}"},
            },
            ReturnValues="ALL_NEW",
        )

    async def renew(self, pk: str, shard_id: str, token: str, now: float) -> None:
        """Move the counter of a lease still held under `token`."""
        await self._update_held(
            pk,
            shard_id,
            token,
            "SET #renewed_at = :now ADD #counter :one",
            ("counter", "renewed_at"),
            {":one": {"N": "1"}, ":now": {"N": f"{now:.3f}"}},
        )

    async def _update_held(
        self,
        pk: str,
        shard_id: str,
        token: str,
        expression: str,
        names: tuple[str, ...],
        values: dict[str, Any],
    ) -> None:
        """An update of a shard's lease item that applies only while it is held under `token`
        (a conditional failure otherwise)."""
        await self._update(
            pk,
            shard_key(shard_id),
            expression,
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=attribute_names("token", *names),
            ExpressionAttributeValues={":token": {"S": token}, **values},
        )

    async def checkpoint(
        self,
        pk: str,
        shard_id: str,
        token: str,
        checkpoint: Checkpoint,
        now: float,
        *,
        chunks_before: int = 0,
    ) -> int:
        """Store a checkpoint and its window, only while the lease is still held under `token`;
        how many chunk items its window state takes now.

        `chunks_before` is how many the lease item is believed to name (what the last write or
        read of it said): the write is conditional on that too, and a wrong belief (a takeover,
        a write whose answer was lost) is corrected by reading the item and writing again. A
        refusal because the lease is not held is a conditional failure (nothing was written).
        """
        chunks = chunked(checkpoint)
        key = {"pk": {"S": pk}, "sk": {"S": shard_key(shard_id)}}

        async def write(before: int) -> None:
            # One UpdateItem of the lease item when no chunk item is written or deleted, else
            # a transaction of that update, the chunks' Puts and the left-overs' Deletes.
            window_id = secrets.token_hex(8)
            expression, update = lease_update(
                checkpoint, token, now, len(chunks), before, window_id
            )
            if not chunks and not before:
                await self._update(pk, shard_key(shard_id), expression, **update)
                return
            lease = {"TableName": self.name, "Key": key, "UpdateExpression": expression, **update}
            items = chunk_writes(self.name, pk, shard_id, chunks, before, window_id)
            await self._transact([{"Update": lease}, *items])

        try:
            await write(chunks_before)
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            named = await self._chunks_under(pk, shard_id, token)
            if named is None or named == chunks_before:
                raise  # the lease is not held under `token` (any more)
            await write(named)
        return len(chunks)

    async def _chunks_under(self, pk: str, shard_id: str, token: str) -> int | None:
        """How many chunk items the lease item names, if it is still held under `token`."""
        client = await self.client()
        answer = await client.get_item(
            TableName=self.name,
            Key={"pk": {"S": pk}, "sk": {"S": shard_key(shard_id)}},
            ProjectionExpression="#token, #window_chunks",
            ExpressionAttributeNames=attribute_names("token", "window_chunks"),
            ConsistentRead=True,
        )
        item = answer.get("Item")
        if item is None or item.get("token", {}).get("S") != token:
            return None
        return chunks_named(item)

    async def release(self, pk: str, shard_id: str, token: str) -> None:
        """Clear the owner of a lease held under `token`; moving the counter shows it free."""
        await self._update_held(
            pk,
            shard_id,
            token,
            "REMOVE #owner, #token ADD #counter :one",
            ("owner", "counter"),
            {":one": {"N": "1"}},
        )

    async def heartbeat(self, pk: str, replica: str, *, stopping: bool, now: float) -> None:
        """Move a replica's heartbeat counter (creating the item on the first beat)."""
        await self._update(
            pk,
            replica_key(replica),
            "SET #host = :host, #pid = :pid, #stopping = :stopping, #renewed_at = :now "
            "ADD #counter :one",
            ExpressionAttributeNames=attribute_names(
                "host", "pid", "stopping", "renewed_at", "counter"
            ),
            ExpressionAttributeValues={
                ":host": {"S": socket.gethostname()},
                ":pid": {"N": str(os.getpid())},
                ":stopping": {"BOOL": stopping},
                ":now": {"N": f"{now:.3f}"},
                ":one": {"N": "1"},
            },
        )

    async def delete(self, pk: str, sk: str, *, counter: int | None = None) -> None:
        """Delete an item; with `counter`, only if it still has that counter."""
        client = await self.client()
        condition: dict[str, Any] = {}
        if counter is not None:
            condition = {
                "ConditionExpression": "#counter = :counter",
                "ExpressionAttributeNames": attribute_names("counter"),
                "ExpressionAttributeValues": {":counter": {"N": str(counter)}},
            }
        await client.delete_item(
            TableName=self.name, Key={"pk": {"S": pk}, "sk": {"S": sk}}, **condition
        )

    async def start_once(self, pk: str, at: float) -> None:
        """Record the mapping's first start unless one is stored."""
        client = await self.client()
        try:
            await client.put_item(
                TableName=self.name,
                Item={"pk": {"S": pk}, "sk": {"S": "started"}, "started_at": {"N": repr(at)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise


async def _conflicts_retried(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, sent again after a short pause while it meets a transaction in progress on its
    item (a lease renewed while its checkpoint transaction runs, say): nothing was written."""
    for pause in CONFLICT_PAUSES:
        try:
            return await call()
        except Exception as exc:
            if not is_conflict(exc):
                raise
        await anyio.sleep(pause * random.uniform(0.5, 1.5))
    return await call()
