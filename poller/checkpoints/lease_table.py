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
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import error_code
from poller.checkpoints.base import Checkpoint, StoreUnusable

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        KeySchemaElementTypeDef,
        QueryInputTypeDef,
        TableDescriptionTypeDef,
        TransactWriteItemTypeDef,
    )

T = TypeVar("T")

log = logging.getLogger("poller.leases")

Item = Mapping[str, Any]

KEY_SCHEMA: tuple[KeySchemaElementTypeDef, ...] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)
# The checkpoint of a shard that existed at the mapping's first start and has no position yet:
# the mapping's starting_position applies to it.
START = "START"
CONDITION_FAILED = "ConditionalCheckFailedException"
_ACTIVE_WAIT = 300.0

WINDOW_PREFIX = "window|"
# A window state up to this size stays in its lease item (written with one UpdateItem); a
# larger one goes to chunk items. The lease item keeps room for its other attributes and key.
INLINE_STATE_BYTES = 300 * 1024
# One chunk item's state bytes: under DynamoDB's 400 KB item limit with room for the item's key
# (a pk may take 2,048 bytes) and attribute names.
CHUNK_BYTES = 384_000
# The most chunks a state may take (3 MB, thrice the engine's 1 MiB cap): the transaction then
# writes and deletes at most this many chunk items besides the lease item, well within
# TransactWriteItems' 100 actions and 4 MB.
MAX_CHUNKS = 8
# The window attributes of a lease item (a checkpoint without a window removes them all).
_WINDOW_ATTRIBUTES = ("window_start", "window_state", "window_chunks", "window_id")
# What the lease loop reads of each item (leases._parse): everything but window states.
LEASE_LOOP_ATTRIBUTES = ("sk", "counter", "owner", "state", "checkpoint", "parents", "stopping")
# A write meeting a transaction in progress on its item (or a transaction meeting a write) is
# refused and may be sent again at once; these are the pauses before each new attempt.
_CONFLICT_PAUSES = (0.02, 0.05, 0.1)
TRANSACTION_CONFLICT = "TransactionConflictException"
TRANSACTION_CANCELED = "TransactionCanceledException"


class LeaseTableError(StoreUnusable):
    """The lease table cannot be used as it is; the message names it and says what to do."""


def replica_id() -> str:
    """hostname-pid-random: unique per process, and readable on /status and in the table."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def partition(mapping: str, stream_arn: str) -> str:
    """The `pk` of one mapping on one stream."""
    return f"{mapping}|{stream_arn}"


def shard_key(shard_id: str) -> str:
    """The `sk` of a shard's lease."""
    return f"shard|{shard_id}"


def replica_key(replica: str) -> str:
    """The `sk` of a replica's heartbeat."""
    return f"replica|{replica}"


def window_key(shard_id: str, n: int) -> str:
    """The `sk` of chunk `n` of a shard's window state."""
    return f"{WINDOW_PREFIX}{shard_id}|{n}"


def _cancellation_codes(exc: BaseException) -> list[str]:
    """The reason of each action of a cancelled transaction ("None" for the ones that passed)."""
    if error_code(exc) != TRANSACTION_CANCELED:
        return []
    response: Mapping[str, Any] = getattr(exc, "response", {})
    return [str(reason.get("Code")) for reason in response.get("CancellationReasons", [])]


def is_conditional_failure(exc: BaseException) -> bool:
    """Whether a write (or a transaction) was refused because its condition did not hold."""
    if error_code(exc) == CONDITION_FAILED:
        return True
    return "ConditionalCheckFailed" in _cancellation_codes(exc)


def _is_conflict(exc: BaseException) -> bool:
    """Whether a write met a transaction on its item (or a transaction a write): nothing was
    written, and the same request may be sent again."""
    if error_code(exc) == TRANSACTION_CONFLICT:
        return True
    codes = _cancellation_codes(exc)
    return "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes


class TornWindow(Exception):
    """A lease item's window state is chunked and the chunk items read are not all of the write
    the lease item names: a write came between the reads (read again)."""


def chunks_named(item: Item) -> int:
    """How many chunk items a lease item's window state takes (0: inline, or no window)."""
    return int(item.get("window_chunks", {}).get("N", "0"))


def position_of(item: Item) -> Checkpoint | None:
    """A lease item's checkpoint without its window; None when the shard never had one (it
    starts at the horizon)."""
    stored = item.get("checkpoint", {}).get("S")
    if stored is None:
        return None
    finished = item.get("state", {}).get("S") == "finished"
    return Checkpoint(None if stored == START else stored, finished)


