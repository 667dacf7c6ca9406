"""Stream records held by throttles or an unreachable target leave by success or by passing
maximum_record_age_in_seconds: the hold ends at the oldest record's expiry and the expired
records take the path of records found too old before an invocation."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from poller.ops.status import TARGET, State
from poller.retry import Curve, Stopped
from poller.targets.base import InvokeResult, Outcome
from tests.fakes.targets import ERROR, OK
from tests.unit.test_stream_batches import (
    SHARD,
    T0,
    THROTTLED,
    Clock,
    Harness,
    MemoryDestination,
    records,
)

UNREACHABLE = InvokeResult(Outcome.INVOKE_ERROR, detail="connection refused")
NOT_FOUND = InvokeResult(Outcome.INVOKE_ERROR, status_code=404, detail="Function not found")
# A back-off far longer than the records have left: the hold must end at their expiry.
LONG = Curve(base=100.0, cap=100.0, jitter=0.0)


class Script:
    """Each invocation answers the next (result, seconds it takes on `clock`); then OK.
    `delivered` lists the ids of the invocations answered OK."""

    def __init__(self, clock: Clock, *answers: tuple[InvokeResult, float]) -> None:
        self.clock = clock
        self.answers = iter(answers)
        self.delivered: list[str] = []

    def __call__(self, batch: list[str]) -> InvokeResult:
        answer, seconds = next(self.answers, (OK, 0.0))
        self.clock.now += seconds
        if answer is OK:
            self.delivered.extend(batch)
        return answer


class WallClock(Clock):
    """The settler's clock is the real one: back-off sleeps pass on it."""

    def __call__(self) -> float:
        return time.time()


def assert_record_age_exceeded(
    record: dict[str, Any], *, invokes: int, end: str, size: int
) -> None:
    context = record["requestContext"]
    assert context["condition"] == "RecordAgeExceeded"
    assert context["approximateInvokeCount"] == invokes
    assert "responseContext" not in record  # as AWS writes records too old, invoked or not
    assert record["KinesisBatchInfo"]["shardId"] == SHARD
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == "1"
    assert record["KinesisBatchInfo"]["endSequenceNumber"] == end
    assert record["KinesisBatchInfo"]["batchSize"] == size


async def test_throttled_past_max_age_goes_on_failure_never_delivered_late() -> None:
    # The audit's repro: max age 60 s, throttles of 100 s each, then the target takes it.
    clock = Clock(T0)
    destination = MemoryDestination()
    script = Script(clock, (THROTTLED, 100), (THROTTLED, 100), (THROTTLED, 100))
    h = Harness(
        script,
        destination=destination,
        clock=clock,
        maximum_record_age_in_seconds=60,
    )
    with anyio.fail_after(5):
        await h.process(records(3))
    assert h.target.calls == [["1", "2", "3"]]  # no attempt once the records are too old
    assert script.delivered == []
    [(record, payload)] = destination.delivered
    assert_record_age_exceeded(record, invokes=1, end="3", size=3)
    assert payload is not None
    assert h.progress == ["3"]  # the checkpoint moves past them
    assert h.events("on_failure_delivered") == 3
    assert h.sample("poller_invocations_total", outcome="throttled") == 1


@pytest.mark.parametrize(
    ("answer", "state"),
    [(UNREACHABLE, State.DEGRADED), (NOT_FOUND, State.FAILED)],
    ids=["unreachable", "not-found"],
)
async def test_unreachable_target_past_max_age_goes_on_failure(
    answer: InvokeResult, state: State
) -> None:
    clock = Clock(T0)

    def down(batch: list[str]) -> InvokeResult:
        clock.now += 25  # each failed connection takes 25 s: attempts at ages 0, 25 and 50
        return answer

    destination = MemoryDestination()
    h = Harness(down, destination=destination, clock=clock, maximum_record_age_in_seconds=60)
    with anyio.fail_after(5):
        await h.process(records(2))
    assert len(h.target.calls) == 3
    [(record, _)] = destination.delivered
    assert_record_age_exceeded(record, invokes=1, end="2", size=2)
    assert h.progress == ["2"]
    # The target is still down: the mapping keeps showing it, and held batches stay held.
    assert h.status.conditions == [TARGET]
    assert h.status.state is state
    assert not h.invoker.gate.is_open
    # The next batch reaches the function: the condition clears.
    h.target.respond = lambda batch: OK
    await h.process(records(1, arrival=clock.now, start=3))
    assert h.status.conditions == []
    assert h.invoker.gate.is_open


