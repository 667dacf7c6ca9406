"""Every loop that waits to try again uses this: named back-off curves, a step counter per
loop, one sleep that wakes when its owner stops, one tenacity-driven retry of a call, and a
small error hierarchy whose errors say whether trying again can mend them (as aiokafka's do).

Function errors on streams are not a generic retry (the mapping's retry count, record age and
bisect decide, in `poller.engine.settle`); their *spacing* is a curve here like the rest.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_result

T = TypeVar("T")


class PollerError(Exception):
    """poller's own errors. `retriable`: whether trying the same thing again can succeed."""

    retriable: ClassVar[bool] = False


class RetriableError(PollerError):
    """A failure that passes: an outage, a throttle, a destination briefly unreachable."""

    retriable = True


class FatalError(PollerError):
    """A failure a person must mend (configuration, permissions); retrying alone will not."""


class Stopped(PollerError):
    """A wait to try again was cut short because its owner started stopping: whatever it was
    holding (a batch, a delivery) is left unsettled, to be read or received again."""


@dataclass(frozen=True, slots=True)
class Curve:
    """Steps from `base` seconds, doubling, capped at `cap`. `jitter` is the share of each step
    drawn at random: 1.0 is full jitter (0 to the step), 0.5 keeps at least half of it (a
    persistent error never spins), 0 none."""

    base: float
    cap: float
    jitter: float = 1.0

    def step(self, attempt: int) -> float:
        """The ceiling of wait number `attempt` (1-based)."""
        return float(min(self.cap, self.base * 2 ** min(max(attempt - 1, 0), 62)))

    def delay(self, attempt: int, *, hint: float | None = None) -> float:
        """Wait number `attempt`; a server's Retry-After `hint` wins when longer (up to cap)."""
        step = self.step(attempt)
        delay = random.uniform(step * (1.0 - self.jitter), step)
        if hint is not None:
            delay = min(max(delay, hint), self.cap)
        return delay

    def scaled(self, base: float) -> Curve:
        """The same curve from another first step (tests shorten waits this way)."""
        return dataclasses.replace(self, base=base)


# Throttles and transient errors reaching the target: from 1 s, doubling, full jitter, capped
# at a minute; a server's Retry-After is honoured when longer.
THROTTLE = Curve(base=1.0, cap=60.0)
# Function-error retries of a stream batch: the same shape, capped at 30 s.
FUNCTION_ERROR = Curve(base=1.0, cap=30.0)
# Failing source and store calls (list, read, resolve, checkpoint): at least half of each step,
# so a fleet of readers does not hammer an endpoint that is down and never spins.
SOURCE_CALL = Curve(base=1.0, cap=60.0, jitter=0.5)
# Entries of a DeleteMessageBatch that failed for a passing reason: quick, a few times.
DELETE_ENTRY = Curve(base=0.2, cap=5.0, jitter=0.0)
# A mapping that crashed on a bug restarts after 5 s, then less often while it keeps crashing.
RESTART = Curve(base=5.0, cap=60.0, jitter=0.5)
# A runtime execution environment that failed to initialise: from 1 s to 30 s between starts.
ENVIRONMENT_START = Curve(base=1.0, cap=30.0, jitter=0.0)


class Backoff:
    """The waits of one retry loop along a curve; `reset` after a success."""

    __slots__ = ("attempts", "curve")

    def __init__(self, curve: Curve) -> None:
        self.curve = curve
        self.attempts = 0

    def next(self, *, hint: float | None = None) -> float:
        """The next wait, in seconds."""
        self.attempts += 1
        return self.curve.delay(self.attempts, hint=hint)

    def reset(self) -> None:
        """Start over from the curve's first step."""
        self.attempts = 0


async def sleep_or_stop(seconds: float, stopping: anyio.Event) -> bool:
    """Sleep `seconds`, waking early once `stopping` is set; True when it is set."""
    if not stopping.is_set():
        with anyio.move_on_after(seconds):
            await stopping.wait()
    return stopping.is_set()


class _OutOfTime(Exception):
    """A wait of `retry_result` reached the end of its `time_left`: no attempt follows."""


