"""Tumbling windows in the engine: the events' window fields, state handed from invocation to
invocation, a missing state, the 1 MB early end, final invocations that never give up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from poller.checkpoints.base import Checkpoint
from poller.engine.windows import (
    MAX_STATE_BYTES,
    OpenWindow,
    WindowMark,
    iso_second,
    read_state,
    window_start,
)
from poller.sources.streams.windowing import ShardWindows
from poller.targets.base import InvokeResult, Outcome
from tests.fakes.targets import ERROR
from tests.unit.test_stream_batches import SHARD, STREAM, T0, Harness, MemoryDestination, records


def answer(value: Any) -> InvokeResult:
    return InvokeResult(Outcome.SUCCESS, payload=json.dumps(value).encode(), status_code=200)


def counting(h: Harness) -> Any:
    """A function counting records through its state; it returns the state it computed."""

    def respond(ids: list[str]) -> InvokeResult:
        event = h.target.events[-1]
        state = dict(event["state"])  # type: ignore[call-overload]
        state["n"] = state.get("n", 0) + len(ids)
        return answer({"state": state})

    return respond


def window(start: int = 1_735_732_800, seconds: int = 60) -> OpenWindow:
    return OpenWindow(start, seconds, shard_id=SHARD, source_arn=STREAM)


def test_windows_are_epoch_aligned() -> None:
    assert window_start(1_735_732_859.9, 60) == 1_735_732_800
    assert window_start(1_735_732_860.0, 60) == 1_735_732_860
    assert window_start(7.5, 5) == 5
    assert iso_second(1_735_732_800) == "2025-01-01T12:00:00Z"


def test_the_event_has_lambdas_window_fields_in_order() -> None:
    # The shape of aws-lambda-go's events/testdata/kinesis-time-window-event.json.
    open_window = window()
    open_window.state = b'{"1":"state 1"}'
    event = json.loads(open_window.event([b'{"a":1}']))
    assert list(event) == [
        "Records",
        "window",
        "state",
        "shardId",
        "eventSourceARN",
        "isFinalInvokeForWindow",
        "isWindowTerminatedEarly",
    ]
    assert event["window"] == {"start": "2025-01-01T12:00:00Z", "end": "2025-01-01T12:01:00Z"}
    assert event["state"] == {"1": "state 1"}
    assert (event["shardId"], event["eventSourceARN"]) == (SHARD, STREAM)
    assert (event["isFinalInvokeForWindow"], event["isWindowTerminatedEarly"]) == (False, False)
    final = json.loads(open_window.event([], final=True))
    assert final["Records"] == [] and final["isFinalInvokeForWindow"] is True


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"null", "no state"),
        (b'{"batchItemFailures": []}', "no state"),
        (b'{"state": [1]}', "not a JSON object"),
        (b'{"state": "x"}', "not a JSON object"),
        (b"{not json", "not JSON"),
    ],
)
def test_an_answer_without_a_state_object_is_refused(payload: bytes, problem: str) -> None:
    state, message = read_state(payload)
    assert state is None and problem in message


def test_read_state_keeps_the_state_compact() -> None:
    assert read_state(b'{"state": {"a": 1, "b": [2]}}') == (b'{"a":1,"b":[2]}', "")


async def test_state_goes_from_invocation_to_invocation_and_the_final_carries_it() -> None:
    h = Harness(lambda ids: answer({}), batch_size=2)
    h.target.respond = counting(h)
    open_window = window()

    async def acknowledge(run: Any) -> None:
        h.progress.append(run[-1].sequence_number)

    for batch in (records(2, arrival=T0), records(2, arrival=T0, start=3)):
        await h.settler.settle(batch, acknowledge, scope=SHARD, window=open_window)
    assert [e["state"] for e in h.target.events] == [{}, {"n": 2}]
    assert json.loads(open_window.state) == {"n": 4}
    await h.settler.close_window(open_window)
    final = h.target.events[-1]
    assert final["Records"] == [] and final["state"] == {"n": 4}
    assert final["isFinalInvokeForWindow"] is True
    assert h.progress == ["2", "4"]


async def test_a_window_no_record_reached_gets_no_final_invocation() -> None:
    h = Harness(lambda ids: answer({"state": {}}))
    await h.settler.close_window(window())
    assert h.target.events == []


async def test_an_answer_without_state_fails_the_batch_and_retries_run_out() -> None:
    destination = MemoryDestination()
    h = Harness(
        lambda ids: answer({"batchItemFailures": []}),
        destination=destination,
        maximum_retry_attempts=1,
    )
    await h.process_windowed(records(1), window())
    assert len(h.target.calls) == 2  # the first attempt and one retry
    [(record, _)] = destination.delivered
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"


async def test_a_state_over_a_megabyte_ends_the_window_early() -> None:
    big = "x" * (MAX_STATE_BYTES + 1)
    h = Harness(lambda ids: answer({"state": {"big": big}}))
    open_window = window()
    await h.process_windowed(records(1), open_window)
    early = h.target.events[1]
    assert early["Records"] == [] and early["state"] == {"big": big}
    assert (early["isWindowTerminatedEarly"], early["isFinalInvokeForWindow"]) == (True, False)
    assert open_window.state == b"{}"  # the window goes on with a fresh state


async def test_a_failing_final_invocation_is_retried_until_it_succeeds() -> None:
    answers = [ERROR, ERROR, answer(None)]
    h = Harness(lambda ids: answers.pop(0) if not ids else answer({"state": {"n": 1}}))
    open_window = window()
    await h.process_windowed(records(1), open_window)
    await h.settler.close_window(open_window)
    finals = [e for e in h.target.events if e["isFinalInvokeForWindow"]]
    assert len(finals) == 3 and answers == []
    assert h.events("on_failure_delivered") == 0


async def test_a_partial_response_inside_a_window_keeps_its_state_for_the_rest() -> None:
    h = Harness(lambda ids: answer({}), function_response_types=["ReportBatchItemFailures"])

    def respond(ids: list[str]) -> InvokeResult:
        seen = h.target.events[-1]["state"]
        if ids == ["1", "2", "3"]:
            return answer({"state": {"done": 1}, "batchItemFailures": [{"itemIdentifier": "2"}]})
        return answer({"state": {"done": seen["done"] + len(ids)}})  # type: ignore[index]

    h.target.respond = respond
    open_window = window()
    await h.process_windowed(records(3), open_window)
    assert h.target.calls == [["1", "2", "3"], ["2", "3"]]
    assert h.target.events[1]["state"] == {"done": 1}
    assert json.loads(open_window.state) == {"done": 3}
    assert h.progress == ["1", "3"]


def test_a_shard_resumes_its_stored_window_and_reports_it() -> None:
    windows = ShardWindows(
        60, shard_id=SHARD, source_arn=STREAM, restored=WindowMark(1_735_732_800, b'{"n":3}')
    )
    assert windows.checkpoint("7", False) == Checkpoint("7", False, 1_735_732_800, b'{"n":3}')
    assert windows.status() == {
        "start": "2025-01-01T12:00:00Z",
        "end": "2025-01-01T12:01:00Z",
        "state_bytes": 7,
    }
    assert not windows.must_close_before(1_735_732_859.9)
    assert windows.must_close_before(1_735_732_860.0)
    assert not windows.past_end(1_735_732_861.9) and windows.past_end(1_735_732_862.0)


def test_a_window_no_record_reached_is_not_stored() -> None:
    windows = ShardWindows(60, shard_id=SHARD, source_arn=STREAM, restored=None)
    assert windows.status() is None
    windows.take(1_735_732_830.0)  # a record that was filtered out opens it...
    assert windows.checkpoint("7", False) == Checkpoint("7")  # ...but it has nothing to keep
    assert windows.open is not None and windows.open.start == 1_735_732_800
