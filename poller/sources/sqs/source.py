"""An SQS mapping's intake and acknowledgement, as Lambda's SQS pollers do.

Receivers long-poll the queue and each gathers one batch at a time in the engine's `Batcher`;
a batch holds one of `maximum_concurrency` slots from its first receive until the engine has
settled it, so receivers pause while that many batches are in flight and memory stays bounded
whatever the backlog. Acknowledging is deleting; what the engine gives up stays in the queue.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from poller.aws.errors import AWS_ERRORS, describe
from poller.engine.batcher import Batcher, BatchLimits
from poller.engine.inflight import InFlight
from poller.engine.lifecycle import Shutdown
from poller.engine.settle import Settler
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import MappingMetrics
from poller.ops.status import SOURCE, MappingStatus, State
from poller.retry import SOURCE_CALL, THROTTLE, Backoff, Stopped, sleep_or_stop
from poller.sources.sqs.messages import SqsMessage, read_messages
from poller.sources.sqs.queue import QueueApi, Receipt
from poller.sources.sqs.visibility import Lease, VisibilityKeeper

if TYPE_CHECKING:
    from types_aiobotocore_sqs.literals import QueueAttributeFilterType

log = logging.getLogger("poller.sqs")

LONG_POLL_SECONDS = 20
MAX_RECEIVERS = 10
# How long handing unfinished messages back to the queue may take at shutdown.
_RETURN_TIMEOUT = 5.0

_BACKLOG: dict[QueueAttributeFilterType, str] = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """What an SQS mapping's intake needs, built once from its settings."""

    mapping: str
    queue_arn: str
    region: str
    batching: BatchLimits
    concurrency: int
    backlog_interval: float = 15.0

    @property
    def receivers(self) -> int:
        """Long-polling receivers: one per slot, at most ten (each gathers one batch)."""
        return min(self.concurrency, MAX_RECEIVERS)


