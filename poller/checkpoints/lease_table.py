"""The lease table: its item layout and every call poller makes on it, created or checked first.

One table serves every mapping and stream; `pk` (`{mapping}|{stream ARN}`) keeps them apart,
and one strongly consistent Query reads everything a mapping's lease loop needs. Its items, by
`sk`:

- `shard|{shard id}`: the shard's lease: owner, token, counter, checkpoint, state
  (`open`/`finished`), parent shard ids;
- `replica|{id}`: one replica's heartbeat for that mapping: counter, host, pid, stopping;
- `started`: the mapping's first start (where its LATEST shards start).

Every write that depends on who owns a lease is a conditional write: taking one on the counter
last read, renewing, checkpointing and releasing on the token the take wrote. A token changes
on every take, so a replica that lost a lease can never move the new owner's checkpoint, even
after taking the same lease back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
    )

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


def is_conditional_failure(exc: BaseException) -> bool:
    """Whether a write was refused because its condition did not hold."""
    return error_code(exc) == CONDITION_FAILED


def checkpoint_of(item: Item) -> Checkpoint | None:
    """A lease item's checkpoint; None when the shard never had one (it starts at the horizon)."""
    stored = item.get("checkpoint", {}).get("S")
    if stored is None:
        return None
    finished = item.get("state", {}).get("S") == "finished"
    return Checkpoint(None if stored == START else stored, finished)


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
        client = await self.client()
        items: list[Item] = []
        request: QueryInputTypeDef = {
            "TableName": self.name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        while True:
            answer = await client.query(**request)
            items.extend(answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return items
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # -- writes --------------------------------------------------------------------------------

    async def _update(self, pk: str, sk: str, expression: str, **kwargs: Any) -> Item:
        client = await self.client()
        answer = await client.update_item(
            TableName=self.name,
            Key={"pk": {"S": pk}, "sk": {"S": sk}},
            UpdateExpression=expression,
            **kwargs,
        )
        attributes: Item = answer.get("Attributes", {})
        return attributes

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
        self, pk: str, shard_id: str, token: str, checkpoint: Checkpoint, now: float
    ) -> None:
        """Store a checkpoint, only while the lease is still held under `token`."""
        await self._update(
            pk,
            shard_key(shard_id),
            "SET #checkpoint = :checkpoint, #state = :state, #updated_at = :now",
            ConditionExpression="#token = :token",
            ExpressionAttributeNames=_names("checkpoint", "state", "updated_at", "token"),
            ExpressionAttributeValues={
                ":checkpoint": {"S": checkpoint.sequence_number or START},
                ":state": {"S": "finished" if checkpoint.finished else "open"},
                ":now": {"N": f"{now:.3f}"},
                ":token": {"S": token},
            },
        )

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
