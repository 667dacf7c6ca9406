"""The lease table's items: keys, attributes, and the writes a checkpoint makes.

Pure functions over DynamoDB items (see `lease_table` for the layout and the calls): which key
an item has, what checkpoint an item holds, how a window state is cut into chunks, and the
conditional update and transaction items a checkpoint write sends.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from poller.aws.errors import error_code
from poller.checkpoints.base import Checkpoint, StoreUnusable, decode_position, encode_position

if TYPE_CHECKING:
    pass

Item = Mapping[str, Any]

# The checkpoint of a shard that existed at the mapping's first start and has no position yet:
# the mapping's starting_position applies to it.
START = "START"
CONDITION_FAILED = "ConditionalCheckFailedException"
ACTIVE_WAIT = 300.0

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
WINDOW_ATTRIBUTES = ("window_start", "window_state", "window_chunks", "window_id")
# What the lease loop reads of each item (leases._parse): everything but window states.
LEASE_LOOP_ATTRIBUTES = ("sk", "counter", "owner", "state", "checkpoint", "parents", "stopping")
# A write meeting a transaction in progress on its item (or a transaction meeting a write) is
# refused and may be sent again at once; these are the pauses before each new attempt.
CONFLICT_PAUSES = (0.02, 0.05, 0.1)
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


def cancellation_codes(exc: BaseException) -> list[str]:
    """The reason of each action of a cancelled transaction ("None" for the ones that passed)."""
    if error_code(exc) != TRANSACTION_CANCELED:
        return []
    response: Mapping[str, Any] = getattr(exc, "response", {})
    return [str(reason.get("Code")) for reason in response.get("CancellationReasons", [])]


def is_conditional_failure(exc: BaseException) -> bool:
    """Whether a write (or a transaction) was refused because its condition did not hold."""
    if error_code(exc) == CONDITION_FAILED:
        return True
    return "ConditionalCheckFailed" in cancellation_codes(exc)


def is_conflict(exc: BaseException) -> bool:
    """Whether a write met a transaction on its item (or a transaction a write): nothing was
    written, and the same request may be sent again."""
    if error_code(exc) == TRANSACTION_CONFLICT:
        return True
    codes = cancellation_codes(exc)
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
    return decode_position(None if stored == START else stored, finished)


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


def chunked(checkpoint: Checkpoint) -> list[bytes]:
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


def lease_update(
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
        ":checkpoint": {"S": encode_position(checkpoint) or START},
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
    removes = [name for name in WINDOW_ATTRIBUTES if name not in sets]
    condition = "#token = :token AND attribute_not_exists(#window_chunks)"
    if chunks_before:
        condition = "#token = :token AND #window_chunks = :chunks_before"
        values[":chunks_before"] = {"N": str(chunks_before)}
    expression = "SET " + ", ".join(f"#{name} = {value}" for name, value in sets.items())
    if removes:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in removes)
    return expression, {
        "ConditionExpression": condition,
        "ExpressionAttributeNames": attribute_names(*sets, *removes, "token", "window_chunks"),
        "ExpressionAttributeValues": values,
    }


def chunk_writes(
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


def attribute_names(*names: str) -> dict[str, str]:
    # Every attribute goes through a placeholder: OWNER, STATE and others are reserved words.
    return {f"#{name}": name for name in names}
