"""Settling one batch with Lambda's rules, whatever the source.

`Settler.settle` invokes a batch and returns once every record of it is settled: acknowledged
(deleted, or behind the checkpoint), or handed to the mapping's `GiveUp` (SQS leaves it to the
queue; streams send it on failure or drop it). Along the way it splits a batch the target finds
too large, acknowledges what a partial response lets go ("nothing after a failure within an
ordering key"), retries, bisects and expires records as the plan says.

Retries of function errors are not a generic retry: they follow `maximum_retry_attempts`,
`maximum_record_age_in_seconds` and `bisect_batch_on_function_error`. What never reached the
function (throttles, outages) is held by the Invoker and costs nothing, until its oldest
records pass the age limit: then they expire as if found too old before an invocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.engine.records import Record
from poller.engine.verdict import BatchVerdict, Ordering, split_acknowledged, whole_batch_failed
from poller.engine.windows import EMPTY_STATE, OpenWindow, read_state
from poller.events.envelope import event_payload, new_trace_header
from poller.events.invocation import RECORD_AGE_EXCEEDED, RETRY_ATTEMPTS_EXHAUSTED
from poller.ops.metrics import MappingMetrics
from poller.retry import FUNCTION_ERROR, THROTTLE, Backoff, Curve, Stopped, sleep_or_stop
from poller.targets.base import InvokeResult, Outcome

log = logging.getLogger("poller.engine")

R = TypeVar("R", bound=Record)
R_contra = TypeVar("R_contra", bound=Record, contravariant=True)
T = TypeVar("T")

# Told the records that settled: a contiguous run (streams) or the acknowledged ones (SQS).
Acknowledge = Callable[[Sequence[R]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SettlePlan:
    """How one mapping settles its batches, built once from its settings.

    `max_retries` is the retry budget of function errors (-1: until the records expire; SQS is
    0: a failed message is left to the queue at once). `max_record_age` is in seconds (-1: no
    limit). `retry_curve` spaces function-error retries; `window_curve` the retries of a
    tumbling window's final (or early-ending) invocation, which never give up.
    """

    report_batch_item_failures: bool
    ordering: Ordering
    max_retries: int = 0
    max_record_age: float = -1
    bisect: bool = False
    retry_curve: Curve = FUNCTION_ERROR
    window_curve: Curve = THROTTLE


@dataclass(frozen=True, slots=True)
class History:
    """What the records of a (sub-)batch went through so far.

    `retries` counts retries spent against maximum_retry_attempts; `invocations` counts every
    invocation that included these records (approximateInvokeCount); `last` is the latest of
    those invocations' results, None while they were never invoked.
    """

    retries: int = 0
    invocations: int = 0
    last: InvokeResult | None = None


class GiveUp(Protocol[R_contra]):
    """What happens to records the engine stops trying to deliver."""

    async def __call__(
        self,
        records: Sequence[R_contra],
        *,
        condition: str,
        reason: str,
        history: History,
        scope: str | None,
    ) -> bool:
        """Dispose of `records`; True when they now count as settled (acknowledge them)."""
        ...


class Settles(Protocol[R]):
    """What intake hands its batches to (`Settler`, or a test's scripted stand-in)."""

    async def settle(
        self,
        records: Sequence[R],
        acknowledge: Acknowledge[R],
        *,
        scope: str | None = None,
        window: OpenWindow | None = None,
    ) -> None:
        """Return once every record is settled; `acknowledge` each settled run on the way.
        With `window`, the records are of that tumbling window, whose state goes along."""
        ...

    async def close_window(self, window: OpenWindow) -> None:
        """The final invocation of a tumbling window; returns once it succeeded."""
        ...


def split_in_two(items: Sequence[T]) -> tuple[Sequence[T], Sequence[T]]:
    """Halves for bisecting (413 on any source, BisectBatchOnFunctionError on streams)."""
    middle = (len(items) + 1) // 2
    return items[:middle], items[middle:]


def span(records: Sequence[Record]) -> str:
    """`first..last` ids of a run of records, for logs."""
    first, last = records[0].id, records[-1].id
    return first if first == last else f"{first}..{last}"


@dataclass(frozen=True, slots=True)
class _Run(Generic[R]):
    """One call of `settle`: where its records came from and whom to tell what settled."""

    scope: str | None
    acknowledge: Acknowledge[R]
    window: OpenWindow | None = None

    def event(self, records: Sequence[R]) -> bytes:
        """The event of one invocation of `records`: plain, or with the window's fields."""
        serialized = (r.serialized for r in records)
        return event_payload(serialized) if self.window is None else self.window.event(serialized)


@dataclass(eq=False)
class Settler(Generic[R]):
    """Invokes and settles the batches of one mapping; one instance serves all its intake."""

    plan: SettlePlan
    invoker: Invoker
    give_up: GiveUp[R]
    metrics: MappingMetrics
    mapping: str  # its name, for logs
    shutdown: Shutdown
    clock: Callable[[], float] = time.time

    async def settle(
        self,
        records: Sequence[R],
        acknowledge: Acknowledge[R],
        *,
        scope: str | None = None,
        window: OpenWindow | None = None,
    ) -> None:
        """Settle every record of one batch, in order; return when all are settled.

        `acknowledge(run)` is awaited for each run of records that settled (delivered, or given
        up and counted as settled), so a stream may checkpoint there. `scope` is the shard a
        stream batch came from (None for SQS). With `window` (a tumbling window's batch) the
        events carry the window's fields and state, each answer must carry a new state, which
        the window keeps before its records are acknowledged. Raises `Stopped` when shutdown
        begins while the batch is held, waiting to be retried or delivered: what was not
        acknowledged is delivered again later.
        """
        if records:
            await self._settle(_Run(scope, acknowledge, window), records, History())

    async def close_window(self, window: OpenWindow) -> None:
        """The final invocation of a window a record reached: no records, its state. Retried
        along the throttle curve until it succeeds; it never spends attempts nor goes on
        failure, and the shard waits meanwhile. Raises `Stopped` when shutdown begins first."""
        if window.delivered:
            await self._window_only(window, final=True)

    async def _window_only(self, window: OpenWindow, *, final: bool) -> None:
        """An invocation of the window alone (final, or ending it early), until it succeeds."""
        what = "final invocation" if final else "early end"
        backoff = Backoff(self.plan.window_curve)
        while True:
            result = await self.invoker.invoke(
                window.event((), final=final, early=not final), 0, new_trace_header()
            )
            if result.outcome is Outcome.SUCCESS:
                return
            delay = backoff.next()
            log.warning(
                "the %s of window %d of shard %s failed (%s); the shard waits, retrying in %.1fs",
                what,
                window.start,
                window.shard_id,
                result.detail or result.outcome.value,
                delay,
                extra={"mapping": self.mapping, "shard": window.shard_id},
            )
            if await sleep_or_stop(delay, self.shutdown.stopping):
                raise Stopped("stopping")

    async def _carry_state(
        self, run: _Run[R], result: InvokeResult, verdict: BatchVerdict
    ) -> BatchVerdict:
        """A windowed answer must carry a state: keep it in the window (before any record is
        acknowledged, so the checkpoint stores both), or fail the batch without one."""
        window = run.window
        if window is None or result.outcome is not Outcome.SUCCESS:
            return verdict
        state, problem = read_state(result.payload)
        if state is None:
            return whole_batch_failed(problem)
        window.state = state
        if window.state_too_large:
            await self._window_only(window, final=False)
            window.state = EMPTY_STATE
        return verdict

    async def _settle(self, run: _Run[R], records: Sequence[R], history: History) -> None:
        """Settle `records` in order: invoke, then retry, bisect, split or give up."""
        plan = self.plan
        while records:
            records = await self._expire(run, records, history)
            if not records:
                return
            if run.scope is not None:
                self.metrics.iterator_age(run.scope, self.clock() - records[-1].arrival)
            result = await self.invoker.invoke(
                run.event(records),
                len(records),
                self._trace(records),
                hold_for=self._time_to_live(records),
            )
            history = replace(history, invocations=history.invocations + 1, last=result)
            if run.window is not None and result.reached_function:
                run.window.delivered = True
            if not result.reached_function and not result.too_large:
                # Held by throttles or an outage until its oldest records aged out: they go as
                # records too old before an invocation do, and the rest is invoked again.
                continue
            if result.too_large:
                if len(records) == 1:
                    # A single record over the payload limit is a failed batch of one:
                    # retrying cannot make it smaller.
                    await self._abandon(
                        run, records, RETRY_ATTEMPTS_EXHAUSTED, "too large for the target", history
                    )
                    return
                await self._halves(run, records, history)
                return
            verdict = self.invoker.verdict(
                result,
                [r.id for r in records],
                report_batch_item_failures=plan.report_batch_item_failures,
            )
            verdict = await self._carry_state(run, result, verdict)
            done, rest = split_acknowledged(records, verdict, plan.ordering)
            if done:
                await run.acknowledge(done)
            if not rest:
                return
            if verdict.failed_ids is not None:
                if done and plan.ordering == "batch":
                    # A stream's partial response that let records go moved the checkpoint:
                    # the rest is a new batch from its first failure, invoked at once, with
                    # its own attempts and invoke count (as AWS counts them).
                    records, history = rest, History()
                    continue
                # Nothing let go (or SQS): the rest is retried from its first failure, and
                # that retry counts as an attempt.
                reason = f"{len(verdict.failed_ids)} record(s) reported failed"
            elif plan.bisect and len(records) > 1:
                # Halving does not consume attempts; a failing half is bisected again, so a
                # poison record ends alone.
                await self._halves(run, records, history)
                return
            else:
                reason = verdict.reason or "function error"
            records = rest
            if 0 <= plan.max_retries <= history.retries:
                await self._abandon(run, records, RETRY_ATTEMPTS_EXHAUSTED, reason, history)
                return
            history = replace(history, retries=history.retries + 1)
            delay = plan.retry_curve.delay(history.retries)
            log.warning(
                "batch of %d failed (%s); retry %d%s in %.1fs",
                len(records),
                reason,
                history.retries,
                f" of {plan.max_retries}" if plan.max_retries >= 0 else "",
                delay,
                extra=self._extra(run, records),
            )
            # A batch waiting to be retried is abandoned, not waited out, once the mapping
            # stops: what was not acknowledged is delivered again after the restart.
            if await sleep_or_stop(delay, self.shutdown.stopping):
                raise Stopped("stopping")

    async def _halves(self, run: _Run[R], records: Sequence[R], history: History) -> None:
        first, second = split_in_two(records)
        await self._settle(run, first, history)
        await self._settle(run, second, history)

    def _time_to_live(self, records: Sequence[R]) -> Callable[[], float] | None:
        """Seconds until the oldest of `records` is too old (below 0: it is), for the Invoker
        to end a hold there; None without an age limit. `_expire`'s test, rearranged."""
        max_age = self.plan.max_record_age
        if max_age < 0:
            return None
        oldest = min(record.arrival for record in records)
        return lambda: max_age - (self.clock() - oldest)

    async def _expire(self, run: _Run[R], records: Sequence[R], history: History) -> Sequence[R]:
        """Give up the records older than maximum_record_age_in_seconds; return the rest.

        Arrival times grow along a shard, so the too-old records are a prefix: everything up
        to the last too-old record goes, which keeps the given-up run contiguous.
        """
        max_age = self.plan.max_record_age
        if max_age < 0:
            return records
        now = self.clock()
        expired = 0
        for index, record in enumerate(records):
            if now - record.arrival > max_age:
                expired = index + 1
        if expired:
            reason = f"older than {max_age:g}s"
            await self._abandon(run, records[:expired], RECORD_AGE_EXCEEDED, reason, history)
        return records[expired:]

    async def _abandon(
        self,
        run: _Run[R],
        records: Sequence[R],
        condition: str,
        reason: str,
        history: History,
    ) -> None:
        settled = await self.give_up(
            records, condition=condition, reason=reason, history=history, scope=run.scope
        )
        if settled:
            await run.acknowledge(records)

    def _trace(self, records: Sequence[R]) -> str:
        """The first record's trace header (SQS's AWSTraceHeader), else a new one: Lambda gives
        every invocation a trace id, stream batches included."""
        return records[0].trace_header or new_trace_header()

    def _extra(self, run: _Run[R], records: Sequence[R]) -> dict[str, str]:
        extra = {"mapping": self.mapping, "batch": span(records)}
        if run.scope is not None:
            extra["shard"] = run.scope
        return extra
