"""Settling one stream batch with Lambda's rules (ESM-SEMANTICS §3.3, §1.2, §0).

`StreamBatchProcessor.process` takes the records a shard reader gathered and returns once every
one of them is settled: delivered to the function, sent to the on-failure destination, or given
up with no destination (counted `dropped`). The reader then checkpoints after the last record.
Along the way it reports intermediate positions through `progress`, so a batch that is half
done when the daemon stops is replayed only from where it stopped.

Retries of function errors are not a generic retry: they follow the mapping's
`maximum_retry_attempts`, `maximum_record_age_in_seconds` and `bisect_batch_on_function_error`.
What never reached the function (throttles, outages) is held by the Invoker and costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from poller.config.settings import MappingSettings
from poller.engine.destinations import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    DeliveryError,
    OnFailureDestination,
    S3Destination,
    invocation_record,
)
from poller.engine.invoker import Invoker, split_in_two
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.events.envelope import event_payload
from poller.ops.metrics import MappingMetrics
from poller.retry import FUNCTION_ERROR, THROTTLE, Curve, Stopped, sleep_or_stop
from poller.targets.base import InvokeResult

log = logging.getLogger("poller.streams")

Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _History:
    """What the records of a (sub-)batch went through so far.

    `retries` counts retries spent against maximum_retry_attempts; `invocations` counts every
    invocation that included these records (approximateInvokeCount); `last` is the latest of
    those invocations' results, None while they were never invoked.
    """

    retries: int = 0
    invocations: int = 0
    last: InvokeResult | None = None


class _Run:
    """One call of `process`: reports each settled prefix except the batch's end, which the
    caller checkpoints itself once `process` returns."""

    __slots__ = ("_end", "_progress", "shard_id")

    def __init__(self, shard_id: str, end: StreamRecord, progress: Progress | None) -> None:
        self.shard_id = shard_id
        self._end = end.sequence
        self._progress = progress

    async def settled(self, record: StreamRecord) -> None:
        if self._progress is not None and record.sequence != self._end:
            await self._progress(record.sequence_number)


def _span(records: Sequence[StreamRecord]) -> str:
    first, last = records[0].sequence_number, records[-1].sequence_number
    return first if first == last else f"{first}..{last}"


class StreamBatchProcessor:
    """Invokes and settles batches of one stream mapping; one instance serves all its shards."""

    def __init__(
        self,
        mapping: MappingSettings,
        invoker: Invoker,
        metrics: MappingMetrics,
        *,
        kind: Literal["kinesis", "dynamodb"],
        stream_arn: str,
        function_arn: str,
        destination: OnFailureDestination | None,
        shutdown: Shutdown,
        clock: Callable[[], float] = time.time,
        retry_curve: Curve = FUNCTION_ERROR,
        delivery_curve: Curve = THROTTLE,
    ) -> None:
        """`retry_curve` spaces function-error retries; `delivery_curve` spaces retries of a
        failed on-failure delivery."""
        self.mapping = mapping
        self.invoker = invoker
        self.metrics = metrics
        self.kind = kind
        self.stream_arn = stream_arn
        self.function_arn = function_arn
        self.destination = destination
        self._shutdown = shutdown
        self._clock = clock
        self._retry_curve = retry_curve
        self._delivery_curve = delivery_curve
        self._max_retries = mapping.maximum_retry_attempts
        self._max_age = mapping.maximum_record_age_in_seconds
        if isinstance(destination, S3Destination) and destination.esm_uuid is None:
            destination.esm_uuid = mapping.uuid  # S3 keys name the mapping (§1.4)

    async def process(
        self,
        shard_id: str,
        records: Sequence[StreamRecord],
        progress: Progress | None = None,
    ) -> None:
        """Settle every record of one shard's batch, in order; return when all are settled.

        `progress(sequence_number)` is awaited whenever a prefix of the batch is settled
        before the end (a partial failure's successful head, a bisected half, a given-up
        run), so the caller may checkpoint there. Raises `Stopped` when shutdown begins while
        the batch is held, waiting to be retried or waiting to be delivered; the caller then
        checkpoints no further than `progress` reported.
        """
        if not records:
            return
        await self._settle(_Run(shard_id, records[-1], progress), records, _History())

    # -- the ESM rules -----------------------------------------------------------------------

    async def _settle(self, run: _Run, records: Sequence[StreamRecord], history: _History) -> None:
        """Settle `records` in order: invoke, then retry, bisect, split or give up."""
        while records:
            records = await self._expire(run, records, history)
            if not records:
                return
            self.metrics.iterator_age(run.shard_id, self._clock() - records[-1].arrival)
            result = await self.invoker.invoke(
                event_payload(r.serialized for r in records), len(records)
            )
            history = replace(history, invocations=history.invocations + 1, last=result)
            if result.too_large:
                if len(records) == 1:
                    # §0: a single record over the payload limit is a failed batch of one;
                    # retrying cannot make it smaller.
                    await self._give_up(run, records, RETRY_ATTEMPTS_EXHAUSTED, history)
                    return
                await self._halves(run, records, history)
                return
            verdict = self.invoker.verdict(
                result,
                [r.sequence_number for r in records],
                report_batch_item_failures=self.mapping.report_batch_item_failures,
            )
            if verdict.all_succeeded:
                await run.settled(records[-1])
                return
            if verdict.failed_ids is not None:
                # §1.2: everything before the lowest reported sequence number is done; the
                # rest is retried from there, and that retry counts as an attempt (§0).
                lowest = min(int(identifier) for identifier in verdict.failed_ids)
                head = sum(1 for r in records if r.sequence < lowest)
                if head:
                    await run.settled(records[head - 1])
                records = records[head:]
                reason = f"{len(verdict.failed_ids)} record(s) reported failed"
            elif self.mapping.bisect_batch_on_function_error and len(records) > 1:
                # §3.3 step 4: halving does not consume attempts; a failing half is bisected
                # again, so a poison record ends alone.
                await self._halves(run, records, history)
                return
            else:
                reason = verdict.reason or "function error"
            if 0 <= self._max_retries <= history.retries:
                await self._give_up(run, records, RETRY_ATTEMPTS_EXHAUSTED, history)
                return
            history = replace(history, retries=history.retries + 1)
            delay = self._retry_curve.delay(history.retries)
            log.warning(
                "batch of %d failed (%s); retry %d%s in %.1fs",
                len(records),
                reason,
                history.retries,
                f" of {self._max_retries}" if self._max_retries >= 0 else "",
                delay,
                extra=self._extra(run, records),
            )
            await self._sleep(delay)

    async def _halves(self, run: _Run, records: Sequence[StreamRecord], history: _History) -> None:
        first, second = split_in_two(records)
        await self._settle(run, first, history)
        await self._settle(run, second, history)

    async def _expire(
        self, run: _Run, records: Sequence[StreamRecord], history: _History
    ) -> Sequence[StreamRecord]:
        """Give up the records older than maximum_record_age_in_seconds; return the rest.

        Arrival times grow along a shard, so the too-old records are a prefix: everything up
        to the last too-old record goes, which keeps the given-up run contiguous.
        """
        if self._max_age < 0:
            return records
        now = self._clock()
        expired = 0
        for index, record in enumerate(records):
            if now - record.arrival > self._max_age:
                expired = index + 1
        if expired:
            await self._give_up(run, records[:expired], RECORD_AGE_EXCEEDED, history)
        return records[expired:]

    # -- giving up -------------------------------------------------------------------------

    async def _give_up(
        self, run: _Run, records: Sequence[StreamRecord], condition: str, history: _History
    ) -> None:
        """Send the records' invocation record to the destination (or drop them), then settle.

        A failing delivery is retried with back-off and the shard waits: records leave a
        shard only through the function, the destination, or a configured absence of one.
        """
        extra = self._extra(run, records)
        if self.destination is None:
            self.metrics.count("dropped", len(records))
            log.error(
                "gave up %d record(s) of shard %s, sequence numbers %s (%s); no on-failure "
                "destination configured, so they are skipped",
                len(records),
                run.shard_id,
                _span(records),
                condition,
                extra=extra,
            )
            await run.settled(records[-1])
            return
        record = invocation_record(
            kind=self.kind,
            condition=condition,
            function_arn=self.function_arn,
            shard_id=run.shard_id,
            stream_arn=self.stream_arn,
            records=records,
            approximate_invoke_count=history.invocations,
            last_result=history.last,
            now=self._clock(),
        )
        payload = event_payload(r.serialized for r in records)
        await self._deliver(record, payload, extra)
        self.metrics.count("on_failure_delivered", len(records))
        log.warning(
            "gave up %d record(s) of shard %s, sequence numbers %s (%s); invocation record "
            "sent to %s",
            len(records),
            run.shard_id,
            _span(records),
            condition,
            self.destination.arn,
            extra=extra,
        )
        await run.settled(records[-1])

    async def _deliver(self, record: dict[str, Any], payload: bytes, extra: dict[str, str]) -> None:
        assert self.destination is not None
        attempt = 0
        while True:
            try:
                await self.destination.deliver(record, payload)
                return
            except DeliveryError as exc:
                attempt += 1
                self.metrics.on_failure_errors.inc()
                delay = self._delivery_curve.delay(attempt)
                log.error(
                    "on-failure delivery failed: %s; the shard waits, retrying in %.1fs",
                    exc,
                    delay,
                    extra={**extra, "attempt": attempt},
                )
                await self._sleep(delay)

    # -- plumbing --------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        # A batch waiting to be retried is abandoned, not waited out, once the mapping stops:
        # it was not checkpointed past `progress`, so it is replayed after the restart.
        if await sleep_or_stop(seconds, self._shutdown.stopping):
            raise Stopped("stopping")

    def _extra(self, run: _Run, records: Sequence[StreamRecord]) -> dict[str, str]:
        return {"mapping": self.mapping.name, "shard": run.shard_id, "batch": _span(records)}
