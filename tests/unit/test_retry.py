"""The retry toolkit: curves, the step counter, sleep-or-stop and the retried call."""

from __future__ import annotations

import anyio
import pytest

from poller.retry import (
    DELETE_ENTRY,
    SOURCE_CALL,
    THROTTLE,
    Backoff,
    Curve,
    FatalError,
    RetriableError,
    Stopped,
    retry_result,
    sleep_or_stop,
)


def test_steps_double_from_base_up_to_the_cap() -> None:
    assert [THROTTLE.step(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert THROTTLE.step(10_000) == 60  # no overflow however long an outage lasts


def test_full_jitter_stays_under_the_step_and_half_jitter_keeps_half() -> None:
    for attempt in range(1, 10):
        assert 0 <= THROTTLE.delay(attempt) <= THROTTLE.step(attempt)
        step = SOURCE_CALL.step(attempt)
        assert step / 2 <= SOURCE_CALL.delay(attempt) <= step


def test_no_jitter_is_exactly_the_step() -> None:
    assert [DELETE_ENTRY.delay(n) for n in range(1, 5)] == [0.2, 0.4, 0.8, 1.6]


def test_a_longer_retry_after_hint_wins_but_never_past_the_cap() -> None:
    assert THROTTLE.delay(1, hint=7.0) == 7.0
    assert THROTTLE.delay(1, hint=600.0) == 60.0


def test_backoff_counts_attempts_and_resets() -> None:
    backoff = Backoff(Curve(base=1.0, cap=8.0, jitter=0.0))
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next() == 1.0


def test_errors_say_whether_retrying_helps() -> None:
    assert RetriableError.retriable
    assert not FatalError.retriable
    assert not Stopped.retriable


async def test_sleep_or_stop_wakes_when_stopping() -> None:
    stopping = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def stop() -> None:
                stopping.set()

            tg.start_soon(stop)
            assert await sleep_or_stop(60, stopping) is True


async def test_sleep_or_stop_sleeps_out_when_nobody_stops() -> None:
    assert await sleep_or_stop(0.001, anyio.Event()) is False


async def test_retry_result_calls_until_the_result_is_good() -> None:
    answers = iter([3, 2, 1, 0])
    seen: list[tuple[int, int]] = []

    async def call() -> int:
        return next(answers)

    result = await retry_result(
        call,
        again=bool,
        curve=Curve(0.001, 0.001),
        stopping=anyio.Event(),
        before_sleep=lambda result, attempt, _delay: seen.append((result, attempt)),
    )
    assert result == 0
    assert seen == [(3, 1), (2, 2), (1, 3)]


async def test_retry_result_gives_the_last_result_after_max_attempts() -> None:
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        return 5

    assert await retry_result(call, again=bool, curve=Curve(0.001, 0.001), stopping=None,
                              max_attempts=3) == 5  # fmt: skip
    assert calls == 3


async def test_retry_result_raises_stopped_when_its_owner_stops() -> None:
    stopping = anyio.Event()

    async def call() -> int:
        stopping.set()
        return 1

    with anyio.fail_after(5), pytest.raises(Stopped):
        await retry_result(call, again=bool, curve=Curve(30, 30), stopping=stopping)


async def test_retry_result_ends_once_time_left_runs_out_after_an_attempt() -> None:
    left = 1.0
    calls = 0

    async def call() -> int:
        nonlocal calls, left
        calls += 1
        left -= 0.4  # each attempt uses up 0.4 s of the time left: 0.6, 0.2, then -0.2
        return calls

    result = await retry_result(
        call, again=bool, curve=Curve(0.001, 0.001), stopping=None, time_left=lambda: left
    )
    assert (result, calls) == (3, 3)  # the last result, still wanting another


@pytest.mark.parametrize("wake", [False, True], ids=["sleeping", "waiting-for-wake"])
async def test_retry_result_cuts_a_wait_at_the_end_of_time_left(wake: bool) -> None:
    deadline = anyio.current_time() + 0.3
    delays: list[float] = []
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        return 1

    with anyio.fail_after(10):
        result = await retry_result(
            call,
            again=bool,
            curve=Curve(100, 100, jitter=0.0),
            stopping=anyio.Event(),
            before_sleep=lambda _result, _attempt, delay: delays.append(delay),
            wake=anyio.Event().wait if wake else None,
            time_left=lambda: deadline - anyio.current_time(),
        )
    assert anyio.current_time() >= deadline
    assert (result, calls) == (1, 1)  # no attempt once the time is up
    [delay] = delays
    assert 0 < delay <= 0.3  # the wait announced is the one made, not the curve's 100 s


async def test_retry_result_woken_before_time_runs_out_tries_again() -> None:
    woken = anyio.Event()
    answers = iter([1, 0])

    async def call() -> int:
        answer = next(answers)
        woken.set()
        return answer

    with anyio.fail_after(10):
        result = await retry_result(
            call,
            again=bool,
            curve=Curve(100, 100, jitter=0.0),
            stopping=anyio.Event(),
            wake=woken.wait,
            time_left=lambda: 60.0,
        )
    assert result == 0
