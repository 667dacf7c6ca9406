"""The part of a mapping every source shares: invoke a batch, hold it through throttles and
outages with back-off, count what happened, and read the function's verdict.

Sources decide what a verdict means for their records (delete, checkpoint, bisect); the rules
for *reaching* the function, and for classifying its answer, live here once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

from poller.engine.lifecycle import Gate, Shutdown
from poller.engine.verdict import BatchVerdict, verdict_for
from poller.ops.metrics import MappingMetrics
from poller.ops.status import TARGET, MappingStatus
from poller.retry import THROTTLE, Curve, Stopped, retry_result
from poller.targets.base import InvocationRequest, InvokeResult, Outcome, Target

log = logging.getLogger("poller.engine")

# Invoke errors that name a problem a person must fix: unauthorized, forbidden, not found.
_NEEDS_A_HUMAN = frozenset({401, 403, 404, 405})


def _needs_retry(result: InvokeResult) -> bool:
    return not result.reached_function and not result.too_large


class Invoker:
    """Invokes one mapping's target, retrying what never reached the function."""

    def __init__(
        self,
        target: Target,
        metrics: MappingMetrics,
        status: MappingStatus,
        *,
        shutdown: Shutdown,
        curve: Curve = THROTTLE,
    ) -> None:
        self.target = target
        self.metrics = metrics
        self.status = status
        self.gate = Gate()
        self._shutdown = shutdown
        self._curve = curve
        self._in_flight = 0

    async def _attempt(self, payload: bytes, count: int, trace_header: str | None) -> InvokeResult:
        request = InvocationRequest(payload, str(uuid.uuid4()), trace_header)
        self.metrics.count("invoked", count)
        self.metrics.batch_size.observe(count)
        self._in_flight += 1
        self.metrics.concurrent.set(self._in_flight)
        started = time.monotonic()
        try:
            result = await self.target.invoke(request)
        finally:
            self._in_flight -= 1
            self.metrics.concurrent.set(self._in_flight)
        self.metrics.invocation(result.outcome)
        if result.reached_function:
            self.metrics.duration.observe(time.monotonic() - started)
        if result.outcome is not Outcome.SUCCESS:
            self.metrics.count("failed", count)
        return result

    def _held(self, result: InvokeResult) -> str:
        """The target did not take a batch: close the gate, show the mapping degraded (or
        failed), and raise `Stopped` if the mapping is stopping; the reason, for logs."""
        reason = f"{result.outcome.value}: {result.detail}"
        self.gate.close()
        message = f"mapping {self.status.name}: target {self.target.description}: {reason}"
        if result.status_code in _NEEDS_A_HUMAN:
            # The function is missing or refuses poller: retrying will not mend it, so the
            # mapping shows failed (poller_mapping_up 0) while it keeps trying with back-off.
            self.status.failed(TARGET, message)
        else:
            self.status.degraded(TARGET, message)
        if self._shutdown.is_stopping:
            raise Stopped(reason)
        return reason

    def _on_hold(self, result: InvokeResult, attempt: int, delay: float) -> None:
        reason = self._held(result)
        log.warning(
            "target did not take the batch (%s); retrying in %.1fs",
            reason,
            delay,
            extra={"mapping": self.status.name, "attempt": attempt},
        )

    async def invoke(
        self,
        payload: bytes,
        count: int,
        trace_header: str | None = None,
        *,
        hold_for: Callable[[], float] | None = None,
    ) -> InvokeResult:
        """Invoke until the function is reached (or the target says the batch is too large).

        Throttles and invoke errors never count as attempts of the batch: they back off and
        retry while the mapping shows degraded. Raises `Stopped` if the mapping starts stopping
        during a back-off, so the caller can leave the batch unsettled. `hold_for()` is how
        many seconds more the batch is worth holding (its records' age limit): the hold ends
        when that runs out, however long the back-off drawn, and the last result is returned,
        one that never reached the function.
        """
        result = await retry_result(
            lambda: self._attempt(payload, count, trace_header),
            again=_needs_retry,
            curve=self._curve,
            stopping=self._shutdown.stopping,
            hint=lambda result: result.retry_after,
            before_sleep=self._on_hold,
            # Another batch reaching the function opens the gate: every held batch tries
            # again at once instead of waiting out the back-off it drew during the outage.
            wake=self.gate.wait_open,
            time_left=hold_for,
        )
        if _needs_retry(result):
            # Held until its records aged out: the target still does not take batches (the
            # last attempt may have been the first, so nothing said so yet).
            self._held(result)
            return result
        if not self.gate.is_open:
            self.gate.open()
            self.status.recovered(TARGET)
        return result

    def verdict(
        self, result: InvokeResult, batch_ids: Sequence[str], *, report_batch_item_failures: bool
    ) -> BatchVerdict:
        """The batch verdict for a result that reached the function, counting the records a
        successful invocation still failed (reported items, or an unreadable answer)."""
        verdict = verdict_for(
            result, batch_ids, report_batch_item_failures=report_batch_item_failures
        )
        if result.outcome is Outcome.SUCCESS:
            failed = len(batch_ids) if verdict.failed_ids is None else len(verdict.failed_ids)
            self.metrics.count("failed", failed)
        return verdict
