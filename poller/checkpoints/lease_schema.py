"""Creating the lease table, or checking that an existing one is poller's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from poller.aws.errors import error_code
from poller.checkpoints.lease_items import ACTIVE_WAIT, LeaseTableError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        KeySchemaElementTypeDef,
        TableDescriptionTypeDef,
    )

log = logging.getLogger("poller.leases")

KEY_SCHEMA: tuple[KeySchemaElementTypeDef, ...] = (
    {"AttributeName": "pk", "KeyType": "HASH"},
    {"AttributeName": "sk", "KeyType": "RANGE"},
)


async def ensure_table(client: DynamoDBClient, name: str) -> None:
    """Create the lease table if it does not exist, wait until it is ACTIVE, and check that
    its key is poller's; LeaseTableError naming the table otherwise."""
    try:
        table = (await client.describe_table(TableName=name))["Table"]
    except Exception as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        table = await _create(client, name)
    with anyio.move_on_after(ACTIVE_WAIT):
        while table.get("TableStatus", "ACTIVE") != "ACTIVE":
            await anyio.sleep(1.0)
            table = (await client.describe_table(TableName=name))["Table"]
    if table.get("TableStatus", "ACTIVE") != "ACTIVE":
        raise LeaseTableError(
            f"checkpoints.table {name}: still {table['TableStatus']} after "
            f"{ACTIVE_WAIT:.0f}s; check the table in the DynamoDB console"
        )
    _check(table, name)


async def _create(client: DynamoDBClient, name: str) -> TableDescriptionTypeDef:
    try:
        answer = await client.create_table(
            TableName=name,
            KeySchema=list(KEY_SCHEMA),
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        log.info("created the lease table %s (on-demand billing)", name)
        return answer["TableDescription"]
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        # Another replica created it first: wait for it like for any table.
        return (await client.describe_table(TableName=name))["Table"]


def _check(table: TableDescriptionTypeDef, name: str) -> None:
    keys = {(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    expected = {(k["AttributeName"], k["KeyType"]) for k in KEY_SCHEMA}
    if keys != expected or types.get("pk") != "S" or types.get("sk") != "S":
        found = ", ".join(f"{name} ({kind}, {types.get(name, '?')})" for name, kind in sorted(keys))
        raise LeaseTableError(
            f"checkpoints.table {name}: its key is {found or 'unknown'}, not a poller "
            "lease table's (pk: S, HASH; sk: S, RANGE); set checkpoints.table to a new name "
            "(poller creates the table) or delete this table"
        )