def checkpoint_of(item: Item, chunks: Mapping[str, Item]) -> Checkpoint | None:
    """A lease item's checkpoint with its open window, whose state is inline or put together
    from `chunks` (chunk items by `sk`; others are ignored). Raises TornWindow when the chunks
    the lease item names are not all there, of the same write."""
    position = position_of(item)
    start = item.get("window_start", {}).get("N")
    if position is None or start is None:
        return position
    count = chunks_named(item)
    state: bytes | None
    if count:
        shard_id = str(item["sk"]["S"]).removeprefix("shard|")
        written = item.get("window_id", {}).get("S")
        parts = [chunks.get(window_key(shard_id, n)) for n in range(count)]
        if written is None or any(
            part is None or part.get("window_id", {}).get("S") != written for part in parts
        ):
            raise TornWindow(f"shard {shard_id}: window chunks of another write than {written}")
        state = b"".join(bytes(part["data"]["B"]) for part in parts if part is not None)
    else:
        inline = item.get("window_state", {}).get("B")
        state = None if inline is None else bytes(inline)
    return replace(position, window_start=int(start), window_state=state)


def _chunked(checkpoint: Checkpoint) -> list[bytes]:
    """The chunks a checkpoint's window state is written in; none when it fits inline."""
    state = checkpoint.window_state
    if checkpoint.window_start is None or state is None or len(state) <= INLINE_STATE_BYTES:
        return []
    if len(state) > MAX_CHUNKS * CHUNK_BYTES:
        raise ValueError(
            f"a window state of {len(state)} bytes is over the lease table's "
            f"{MAX_CHUNKS * CHUNK_BYTES} (the engine caps states at 1 MiB)"
        )
    return [state[at : at + CHUNK_BYTES] for at in range(0, len(state), CHUNK_BYTES)]


def _lease_update(
    checkpoint: Checkpoint,
    token: str,
    now: float,
    chunks: int,
    chunks_before: int,
    window_id: str,
) -> tuple[str, dict[str, Any]]:
    """The lease item's part of a checkpoint write, its UpdateExpression and the rest of the
    request (condition, names, values): the position, and the window inline, chunked (`chunks`
    items of write `window_id`) or removed; conditional on `token` and on the `chunks_before`
    it names."""
    sets = {"checkpoint": ":checkpoint", "state": ":state", "updated_at": ":now"}
    values: dict[str, Any] = {
        ":checkpoint": {"S": checkpoint.sequence_number or START},
        ":state": {"S": "finished" if checkpoint.finished else "open"},
        ":now": {"N": f"{now:.3f}"},
        ":token": {"S": token},
    }
    if checkpoint.window_start is not None:
        sets["window_start"] = ":window_start"
        values[":window_start"] = {"N": str(checkpoint.window_start)}
        if chunks:
            sets.update(window_chunks=":chunks", window_id=":window_id")
            values.update({":chunks": {"N": str(chunks)}, ":window_id": {"S": window_id}})
        elif checkpoint.window_state is not None:
            sets["window_state"] = ":window_state"
            values[":window_state"] = {"B": checkpoint.window_state}
    removes = [name for name in _WINDOW_ATTRIBUTES if name not in sets]
    condition = "#token = :token AND attribute_not_exists(#window_chunks)"
    if chunks_before:
        condition = "#token = :token AND #window_chunks = :chunks_before"
        values[":chunks_before"] = {"N": str(chunks_before)}
    expression = "SET " + ", ".join(f"#{name} = {value}" for name, value in sets.items())
    if removes:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in removes)
    return expression, {
        "ConditionExpression": condition,
        "ExpressionAttributeNames": _names(*sets, *removes, "token", "window_chunks"),
        "ExpressionAttributeValues": values,
    }


def _chunk_writes(
    table: str, pk: str, shard_id: str, chunks: Sequence[bytes], before: int, window_id: str
) -> list[dict[str, Any]]:
    """The transaction's actions on chunk items: a Put of each chunk (of write `window_id`),
    a Delete of each of the `before` chunks left over beyond them."""
    actions: list[dict[str, Any]] = []
    for n, chunk in enumerate(chunks):
        item: dict[str, Any] = {"pk": {"S": pk}, "sk": {"S": window_key(shard_id, n)}}
        item.update(data={"B": chunk}, window_id={"S": window_id})
        actions.append({"Put": {"TableName": table, "Item": item}})
    for n in range(len(chunks), before):
        key = {"pk": {"S": pk}, "sk": {"S": window_key(shard_id, n)}}
        actions.append({"Delete": {"TableName": table, "Key": key}})
    return actions


