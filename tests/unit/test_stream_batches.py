"""The stream settle policy (engine Settler via wiring) against a scripted Target and an
in-memory on-failure destination."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from poller.config.settings import MappingSettings
from poller.engine.destinations import DeliveryError
from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.events.invocation import invocation_record
from poller.events.streams import kinesis_record, stream_record
from poller.ops.metrics import MappingMetrics, Metrics
from poller.ops.status import MappingStatus
from poller.retry import Curve, Stopped
from poller.targets.base import InvokeResult, Outcome
from poller.wiring import stream_settler
from tests.fakes.targets import ERROR, OK, ScriptedTarget, failures

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:orders"
SHARD = "shardId-000000000000"
T0 = 1_735_732_800.0
TINY = Curve(base=0.001, cap=0.001)

THROTTLED = InvokeResult(Outcome.THROTTLED, status_code=429, detail="rate")
TOO_LARGE = InvokeResult(Outcome.INVOKE_ERROR, status_code=413, too_large=True, detail="413")


class MemoryDestination:
    """Keeps what it was given; fails the first `failures` deliveries."""

    arn = "arn:aws:sqs:us-east-1:123456789012:orders-failed"

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.delivered: list[tuple[dict[str, Any], bytes | None]] = []

    async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("destination down")
        self.delivered.append((record, payload))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(count: int, *, arrival: float = T0, start: int = 1) -> list[StreamRecord]:
    out = []
    for sequence in range(start, start + count):
        raw = {
            "SequenceNumber": str(sequence),
            "ApproximateArrivalTimestamp": datetime.fromtimestamp(arrival, tz=UTC),
            "Data": f"record {sequence}".encode(),
            "PartitionKey": f"key-{sequence % 3}",
        }
        event = kinesis_record(
            raw, shard_id=SHARD, stream_arn=STREAM, region="us-east-1", invoke_identity_arn="x"
        )
        out.append(stream_record(event, kind="kinesis"))
    return out


class Harness:
    def __init__(
        self,
        respond: Callable[[list[str]], InvokeResult],
        *,
        destination: MemoryDestination | None = None,
        clock: Clock | None = None,
        retry_curve: Curve = TINY,
        hold_curve: Curve = TINY,
        **settings: Any,
    ) -> None:
        self.mapping = MappingSettings.model_validate(
            {
                "name": "orders",
                "source": STREAM,
                "target": {"type": "python", "handler": "m:f"},
                "starting_position": "TRIM_HORIZON",
                **settings,
            }
        )
        self.metrics_root = Metrics()
        self.metrics: MappingMetrics = self.metrics_root.for_mapping("orders")
        self.target = ScriptedTarget(respond)
        self.shutdown = Shutdown()
        self.status = MappingStatus("orders", self.mapping.uuid, STREAM, "scripted", self.metrics)
        self.invoker = Invoker(
            self.target, self.metrics, self.status, shutdown=self.shutdown, curve=hold_curve
        )
        self.destination = destination
        self.clock = clock or Clock()
        self.settler = stream_settler(
            self.mapping,
            self.invoker,
            kind="kinesis",
            destination=destination,
            shutdown=self.shutdown,
            clock=self.clock,
            retry_curve=retry_curve,
            delivery_curve=retry_curve,
        )
        # The last sequence number of each run of records the settler acknowledged.
        self.progress: list[str] = []

    async def process(self, batch: Sequence[StreamRecord]) -> None:
        async def acknowledge(run: Sequence[StreamRecord]) -> None:
            self.progress.append(run[-1].sequence_number)

        await self.settler.settle(batch, acknowledge, scope=SHARD)

    async def process_windowed(self, batch: Sequence[StreamRecord], window: Any) -> None:
        """`process`, with the batch in a tumbling window."""

        async def acknowledge(run: Sequence[StreamRecord]) -> None:
            self.progress.append(run[-1].sequence_number)

        await self.settler.settle(batch, acknowledge, scope=SHARD, window=window)

    def events(self, stage: str) -> float:
        value = self.metrics_root.registry.get_sample_value(
            "poller_events_total", {"mapping": "orders", "stage": stage}
        )
        return value or 0.0

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics_root.registry.get_sample_value(name, {"mapping": "orders", **labels})
        return value or 0.0

    def succeeded(self) -> list[str]:
        """Sequence numbers of invocations that succeeded, in order."""
        return [s for call in self.target.calls if self.target.respond(call) is OK for s in call]


def failing_with(*poison: str) -> Callable[[list[str]], InvokeResult]:
    return lambda batch: ERROR if set(batch) & set(poison) else OK


async def test_success_settles_in_one_invocation() -> None:
    h = Harness(lambda batch: OK)
    await h.process(records(3))
    assert h.target.calls == [["1", "2", "3"]]
    assert h.progress == ["3"]  # one run: the whole batch, acknowledged once
    assert h.events("invoked") == 3
    assert h.events("dropped") == 0
    assert h.sample("poller_iterator_age_seconds", shard=SHARD) == 0.0


async def test_iterator_age_is_now_minus_last_arrival() -> None:
    clock = Clock(T0 + 42.5)
    h = Harness(lambda batch: OK, clock=clock)
    await h.process(records(2))
    assert h.sample("poller_iterator_age_seconds", shard=SHARD) == pytest.approx(42.5)


async def test_function_error_retried_then_retry_attempts_exhausted() -> None:
    destination = MemoryDestination()
    h = Harness(lambda batch: ERROR, destination=destination, maximum_retry_attempts=2)
    batch = records(4)
    await h.process(batch)
    assert h.target.calls == [["1", "2", "3", "4"]] * 3  # the first try and two retries
    [(record, payload)] = destination.delivered
    context = record["requestContext"]
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 3
    assert context["functionArn"] == FUNCTION
    assert len(context["requestId"]) == 36
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["version"] == "1.0"
    assert record["timestamp"] == "2025-01-01T12:00:00.000Z"
    assert record["KinesisBatchInfo"] == {
        "shardId": SHARD,
        "startSequenceNumber": "1",
        "endSequenceNumber": "4",
        "approximateArrivalOfFirstRecord": "2025-01-01T12:00:00.000Z",
        "approximateArrivalOfLastRecord": "2025-01-01T12:00:00.000Z",
        "batchSize": 4,
        "streamArn": STREAM,
    }
    assert payload is not None
    assert [r["kinesis"]["sequenceNumber"] for r in json.loads(payload)["Records"]] == [
        "1",
        "2",
        "3",
        "4",
    ]
    assert h.events("on_failure_delivered") == 4
    assert h.events("dropped") == 0
    assert h.events("failed") == 12


async def test_zero_retries_gives_up_after_the_first_attempt() -> None:
    destination = MemoryDestination()
    h = Harness(lambda batch: ERROR, destination=destination, maximum_retry_attempts=0)
    await h.process(records(2))
    assert len(h.target.calls) == 1
    assert destination.delivered[0][0]["requestContext"]["approximateInvokeCount"] == 1


async def test_bisect_isolates_one_poison_record() -> None:
    destination = MemoryDestination()
    h = Harness(
        failing_with("5"),
        destination=destination,
        maximum_retry_attempts=1,
        bisect_batch_on_function_error=True,
    )
    await h.process(records(8))
    assert h.succeeded() == ["1", "2", "3", "4", "6", "7", "8"]
    [(record, _)] = destination.delivered
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        "5",
        "5",
        1,
    )
    # Invoked within 8, 4 and 2 records, then alone once plus one retry; halving is free.
    assert record["requestContext"]["approximateInvokeCount"] == 5
    assert h.target.calls.count(["5"]) == 2
    assert h.progress == ["4", "5", "6", "8"]
    assert h.events("on_failure_delivered") == 1


async def test_bisect_without_retries_still_halves_down_to_the_poison_record() -> None:
    destination = MemoryDestination()
    h = Harness(
        failing_with("2"),
        destination=destination,
        maximum_retry_attempts=0,
        bisect_batch_on_function_error=True,
    )
    await h.process(records(4))
    assert h.succeeded() == ["1", "3", "4"]
    assert [d[0]["KinesisBatchInfo"]["startSequenceNumber"] for d in destination.delivered] == ["2"]


async def test_partial_failure_checkpoints_before_lowest_and_retries_the_rest() -> None:
    answers = iter([failures("4", "3"), OK])
    h = Harness(lambda batch: next(answers), function_response_types=["ReportBatchItemFailures"])
    await h.process(records(5))
    assert h.target.calls == [["1", "2", "3", "4", "5"], ["3", "4", "5"]]
    assert h.progress == ["2", "5"]
    assert h.events("failed") == 2


async def test_partial_failure_compares_sequence_numbers_as_integers() -> None:
    answers = iter([failures("10", "9"), OK])
    h = Harness(lambda batch: next(answers), function_response_types=["ReportBatchItemFailures"])
    await h.process(records(4, start=8))
    assert h.target.calls[1] == ["9", "10", "11"]
    assert h.progress == ["8", "11"]


async def test_partial_failure_with_max_retries_reaches_the_destination() -> None:
    destination = MemoryDestination()
    h = Harness(
        lambda batch: failures("3"),
        destination=destination,
        maximum_retry_attempts=1,
        function_response_types=["ReportBatchItemFailures"],
    )
    await h.process(records(5))
    # Records 1 and 2 went, so 3-5 are a new batch: invoked, then retried once. AWS counts the
    # same way (LocalStack's AWS-validated report-batch-item-failure snapshots: the failing
    # record seen once more than the invocation record's count).
    assert h.target.calls == [["1", "2", "3", "4", "5"], ["3", "4", "5"], ["3", "4", "5"]]
    [(record, _)] = destination.delivered
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    # The function answered without error: AWS writes functionError as null, key present
    # (LocalStack's AWS-validated Kinesis report-batch-item-failure snapshots).
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": None,
    }
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        "3",
        "5",
        3,
    )
    assert h.progress == ["2", "5"]
    assert h.events("on_failure_delivered") == 3


async def test_unknown_item_identifier_fails_the_whole_batch() -> None:
    destination = MemoryDestination()
    h = Harness(
        lambda batch: failures("99"),
        destination=destination,
        maximum_retry_attempts=0,
        function_response_types=["ReportBatchItemFailures"],
    )
    await h.process(records(3))
    assert destination.delivered[0][0]["KinesisBatchInfo"]["batchSize"] == 3


async def test_records_past_max_age_are_sent_with_record_age_exceeded() -> None:
    destination = MemoryDestination()
    clock = Clock(T0 + 100)
    h = Harness(
        lambda batch: OK, destination=destination, clock=clock, maximum_record_age_in_seconds=60
    )
    batch = records(2, arrival=T0) + records(2, arrival=T0 + 90, start=3)
    await h.process(batch)
    assert h.target.calls == [["3", "4"]]
    [(record, _)] = destination.delivered
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    # Never invoked, yet AWS counts one invocation and writes no responseContext at all.
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert "responseContext" not in record
    assert record["KinesisBatchInfo"]["endSequenceNumber"] == "2"
    assert h.progress == ["2", "4"]
    assert h.events("on_failure_delivered") == 2


async def test_max_age_is_rechecked_before_every_retry() -> None:
    clock = Clock(T0)

    def respond(batch: list[str]) -> InvokeResult:
        clock.now += 30  # each attempt takes half a minute
        return ERROR

    h = Harness(respond, clock=clock, maximum_record_age_in_seconds=60)
    await h.process(records(3))
    # Attempts at ages 0, 30 and 60 s; at 90 s the records are too old to retry.
    assert len(h.target.calls) == 3
    assert h.events("dropped") == 3


async def test_max_age_without_destination_drops(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(lambda batch: OK, clock=Clock(T0 + 1000), maximum_record_age_in_seconds=60)
    with caplog.at_level(logging.ERROR, logger="poller.streams"):
        await h.process(records(3))
    assert h.target.calls == []
    assert h.events("dropped") == 3
    assert "RecordAgeExceeded" in caplog.text


async def test_throttles_never_consume_attempts() -> None:
    script = iter([THROTTLED] * 5 + [ERROR] + [THROTTLED] * 3 + [OK])
    destination = MemoryDestination()
    h = Harness(lambda batch: next(script), destination=destination, maximum_retry_attempts=1)
    await h.process(records(2))
    assert len(h.target.calls) == 10
    assert destination.delivered == []
    assert h.sample("poller_invocations_total", outcome="throttled") == 8


async def test_too_large_batches_are_split_in_order() -> None:
    h = Harness(lambda batch: TOO_LARGE if len(batch) > 2 else OK)
    await h.process(records(5))
    assert h.target.calls == [
        ["1", "2", "3", "4", "5"],
        ["1", "2", "3"],
        ["1", "2"],
        ["3"],
        ["4", "5"],
    ]
    assert h.progress == ["2", "3", "5"]


async def test_a_single_too_large_record_is_a_failed_record() -> None:
    destination = MemoryDestination()
    h = Harness(lambda batch: TOO_LARGE if "2" in batch else OK, destination=destination)
    await h.process(records(3))
    [(record, _)] = destination.delivered
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == "2"
    assert record["responseContext"]["statusCode"] == 413
    assert "functionError" not in record["responseContext"]
    assert h.succeeded() == ["1", "3"]


async def test_no_destination_counts_dropped_and_logs_the_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(lambda batch: ERROR, maximum_retry_attempts=1)
    with caplog.at_level(logging.ERROR, logger="poller.streams"):
        await h.process(records(3))
    assert h.events("dropped") == 3
    assert h.events("on_failure_delivered") == 0
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert SHARD in line.getMessage() and "1..3" in line.getMessage()
    assert "record 1" not in caplog.text  # never a payload in the logs


async def test_destination_failing_then_recovering() -> None:
    destination = MemoryDestination(failures=2)
    h = Harness(lambda batch: ERROR, destination=destination, maximum_retry_attempts=0)
    await h.process(records(2))
    assert len(destination.delivered) == 1
    assert h.sample("poller_on_failure_delivery_errors_total") == 2
    assert h.events("on_failure_delivered") == 2


def stopping_after(calls: int, answer: InvokeResult, shutdown: list[Shutdown]) -> Any:
    """A script that answers `answer` and begins shutdown on its `calls`-th invocation."""
    seen = 0

    def respond(batch: list[str]) -> InvokeResult:
        nonlocal seen
        seen += 1
        if seen == calls:
            shutdown[0].begin(1.0)
        return answer

    return respond


async def test_held_when_shutdown_begins_during_retries() -> None:
    shutdown: list[Shutdown] = []
    h = Harness(stopping_after(2, ERROR, shutdown))
    shutdown.append(h.shutdown)
    with anyio.fail_after(5), pytest.raises(Stopped):
        await h.process(records(3))
    assert len(h.target.calls) == 2
    assert h.events("dropped") == 0


async def test_held_when_shutdown_begins_while_throttled() -> None:
    shutdown: list[Shutdown] = []
    h = Harness(stopping_after(2, THROTTLED, shutdown))
    shutdown.append(h.shutdown)
    with anyio.fail_after(5), pytest.raises(Stopped):
        await h.process(records(2))
    assert len(h.target.calls) == 2


async def test_held_when_shutdown_begins_while_delivery_fails() -> None:
    class StoppingDestination(MemoryDestination):
        async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
            h.shutdown.begin(1.0)
            raise DeliveryError("destination down")

    destination = StoppingDestination()
    h = Harness(lambda batch: ERROR, destination=destination, maximum_retry_attempts=0)
    with anyio.fail_after(5), pytest.raises(Stopped):
        await h.process(records(2))
    assert h.sample("poller_on_failure_delivery_errors_total") == 1
    assert h.events("on_failure_delivered") == 0


def test_invocation_record_for_dynamodb_and_timeouts() -> None:
    timed_out = InvokeResult(Outcome.TIMEOUT, detail="30s")
    record = invocation_record(
        kind="dynamodb",
        condition="RetryAttemptsExhausted",
        function_arn=FUNCTION,
        shard_id="shardId-00000001573689847184-864758bb",
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/label",
        records=records(2),
        approximate_invoke_count=4,
        last_result=timed_out,
        now=T0,
        request_id="req-1",
    )
    assert "KinesisBatchInfo" not in record
    assert record["DDBStreamBatchInfo"]["shardId"] == "shardId-00000001573689847184-864758bb"
    assert record["requestContext"]["requestId"] == "req-1"
    # A timeout is a function error that never answered: Lambda calls it Unhandled.
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }


async def test_held_batches_try_again_once_another_batch_reaches_the_function() -> None:
    # Two batches held by throttles with a minute of back-off each; then the target takes a
    # third: the gate opens and both held ones try again at once, not a minute later.
    answers = iter([THROTTLED, THROTTLED])
    target = ScriptedTarget(lambda ids: next(answers, OK))
    metrics = Metrics().for_mapping("orders")
    status = MappingStatus("orders", "uuid", STREAM, "scripted", metrics)
    minute = Curve(base=60.0, cap=60.0, jitter=0.0)
    invoker = Invoker(target, metrics, status, shutdown=Shutdown(), curve=minute)
    results: list[Outcome] = []

    async def invoke(n: int) -> None:
        [record] = records(1, start=n)
        event = b'{"Records":[' + record.serialized + b"]}"
        results.append((await invoker.invoke(event, 1)).outcome)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(invoke, 1)
            tasks.start_soon(invoke, 2)
            while invoker.gate.waiting < 2:
                await anyio.lowlevel.checkpoint()
            assert not invoker.gate.is_open
            await invoke(3)
    assert results == [Outcome.SUCCESS] * 3
    assert len(target.calls) == 5
