"""What a mapping's health looks like in metrics: poller_mapping_state and, per operation,
poller_source_errors_total (which failed calls count, and for whom)."""

from __future__ import annotations

from pathlib import Path

import pytest

from poller.aws import calls
from poller.checkpoints import Checkpoint
from poller.checkpoints.base import StoreUnusable
from poller.checkpoints.sqlite import SqliteCheckpointStore
from poller.ops.metrics import Metrics
from poller.ops.status import SOURCE, MappingStatus, State

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def _states(metrics: Metrics, mapping: str = "orders") -> dict[str, float | None]:
    registry = metrics.registry
    return {
        state.value: registry.get_sample_value(
            "poller_mapping_state", {"mapping": mapping, "state": state.value}
        )
        for state in State
    }


def _status(metrics: Metrics) -> MappingStatus:
    return MappingStatus("orders", "uuid", STREAM, "python:m:f", metrics.for_mapping("orders"))


def test_every_state_is_exported_from_the_start_with_the_current_one_at_1() -> None:
    metrics = Metrics()
    _status(metrics)
    assert _states(metrics) == {
        "starting": 1,
        "running": 0,
        "degraded": 0,
        "failed": 0,
        "disabled": 0,
        "stopping": 0,
    }


@pytest.mark.parametrize(
    ("moves", "current", "up"),
    [
        (["running"], "running", 1),
        (["running", "degraded"], "degraded", 1),
        (["running", "degraded", "recovered"], "running", 1),
        (["failed"], "failed", 0),
        (["running", "stopping", "degraded"], "stopping", 1),  # stopping is kept
        (["disabled"], "disabled", 0),
    ],
)
def test_the_state_gauge_follows_the_mapping(moves: list[str], current: str, up: int) -> None:
    metrics = Metrics()
    status = _status(metrics)
    for move in moves:
        if move == "degraded":
            status.degraded(SOURCE, "mapping orders: stream unreachable")
        elif move == "recovered":
            status.recovered(SOURCE)
        else:
            status.set(State(move))
    states = _states(metrics)
    assert states.pop(current) == 1
    assert set(states.values()) == {0}
    up_value = metrics.registry.get_sample_value("poller_mapping_up", {"mapping": "orders"})
    assert up_value == up


def test_a_mappings_operations_are_exported_at_zero_before_any_failure() -> None:
    metrics = Metrics()
    metrics.for_mapping("orders", calls.OPERATIONS_BY_SOURCE["sqs"])
    value = metrics.registry.get_sample_value(
        "poller_source_errors_total", {"mapping": "orders", "operation": "ReceiveMessage"}
    )
    assert value == 0


@pytest.mark.parametrize(
    ("service", "operation", "code", "label"),
    [
        ("sqs", "ReceiveMessage", None, "ReceiveMessage"),
        ("sqs", "GetQueueUrl", "AWS.SimpleQueueService.NonExistentQueue", "GetQueueUrl"),
        ("sqs", "ChangeMessageVisibilityBatch", "InternalError", "ChangeMessageVisibilityBatch"),
        ("sqs", "SendMessage", None, None),  # on-failure sends have their own counter
        ("kinesis", "GetRecords", "ExpiredIteratorException", "GetRecords"),
        ("kinesis", "ListShards", None, "ListShards"),
        ("dynamodbstreams", "DescribeStream", "InternalServerError", "DescribeStream"),
        ("dynamodb", "UpdateItem", "ProvisionedThroughputExceededException", "checkpoint"),
        ("dynamodb", "Query", None, "checkpoint"),
        # Answers of the lease protocol, not failures.
        ("dynamodb", "UpdateItem", "ConditionalCheckFailedException", None),
        ("dynamodb", "DescribeTable", "ResourceNotFoundException", None),
        ("dynamodb", "CreateTable", "ResourceInUseException", None),
        ("dynamodb", "GetItem", "ResourceNotFoundException", "checkpoint"),
        ("lambda", "Invoke", "TooManyRequestsException", None),
        ("sts", "GetCallerIdentity", None, None),
    ],
)
def test_which_failed_attempts_count_and_as_what(
    service: str, operation: str, code: str | None, label: str | None
) -> None:
    assert calls.label_of(service, operation, code) == label


def test_a_transaction_cancelled_by_a_failed_condition_is_an_answer_not_a_failure() -> None:
    cancelled = ("dynamodb", "TransactWriteItems", "TransactionCanceledException")
    assert calls.label_of(*cancelled, ["None", "ConditionalCheckFailed"]) is None
    # One that met another transaction is sent again: that attempt failed.
    assert calls.label_of(*cancelled, ["TransactionConflict", "None"]) == "checkpoint"


def test_failures_count_for_the_context_they_were_made_in() -> None:
    counted: list[str] = []
    calls.failed("GetRecords")  # no mapping's context: nobody to charge
    with calls.charged_to(counted.append):
        calls.failed("GetRecords")
        with calls.charged_to(None):
            calls.failed("GetQueueUrl")
        calls.failed(calls.CHECKPOINT)
    calls.failed("ListShards")
    assert counted == ["GetRecords", "checkpoint"]


async def test_a_failing_sqlite_store_counts_checkpoint_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = SqliteCheckpointStore(blocker / "state.db")  # its directory cannot be made
    counted: list[str] = []
    try:
        with calls.charged_to(counted.append):
            with pytest.raises(StoreUnusable):
                await store.put("orders", STREAM, "shard-1", Checkpoint("1"))
            with pytest.raises(StoreUnusable):
                await store.all("orders", STREAM)
    finally:
        await store.aclose()
    assert counted == ["checkpoint", "checkpoint"]