def _names(*names: str) -> dict[str, str]:
    # Every attribute goes through a placeholder: OWNER, STATE and others are reserved words.
    return {f"#{name}": name for name in names}


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
                await self._ensure(client)
                self._client = client
        return self._client

    async def _ensure(self, client: DynamoDBClient) -> None:
        try:
            table = (await client.describe_table(TableName=self.name))["Table"]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            table = await self._create(client)
        with anyio.move_on_after(_ACTIVE_WAIT):
            while table.get("TableStatus", "ACTIVE") != "ACTIVE":
                await anyio.sleep(1.0)
                table = (await client.describe_table(TableName=self.name))["Table"]
        if table.get("TableStatus", "ACTIVE") != "ACTIVE":
            raise LeaseTableError(
                f"checkpoints.table {self.name}: still {table['TableStatus']} after "
                f"{_ACTIVE_WAIT:.0f}s; check the table in the DynamoDB console"
            )
        self._check(table)

    async def _create(self, client: DynamoDBClient) -> TableDescriptionTypeDef:
        try:
            answer = await client.create_table(
                TableName=self.name,
                KeySchema=list(KEY_SCHEMA),
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
            log.info("created the lease table %s (on-demand billing)", self.name)
            return answer["TableDescription"]
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            # Another replica created it first: wait for it like for any table.
            return (await client.describe_table(TableName=self.name))["Table"]

    def _check(self, table: TableDescriptionTypeDef) -> None:
        keys = {(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])}
        types = {
            a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])
        }
        expected = {(k["AttributeName"], k["KeyType"]) for k in KEY_SCHEMA}
        if keys != expected or types.get("pk") != "S" or types.get("sk") != "S":
            found = ", ".join(
                f"{name} ({kind}, {types.get(name, '?')})" for name, kind in sorted(keys)
            )
            raise LeaseTableError(
                f"checkpoints.table {self.name}: its key is {found or 'unknown'}, not a poller "
                "lease table's (pk: S, HASH; sk: S, RANGE); set checkpoints.table to a new name "
                "(poller creates the table) or delete this table"
            )

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
                "ExpressionAttributeNames": _names(*LEASE_LOOP_ATTRIBUTES),
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
        names = _names("counter", "state", "shard_id")
        if parents:
            expression += ", #parents = :parents"
            values[":parents"] = {"SS": list(parents)}
            names.update(_names("parents"))
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
            ExpressionAttributeNames=_names("checkpoint", "counter", "state", "shard_id"),
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
            ExpressionAttributeNames=_names("owner", "token", "counter", "renewed_at"),
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
        await self._update(
            pk,
            shard_key(shard_id),
            "SET #renewed_at = :now ADD #counter :one",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=_names("token", "counter", "renewed_at"),
            ExpressionAttributeValues={
                ":token": {"S": token},
                ":one": {"N": "1"},
                ":now": {"N": f"{now:.3f}"},
            },
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
        chunks = _chunked(checkpoint)
        key = {"pk": {"S": pk}, "sk": {"S": shard_key(shard_id)}}

        async def write(before: int) -> None:
            # One UpdateItem of the lease item when no chunk item is written or deleted, else
            # a transaction of that update, the chunks' Puts and the left-overs' Deletes.
            window_id = secrets.token_hex(8)
            expression, update = _lease_update(
                checkpoint, token, now, len(chunks), before, window_id
            )
            if not chunks and not before:
                await self._update(pk, shard_key(shard_id), expression, **update)
                return
            lease = {"TableName": self.name, "Key": key, "UpdateExpression": expression, **update}
            chunk_writes = _chunk_writes(self.name, pk, shard_id, chunks, before, window_id)
            await self._transact([{"Update": lease}, *chunk_writes])

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
            ExpressionAttributeNames=_names("token", "window_chunks"),
            ConsistentRead=True,
        )
        item = answer.get("Item")
        if item is None or item.get("token", {}).get("S") != token:
            return None
        return chunks_named(item)

    async def release(self, pk: str, shard_id: str, token: str) -> None:
        """Clear the owner of a lease held under `token`; moving the counter shows it free."""
        await self._update(
            pk,
            shard_key(shard_id),
            "REMOVE #owner, #token ADD #counter :one",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=_names("owner", "token", "counter"),
            ExpressionAttributeValues={":token": {"S": token}, ":one": {"N": "1"}},
        )

    async def heartbeat(self, pk: str, replica: str, *, stopping: bool, now: float) -> None:
        """Move a replica's heartbeat counter (creating the item on the first beat)."""
        await self._update(
            pk,
            replica_key(replica),
            "SET #host = :host, #pid = :pid, #stopping = :stopping, #renewed_at = :now "
            "ADD #counter :one",
            ExpressionAttributeNames=_names("host", "pid", "stopping", "renewed_at", "counter"),
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
                "ExpressionAttributeNames": _names("counter"),
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
    for pause in _CONFLICT_PAUSES:
        try:
            return await call()
        except Exception as exc:
            if not _is_conflict(exc):
                raise
        await anyio.sleep(pause * random.uniform(0.5, 1.5))
    return await call()
