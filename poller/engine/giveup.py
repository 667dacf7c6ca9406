"""What a mapping does with records the engine gave up on, as Lambda does.

SQS leaves them to the queue: they are not deleted, come back after the visibility timeout,
and the queue's redrive policy decides when they go to its dead-letter queue. Streams cannot
leave a record behind without stalling the shard, so they send Lambda's invocation record to
the on-failure destination, or, without one, drop the records with an error log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from poller.aws.calls import charged_to
from poller.engine.destinations import DeliveryError, OnFailureDestination
from poller.engine.lifecycle import Shutdown
from poller.engine.records import Record, StreamRecord
from poller.engine.settle import History, span
from poller.events.envelope import event_payload
from poller.events.invocation import invocation_record
from poller.ops.metrics import MappingMetrics
from poller.retry import THROTTLE, Backoff, Curve, Stopped, sleep_or_stop

log = logging.getLogger("poller.engine")


class LeaveToQueue:
    """SQS: a record given up is simply not deleted; it is the queue's again."""

    def __init__(self, mapping: str) -> None:
        self._mapping = mapping

    async def __call__(
        self,
        records: Sequence[Record],
        *,
        condition: str,
        reason: str,
        history: History,
        scope: str | None,
    ) -> bool:
        """Log what goes back; nothing counts as settled."""
        log.warning(
            "%d message(s) not deleted (%s); they return after their visibility timeout, "
            "and the queue's redrive policy applies",
            len(records),
            reason,
            extra={"mapping": self._mapping, "batch": span(records)},
        )
        return False


@dataclass(frozen=True)
class StreamOrigin:
    """Whose records an invocation record describes: the mapping, its stream and function."""

    mapping: str
    kind: Literal["kinesis", "dynamodb"]
    stream_arn: str
    function_arn: str


@dataclass(eq=False)
class SendOnFailure:
    """Streams: the invocation record goes to the on-failure destination (or the records are
    dropped when there is none); either way they are settled and the shard moves on.

    A failing delivery is retried with back-off and the shard waits: records leave a shard only
    through the function, the destination, or a configured absence of one.
    """

    destination: OnFailureDestination | None
    metrics: MappingMetrics
    origin: StreamOrigin
    shutdown: Shutdown
    clock: Callable[[], float] = time.time
    delivery_curve: Curve = THROTTLE  # the back-off of a failing delivery

    async def __call__(
        self,
        records: Sequence[StreamRecord],
        *,
        condition: str,
        reason: str,
        history: History,
        scope: str | None,
    ) -> bool:
        """Send (or drop) the records' invocation record; True once done."""
        shard_id = scope or ""
        extra = {"mapping": self.origin.mapping, "shard": shard_id, "batch": span(records)}
        if self.destination is None:
            self.metrics.count("dropped", len(records))
            log.error(
                "gave up %d record(s) of shard %s, sequence numbers %s (%s); no on-failure "
                "destination configured, so they are skipped",
                len(records),
                shard_id,
                span(records),
                condition,
                extra=extra,
            )
            return True
        record = invocation_record(
            kind=self.origin.kind,
            condition=condition,
            function_arn=self.origin.function_arn,
            shard_id=shard_id,
            stream_arn=self.origin.stream_arn,
            records=records,
            approximate_invoke_count=history.invocations,
            last_result=history.last,
            now=self.clock(),
        )
        await self._deliver(
            self.destination, record, event_payload(r.serialized for r in records), extra
        )
        self.metrics.count("on_failure_delivered", len(records))
        log.warning(
            "gave up %d record(s) of shard %s, sequence numbers %s (%s); invocation record "
            "sent to %s",
            len(records),
            shard_id,
            span(records),
            condition,
            self.destination.arn,
            extra=extra,
        )
        return True

    async def _deliver(
        self,
        destination: OnFailureDestination,
        record: dict[str, object],
        payload: bytes,
        extra: dict[str, str],
    ) -> None:
        backoff = Backoff(self.delivery_curve)
        while True:
            try:
                # Shielded: a send cut in half by shutdown could leave a record behind and
                # then be sent again after the restart; but never past the drain deadline.
                # Its failed calls (an SQS destination's GetQueueUrl) are delivery errors,
                # counted below, not source errors.
                with self.shutdown.shielded() as shield, charged_to(None):
                    await destination.deliver(record, payload)
                if shield.cancelled_caught:
                    raise Stopped("drain deadline passed during an on-failure delivery")
                return
            except DeliveryError as exc:
                self.metrics.on_failure_errors.inc()
                delay = backoff.next()
                log.error(
                    "on-failure delivery failed: %s; the shard waits, retrying in %.1fs",
                    exc,
                    delay,
                    extra={**extra, "attempt": backoff.attempts},
                )
                if await sleep_or_stop(delay, self.shutdown.stopping):
                    raise Stopped("stopping") from exc