class SqsSource:
    """Runs one SQS mapping until shutdown begins, then drains what is in flight."""

    def __init__(
        self,
        plan: QueuePlan,
        queue: QueueApi,
        settler: Settler[SqsMessage],
        filters: FilterSet,
        status: MappingStatus,
        *,
        shutdown: Shutdown,
    ) -> None:
        self.plan = plan
        self.queue = queue
        self.settler = settler
        self.filters = filters
        self.status = status
        self.metrics: MappingMetrics = status.metrics
        self._shutdown = shutdown
        self._inflight = InFlight(plan.concurrency)
        self._keeper = VisibilityKeeper(queue, shutdown)
        # One back-off for every receiver: a fleet of them must not hammer an endpoint that
        # is down, and comes back soon after it returns.
        self._receive_backoff = Backoff(THROTTLE)
        self._extra = {"mapping": plan.mapping}
        # Batches still unsettled when the drain deadline passed (`poller run` then exits 1).
        self.abandoned = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Resolve the queue, receive until shutdown, then wait for in-flight batches."""
        if not await self._connect():
            return
        self.status.set(State.RUNNING)
        log.info(
            "polling queue %s (visibility timeout %ss, concurrency %d)",
            self.queue.url,
            self.queue.visibility_timeout,
            self.plan.concurrency,
            extra=self._extra,
        )
        async with anyio.create_task_group() as work:
            work.start_soon(self._keeper.run)
            work.start_soon(self._refresh_backlog)
            async with anyio.create_task_group() as intake:
                for _ in range(self.plan.receivers):
                    intake.start_soon(self._receiver, work)
                await self._shutdown.stopping.wait()
                intake.cancel_scope.cancel()
            self.status.set(State.STOPPING)
            self.abandoned = await self._inflight.drain(self._shutdown.deadline)
            if self.abandoned:
                log.error(
                    "drain timed out with %d batch(es) unsettled; their messages reappear "
                    "after the visibility timeout",
                    self.abandoned,
                    extra=self._extra,
                )
            work.cancel_scope.cancel()

    async def _connect(self) -> bool:
        """Resolve the queue, retrying with back-off; False if stopped before it resolved."""
        backoff = Backoff(SOURCE_CALL)
        while not self._shutdown.is_stopping:
            try:
                await self.queue.resolve()
            except AWS_ERRORS as exc:
                problem = describe(
                    exc,
                    what=f"mapping {self.plan.mapping}: queue {self.plan.queue_arn}",
                    permission="sqs:GetQueueUrl and sqs:GetQueueAttributes",
                )
                if problem.fatal:
                    self.status.failed(SOURCE, problem.message)
                else:
                    self.status.degraded(SOURCE, problem.message)
                self.status.reached_source = True
                delay = backoff.next()
                log.error("%s (retrying in %.1fs)", problem.message, delay, extra=self._extra)
                await sleep_or_stop(delay, self._shutdown.stopping)
                continue
            self.status.reached_source = True
            if self.queue.visibility_timeout <= 0:
                log.warning(
                    "queue visibility timeout is 0: in-flight messages cannot be kept hidden",
                    extra=self._extra,
                )
            return True
        return False

    # -- intake ----------------------------------------------------------------------------

    async def _receiver(self, work: TaskGroup) -> None:
        """Gather batch after batch while a slot is free; each goes to the engine."""
        buffer: Batcher[SqsMessage] = Batcher(self.plan.batching)
        # What the buffer holds stays hidden while the receiver waits for a slot, too.
        waiting = self._keeper.hold([], time.monotonic())
        try:
            while True:
                await self.settler.invoker.gate.wait_open()
                await self._inflight.acquire()
                try:
                    batch = await self._gather(buffer, waiting)
                except BaseException:
                    self._inflight.release()
                    raise
                if not batch:
                    self._inflight.release()
                    continue
                lease = self._keeper.hold([m.receipt for m in batch], waiting.extended_at)
                waiting.receipts = [m.receipt for m in buffer]
                work.start_soon(self._process, batch, lease)
        finally:
            # Shutdown cut the gathering short: hand the messages back to the queue now
            # rather than leaving them hidden for a whole visibility timeout.
            self._keeper.release(waiting)
            await self._return_to_queue(waiting.receipts)

    async def _gather(self, buffer: Batcher[SqsMessage], waiting: Lease) -> list[SqsMessage]:
        """Receive into `buffer` until it holds a whole batch or its window closes; the batch.

        The window starts with the first message, or now if the buffer still holds messages
        that did not fit the last batch (the 6 MB limit); those go first.
        """
        limits = buffer.limits
        buffer.restart_window(time.monotonic())
        while not buffer.full():
            if not buffer:
                wait = LONG_POLL_SECONDS
            else:
                remaining = buffer.due_at() - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(LONG_POLL_SECONDS, math.floor(remaining))
            wanted = min(10, limits.size - len(buffer))
            received = await self._receive(wanted, wait, has_batch=bool(buffer))
            if received is None:
                break
            now = time.monotonic()
            for message in received:
                buffer.add(message, now)
                waiting.receipts.append(message.receipt)
        return buffer.take() if buffer else []

    async def _receive(self, wanted: int, wait: int, *, has_batch: bool) -> list[SqsMessage] | None:
        """One ReceiveMessage; None when it failed and a partial batch should go as it is."""
        try:
            raw = await self.queue.receive(wanted, wait)
        except AWS_ERRORS as exc:
            problem = describe(
                exc,
                what=f"mapping {self.plan.mapping}: receiving from {self.plan.queue_arn}",
                permission="sqs:ReceiveMessage",
            )
            delay = self._receive_backoff.next()
            if problem.fatal:
                self.status.failed(SOURCE, problem.message)
            else:
                self.status.degraded(SOURCE, problem.message)
            log.error(problem.message, extra=self._extra)
            if has_batch:
                return None
            await sleep_or_stop(delay, self._shutdown.stopping)
            return []
        if self._receive_backoff.attempts:
            self._receive_backoff.reset()
            self.status.recovered(SOURCE)
        if not raw:
            return []
        self.metrics.count("polled", len(raw))
        kept, dropped = read_messages(
            raw,
            queue_arn=self.plan.queue_arn,
            region=self.plan.region,
            filters=self.filters,
            batching_window=self.plan.batching.window > 0,
        )
        if dropped:
            self.metrics.count("filtered_out", len(dropped))
            await self._delete(dropped)
        return kept

    # -- settle and acknowledge --------------------------------------------------------------

    async def _process(self, batch: list[SqsMessage], lease: Lease) -> None:
        try:
            await self.settler.settle(batch, self._acknowledge)
        except Stopped:
            log.info(
                "stopping with a held batch of %d; its messages reappear after their timeout",
                len(batch),
                extra=self._extra,
            )
        finally:
            self._keeper.release(lease)
            self._inflight.release()

    async def _acknowledge(self, messages: Sequence[SqsMessage]) -> None:
        await self._delete([m.receipt for m in messages])

    async def _delete(self, receipts: list[Receipt]) -> None:
        if not receipts:
            return
        deleted = 0
        # Shielded: a delete cut in half by shutdown would redeliver work that succeeded.
        with self._shutdown.shielded() as shield:
            deleted = await self.queue.delete(receipts)
        if shield.cancelled_caught:
            log.warning(
                "drain deadline passed while deleting %d message(s); they may be delivered again",
                len(receipts),
                extra=self._extra,
            )
        self.metrics.count("deleted", deleted)

    async def _return_to_queue(self, receipts: Sequence[Receipt]) -> None:
        if not receipts:
            return
        with self._shutdown.shielded(), anyio.move_on_after(_RETURN_TIMEOUT):
            await self.queue.extend(receipts, 0)

    # -- autoscaling signal -----------------------------------------------------------------

    async def _refresh_backlog(self) -> None:
        while True:
            try:
                attributes = await self.queue.attributes(list(_BACKLOG))
            except AWS_ERRORS as exc:
                log.debug("backlog refresh failed: %s", exc, extra=self._extra)
            else:
                for attribute, state in _BACKLOG.items():
                    self.metrics.backlog(state, float(attributes.get(attribute, 0)))
            await anyio.sleep(self.plan.backlog_interval)
