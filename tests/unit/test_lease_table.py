"""The lease table's calls against a scripted DynamoDB client: what each write sends, which
refusals are sent again (a transaction in progress on the item) and which are not (a condition).

The table's behaviour against DynamoDB itself (moto) is in tests/integration/test_leases.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from poller.aws.clients import AwsClients
from poller.checkpoints import Checkpoint
from poller.checkpoints.lease_items import (
    CHUNK_BYTES,
    MAX_CHUNKS,
    TornWindow,
    checkpoint_of,
    is_conditional_failure,
    shard_key,
    window_key,
)
from poller.checkpoints.lease_table import (
    LeaseTable,
)
from poller.config.settings import AwsSettings

WINDOWED = Checkpoint("7", window_start=1_735_732_800, window_state=b"x" * (CHUNK_BYTES + 1))


def refusal(code: str, *reasons: str) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": code}}
    if reasons:
        response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return ClientError(response, "TransactWriteItems" if reasons else "UpdateItem")


class ScriptedDynamoDB:
    """The DynamoDB client calls LeaseTable makes, answered from a script: each call raises the
    next error queued for its operation, if any, and otherwise succeeds. Requests are kept."""

    def __init__(self, item: dict[str, Any] | None = None, **errors: list[ClientError]) -> None:
        self.item = item
        self.errors = errors
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [request for name, request in self.requests if name == operation]

    def _answer(self, operation: str, request: dict[str, Any]) -> None:
        self.requests.append((operation, request))
        queued = self.errors.get(operation)
        if queued:
            raise queued.pop(0)

    async def update_item(self, **request: Any) -> dict[str, Any]:
        self._answer("update_item", request)
        return {}

    async def transact_write_items(self, **request: Any) -> dict[str, Any]:
        self._answer("transact_write_items", request)
        return {}

    async def get_item(self, **request: Any) -> dict[str, Any]:
        self._answer("get_item", request)
        return {} if self.item is None else {"Item": self.item}


class ScriptedTable(LeaseTable):
    def __init__(self, client: ScriptedDynamoDB) -> None:
        super().__init__(AwsClients(AwsSettings(region="us-east-1")), "t", request_timeout=1.0)
        self.scripted = client

    async def client(self) -> Any:
        return self.scripted


async def test_a_checkpoint_without_a_window_is_one_update_item_on_the_token() -> None:
    client = ScriptedDynamoDB()
    assert await ScriptedTable(client).checkpoint("p", "s", "tok", Checkpoint("9"), 1.0) == 0
    (request,) = client.calls("update_item")
    assert client.calls("transact_write_items") == []
    # Today's SET; the REMOVE clears a window an earlier checkpoint may have left (a no-op on
    # a lease that never had one).
    assert request["UpdateExpression"] == (
        "SET #checkpoint = :checkpoint, #state = :state, #updated_at = :now "
        "REMOVE #window_start, #window_state, #window_chunks, #window_id"
    )
    assert request["ConditionExpression"] == (
        "#token = :token AND attribute_not_exists(#window_chunks)"
    )


async def test_a_chunked_state_is_one_transaction_of_the_lease_update_and_its_chunks() -> None:
    client = ScriptedDynamoDB()
    table = ScriptedTable(client)
    assert await table.checkpoint("p", "s", "tok", WINDOWED, 1.0, chunks_before=4) == 2
    (request,) = client.calls("transact_write_items")
    actions = request["TransactItems"]
    assert [next(iter(action)) for action in actions] == ["Update"] + ["Put"] * 2 + ["Delete"] * 2
    lease = actions[0]["Update"]
    assert lease["Key"]["sk"] == {"S": shard_key("s")}
    assert lease["ConditionExpression"] == "#token = :token AND #window_chunks = :chunks_before"
    assert lease["ExpressionAttributeValues"][":chunks_before"] == {"N": "4"}
    puts = [action["Put"]["Item"] for action in actions[1:3]]
    assert [put["sk"]["S"] for put in puts] == [window_key("s", 0), window_key("s", 1)]
    assert b"".join(put["data"]["B"] for put in puts) == WINDOWED.window_state
    window_id = lease["ExpressionAttributeValues"][":window_id"]
    assert all(put["window_id"] == window_id for put in puts)
    deleted = [action["Delete"]["Key"]["sk"]["S"] for action in actions[3:]]
    assert deleted == [window_key("s", 2), window_key("s", 3)]


async def test_a_write_meeting_a_transaction_on_its_item_is_sent_again() -> None:
    conflicts = [refusal("TransactionConflictException") for _ in range(2)]
    client = ScriptedDynamoDB(update_item=conflicts)
    await ScriptedTable(client).renew("p", "s", "tok", 1.0)
    assert len(client.calls("update_item")) == 3


async def test_a_transaction_cancelled_by_a_conflict_is_sent_again() -> None:
    cancelled = refusal("TransactionCanceledException", "TransactionConflict", "None", "None")
    client = ScriptedDynamoDB(transact_write_items=[cancelled])
    assert await ScriptedTable(client).checkpoint("p", "s", "tok", WINDOWED, 1.0) == 2
    assert len(client.calls("transact_write_items")) == 2


async def test_a_conflict_that_does_not_pass_gives_up_after_four_attempts() -> None:
    conflicts = [refusal("TransactionConflictException") for _ in range(5)]
    client = ScriptedDynamoDB(update_item=conflicts)
    with pytest.raises(ClientError) as raised:
        await ScriptedTable(client).renew("p", "s", "tok", 1.0)
    assert not is_conditional_failure(raised.value)
    assert len(client.calls("update_item")) == 4


async def test_a_transaction_refused_on_the_token_is_a_conditional_failure_sent_once() -> None:
    cancelled = refusal("TransactionCanceledException", "ConditionalCheckFailed", "None", "None")
    peer = {"token": {"S": "peer"}, "window_chunks": {"N": "2"}}
    client = ScriptedDynamoDB(peer, transact_write_items=[cancelled])
    with pytest.raises(ClientError) as raised:
        await ScriptedTable(client).checkpoint("p", "s", "tok", WINDOWED, 1.0)
    assert is_conditional_failure(raised.value)
    assert len(client.calls("transact_write_items")) == 1
    assert len(client.calls("get_item")) == 1  # to tell a lost lease from a wrong count


async def test_a_wrong_chunk_count_is_read_and_the_write_sent_again_with_it() -> None:
    ours = {"token": {"S": "tok"}, "window_chunks": {"N": "3"}}
    client = ScriptedDynamoDB(ours, update_item=[refusal("ConditionalCheckFailedException")])
    assert await ScriptedTable(client).checkpoint("p", "s", "tok", Checkpoint("9"), 1.0) == 0
    assert len(client.calls("update_item")) == 1
    (request,) = client.calls("transact_write_items")
    deleted = [action["Delete"]["Key"]["sk"]["S"] for action in request["TransactItems"][1:]]
    assert deleted == [window_key("s", n) for n in range(3)]


async def test_a_state_over_what_one_transaction_holds_is_refused_before_any_call() -> None:
    client = ScriptedDynamoDB()
    state = b"x" * (MAX_CHUNKS * CHUNK_BYTES + 1)
    huge = Checkpoint("9", window_start=1_735_732_800, window_state=state)
    with pytest.raises(ValueError, match="over the lease table's"):
        await ScriptedTable(client).checkpoint("p", "s", "tok", huge, 1.0)
    assert client.requests == []


def test_chunks_of_another_write_are_never_put_together() -> None:
    lease = {
        "sk": {"S": shard_key("s")},
        "checkpoint": {"S": "9"},
        "window_start": {"N": "60"},
        "window_chunks": {"N": "2"},
        "window_id": {"S": "w1"},
    }
    chunks = {
        window_key("s", n): {"data": {"B": f"{n}".encode()}, "window_id": {"S": "w1"}}
        for n in range(2)
    }
    assert checkpoint_of(lease, chunks) == Checkpoint("9", window_start=60, window_state=b"01")
    with pytest.raises(TornWindow):
        checkpoint_of(lease, {**chunks, window_key("s", 1): {"data": {"B": b"1"}}})
    with pytest.raises(TornWindow):
        checkpoint_of(lease, {window_key("s", 0): chunks[window_key("s", 0)]})