async def _end_when(waiting: Callable[[], Awaitable[object]], scope: anyio.CancelScope) -> None:
    await waiting()
    scope.cancel()


async def retry_result(
    call: Callable[[], Awaitable[T]],
    *,
    again: Callable[[T], bool],
    curve: Curve,
    stopping: anyio.Event | None,
    hint: Callable[[T], float | None] | None = None,
    before_sleep: Callable[[T, int, float], None] | None = None,
    max_attempts: int | None = None,
    wake: Callable[[], Awaitable[object]] | None = None,
    time_left: Callable[[], float] | None = None,
) -> T:
    """Call until `again(result)` is false, waiting along `curve` in between; the last result.

    `before_sleep(result, attempt, delay)` runs before each wait (status, logs); it may raise
    to stop. A wait raises `Stopped` once `stopping` is set, and ends early when `wake()`
    returns (something changed that makes another attempt worth it at once). With
    `max_attempts`, the result of the last attempt is returned even if it still wants another.
    `stopping` None: the waits run to their end whatever happens (a shielded write that must
    finish). `time_left()` is how many seconds more the call is worth retrying (the age limit
    of the records a held invocation carries): a wait never outlasts it, and once it is below
    0 after an attempt or at the end of a wait, no attempt follows and the last result is
    returned, still wanting another.

    The first attempt runs before any retry machinery is built: nearly every invoke and delete
    succeeds at once, and building tenacity's retry object and its callbacks cost ~57 µs a
    call (two calls per SQS batch). tenacity's retry object keeps its state per call (per
    thread, not per task), so one shared by a mapping's concurrent calls would mix them up.
    """
    first = await call()
    if not again(first):
        return first
    pending = [first]  # tenacity's attempt 1 is the one already made
    latest = [first]

    def out_of_time() -> bool:
        return time_left is not None and time_left() < 0

    def stop(state: RetryCallState) -> bool:
        if max_attempts is not None and state.attempt_number >= max_attempts:
            return True
        return out_of_time()

    def wait(state: RetryCallState) -> float:
        outcome = state.outcome
        result_hint = None
        if hint is not None and outcome is not None and not outcome.failed:
            result_hint = hint(outcome.result())
        delay = curve.delay(state.attempt_number, hint=result_hint)
        if time_left is not None:
            delay = min(delay, max(0.0, time_left()))
        return delay

    def announce(state: RetryCallState) -> None:
        if before_sleep is not None and state.outcome is not None and not state.outcome.failed:
            before_sleep(state.outcome.result(), state.attempt_number, state.upcoming_sleep)

    async def sleep(seconds: float) -> None:
        # Cut at the end of `time_left`, so a long back-off never outlasts it.
        left = math.inf if time_left is None else time_left()
        cut = left <= seconds
        seconds = max(0.0, min(seconds, left))
        if wake is None:
            if stopping is None:
                await anyio.sleep(seconds)
            elif await sleep_or_stop(seconds, stopping):
                raise Stopped("stopping")
            timed_out = True
        else:
            with anyio.move_on_after(seconds) as timer:
                async with anyio.create_task_group() as waits:
                    waits.start_soon(_end_when, wake, waits.cancel_scope)
                    if stopping is not None:
                        waits.start_soon(_end_when, stopping.wait, waits.cancel_scope)
            if stopping is not None and stopping.is_set():
                raise Stopped("stopping")
            timed_out = timer.cancelled_caught
        # Woken early (`wake`), the call is tried again at once, as without `time_left`.
        if cut and timed_out and out_of_time():
            raise _OutOfTime

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits it (a lambda returning a coroutine is not).
        if pending:
            return pending.pop()
        latest[0] = await call()
        return latest[0]

    def last_result(state: RetryCallState) -> T:
        assert state.outcome is not None
        result: T = state.outcome.result()
        return result

    retrying = AsyncRetrying(
        retry=retry_if_result(again),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=announce,
        retry_error_callback=last_result,
        reraise=True,
    )
    try:
        result: T = await retrying(attempt)
    except _OutOfTime:
        return latest[0]
    return result