async def test_target_down_at_the_first_attempt_of_records_about_to_expire() -> None:
    # The first attempt already outlives the records: nothing said the target was down yet.
    clock = Clock(T0 + 59)
    script = Script(clock, (UNREACHABLE, 5))
    h = Harness(
        script,
        destination=MemoryDestination(),
        clock=clock,
        maximum_record_age_in_seconds=60,
    )
    await h.process(records(1))
    assert len(h.target.calls) == 1
    assert h.status.conditions == [TARGET]
    assert h.status.state is State.DEGRADED


async def test_only_the_records_past_max_age_leave_the_rest_is_invoked() -> None:
    clock = Clock(T0 + 5)
    destination = MemoryDestination()
    script = Script(clock, (THROTTLED, 30), (THROTTLED, 30))
    h = Harness(
        script,
        destination=destination,
        clock=clock,
        maximum_record_age_in_seconds=60,
    )
    batch = records(3, arrival=T0) + records(2, arrival=T0 + 50, start=4)
    await h.process(batch)
    # Throttled at 5 s and 35 s; at 65 s the first three are too old, the last two 15 s old.
    assert h.target.calls == [["1", "2", "3", "4", "5"]] * 2 + [["4", "5"]]
    assert script.delivered == ["4", "5"]
    [(record, _)] = destination.delivered
    assert_record_age_exceeded(record, invokes=1, end="3", size=3)
    assert h.progress == ["3", "5"]
    assert h.events("on_failure_delivered") == 3


async def test_held_after_a_function_error_counts_the_invocations_made() -> None:
    clock = Clock(T0)
    destination = MemoryDestination()
    script = Script(clock, (ERROR, 10), (THROTTLED, 100))
    h = Harness(
        script,
        destination=destination,
        clock=clock,
        maximum_record_age_in_seconds=60,
    )
    await h.process(records(2))
    assert len(h.target.calls) == 2
    assert script.delivered == []
    [(record, _)] = destination.delivered
    # The function ran once and the retry was held: two invocations, still no responseContext.
    assert_record_age_exceeded(record, invokes=2, end="2", size=2)


async def test_without_an_age_limit_throttled_records_are_held_until_delivered() -> None:
    clock = Clock(T0)
    destination = MemoryDestination()
    script = Script(clock, *[(THROTTLED, 10_000.0)] * 5)
    h = Harness(
        script,
        destination=destination,
        clock=clock,
        maximum_record_age_in_seconds=-1,
    )
    await h.process(records(2))
    assert len(h.target.calls) == 6
    assert script.delivered == ["1", "2"]
    assert destination.delivered == []
    assert h.progress == ["2"]


async def test_a_long_back_off_ends_when_the_records_expire() -> None:
    # A 100 s back-off with 2 s left on the records: the hold ends at their expiry, not 98 s
    # after it.
    destination = MemoryDestination()
    h = Harness(
        lambda batch: THROTTLED,
        destination=destination,
        clock=WallClock(),
        hold_curve=LONG,
        maximum_record_age_in_seconds=60,
    )
    started = time.monotonic()
    with anyio.fail_after(30):
        await h.process(records(2, arrival=time.time() - 58))
    assert time.monotonic() - started >= 1.5  # held while the records were young
    assert len(h.target.calls) == 1
    [(record, _)] = destination.delivered
    assert_record_age_exceeded(record, invokes=1, end="2", size=2)


async def test_shutdown_while_held_with_an_age_limit_leaves_the_batch_unsettled() -> None:
    destination = MemoryDestination()
    h = Harness(
        lambda batch: THROTTLED,
        destination=destination,
        clock=WallClock(),
        hold_curve=LONG,
        maximum_record_age_in_seconds=60,
    )

    async def stop_once_held() -> None:
        while h.invoker.gate.waiting < 1:
            await anyio.lowlevel.checkpoint()
        h.shutdown.begin(1.0)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stop_once_held)
            with pytest.raises(Stopped):
                await h.process(records(2, arrival=time.time() - 30))
    assert len(h.target.calls) == 1
    assert destination.delivered == []
    assert h.progress == []


async def test_shutdown_during_the_attempt_that_outlives_the_records_leaves_them_unsettled() -> (
    None
):
    clock = Clock(T0)
    destination = MemoryDestination()

    def stopping(batch: list[str]) -> InvokeResult:
        clock.now += 100
        h.shutdown.begin(1.0)
        return THROTTLED

    h = Harness(stopping, destination=destination, clock=clock, maximum_record_age_in_seconds=60)
    with anyio.fail_after(5), pytest.raises(Stopped):
        await h.process(records(2))
    assert destination.delivered == []
    assert h.progress == []
