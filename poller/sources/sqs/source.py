"""An SQS mapping with Lambda's semantics (ESM-SEMANTICS §1.1, §1.2, §3.2, §4.1).

Receivers long-poll the queue and each gathers one batch at a time; a batch holds one of
`maximum_concurrency` slots from its first receive until it is settled, so receivers pause
while that many batches are in flight and memory stays bounded whatever the backlog.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from poller.aws.errors import AWS_ERRORS, describe
from poller.config.settings import MappingSettings
from poller.engine.invoker import Invoker, split_in_two
from poller.engine.lifecycle import Shutdown
from poller.events.envelope import (
    MAX_PAYLOAD_BYTES,
    BatchVerdict,
    dumps,
    event_payload,
    new_trace_header,
    payload_size,
    sqs_record,
)
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import MappingMetrics
from poller.ops.status import MappingStatus, State
from poller.retry import SOURCE_CALL, THROTTLE, Backoff, Stopped, sleep_or_stop
from poller.sources.sqs.queue import Receipt, SqsQueue
from poller.sources.sqs.visibility import Lease, VisibilityKeeper

if TYPE_CHECKING:
    from types_aiobotocore_sqs.literals import QueueAttributeFilterType

log = logging.getLogger("poller.sqs")

LONG_POLL_SECONDS = 20
MAX_RECEIVERS = 10


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """One received message: its Lambda record serialized once, plus what settling needs."""

    receipt: Receipt
    group_id: str | None
    trace_header: str | None
    serialized: bytes

    @property
    def message_id(self) -> str:
        return self.receipt.message_id


class _Batch:
    """Messages gathered by one receiver; owns their visibility lease until settled."""

    __slots__ = ("lease", "messages", "size")

    def __init__(self, lease: Lease) -> None:
        self.messages: list[SqsMessage] = []
        self.size = 0
        self.lease = lease

    def fits(self, message: SqsMessage) -> bool:
        total = payload_size(self.size + len(message.serialized), len(self.messages) + 1)
        return not self.messages or total <= MAX_PAYLOAD_BYTES

    def add(self, message: SqsMessage) -> None:
        self.messages.append(message)
        self.size += len(message.serialized)
        self.lease.receipts.append(message.receipt)


class SqsSource:
    """Runs one SQS mapping until shutdown begins, then drains what is in flight."""

    def __init__(
        self,
        mapping: MappingSettings,
        queue: SqsQueue,
        invoker: Invoker,
        filters: FilterSet,
        metrics: MappingMetrics,
        status: MappingStatus,
        *,
        shutdown: Shutdown,
        backlog_interval: float = 15.0,
    ) -> None:
        self.mapping = mapping
        self.queue = queue
        self.invoker = invoker
        self.filters = filters
        self.metrics = metrics
        self.status = status
        self._shutdown = shutdown
        self._backlog_interval = backlog_interval
        self._slots = anyio.Semaphore(mapping.maximum_concurrency)
        self._keeper = VisibilityKeeper(queue)
        self._unsettled = 0
        self._idle = anyio.Event()
        self._idle.set()
        # One back-off for every receiver: a fleet of them must not hammer an endpoint that
        # is down, and comes back soon after it returns.
        self._receive_backoff = Backoff(THROTTLE)
        self._fifo = mapping.source_arn.is_fifo
        self._region = mapping.source_arn.region
        self._extra = {"mapping": mapping.name}
        # Batches still unsettled when the drain deadline passed (SPEC §1: exit code 1).
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
            self.mapping.maximum_concurrency,
            extra=self._extra,
        )
        async with anyio.create_task_group() as work:
            work.start_soon(self._keeper.run)
            work.start_soon(self._refresh_backlog)
            async with anyio.create_task_group() as intake:
                for _ in range(min(self.mapping.maximum_concurrency, MAX_RECEIVERS)):
                    intake.start_soon(self._receiver, work)
                await self._shutdown.stopping.wait()
                intake.cancel_scope.cancel()
            self.status.set(State.STOPPING)
            with anyio.move_on_at(self._shutdown.deadline):
                await self._idle.wait()
            self.abandoned = self._unsettled
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
                    what=f"mapping {self.mapping.name}: queue {self.mapping.source}",
                    permission="sqs:GetQueueUrl and sqs:GetQueueAttributes",
                )
                self.status.set(State.FAILED if problem.fatal else State.DEGRADED, problem.message)
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
        carry: _Batch | None = None
        while True:
            await self.invoker.gate.wait_open()
            await self._slots.acquire()
            self._begin()
            batch = carry or _Batch(self._keeper.hold([], time.monotonic()))
            carry = None
            try:
                carry = await self._gather(batch)
            except BaseException:
                # Shutdown cut the gathering short: hand the messages back to the queue now
                # rather than leaving them hidden for a whole visibility timeout.
                self._keeper.release(batch.lease)
                await self._return_to_queue(batch.lease.receipts)
                self._end()
                self._slots.release()
                raise
            if not batch.messages:
                self._keeper.release(batch.lease)
                self._end()
                self._slots.release()
                continue
            work.start_soon(self._process, batch)

    async def _return_to_queue(self, receipts: Sequence[Receipt]) -> None:
        if not receipts:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.queue.extend(receipts, 0)

    def _begin(self) -> None:
        self._unsettled += 1
        if self._idle.is_set():
            self._idle = anyio.Event()

    def _end(self) -> None:
        self._unsettled -= 1
        if self._unsettled == 0:
            self._idle.set()

    async def _gather(self, batch: _Batch) -> _Batch | None:
        """Fill `batch` until batch_size, the batching window, or the 6 MB payload limit.

        Returns the start of the next batch when a message did not fit, already holding
        its visibility lease so it stays hidden while the receiver waits for a slot.
        """
        window = self.mapping.maximum_batching_window_in_seconds
        deadline = time.monotonic() + window if batch.messages else None
        overflow: list[SqsMessage] = []
        while len(batch.messages) < self.mapping.batch_size and not overflow:
            if deadline is None:
                wait = LONG_POLL_SECONDS
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(LONG_POLL_SECONDS, math.floor(remaining))
            wanted = min(10, self.mapping.batch_size - len(batch.messages))
            received = await self._receive(wanted, wait, has_batch=bool(batch.messages))
            if received is None:
                break
            for message in received:
                if not overflow and batch.fits(message):
                    batch.add(message)
                else:
                    overflow.append(message)
            if batch.messages and deadline is None:
                if window == 0:
                    break
                deadline = time.monotonic() + window
        if not overflow:
            return None
        following = _Batch(self._keeper.hold([], time.monotonic()))
        for message in overflow:
            following.add(message)
        return following

    async def _receive(self, wanted: int, wait: int, *, has_batch: bool) -> list[SqsMessage] | None:
        """One ReceiveMessage; None when it failed and a partial batch should go as it is."""
        try:
            raw = await self.queue.receive(wanted, wait)
        except AWS_ERRORS as exc:
            problem = describe(
                exc,
                what=f"mapping {self.mapping.name}: receiving from {self.mapping.source}",
                permission="sqs:ReceiveMessage",
            )
            delay = self._receive_backoff.next()
            if problem.fatal:
                self.status.set(State.FAILED, problem.message)
            else:
                self.status.degraded(problem.message)
            log.error(problem.message, extra=self._extra)
            if has_batch:
                return None
            await sleep_or_stop(delay, self._shutdown.stopping)
            return []
        if self._receive_backoff.attempts:
            self._receive_backoff.reset()
            self.status.recovered()
        if not raw:
            return []
        self.metrics.count("polled", len(raw))
        kept: list[SqsMessage] = []
        dropped: list[Receipt] = []
        for message in raw:
            record = sqs_record(message, queue_arn=self.mapping.source, region=self._region)
            receipt = Receipt(record["messageId"], record["receiptHandle"])
            if self.filters and not self.filters.matches_sqs(record):
                dropped.append(receipt)
                continue
            attributes = record["attributes"]
            kept.append(
                SqsMessage(
                    receipt=receipt,
                    group_id=attributes.get("MessageGroupId"),
                    trace_header=attributes.get("AWSTraceHeader"),
                    serialized=dumps(record),
                )
            )
        if dropped:
            self.metrics.count("filtered_out", len(dropped))
            await self._delete(dropped)
        return kept

    # -- invoke and settle ---------------------------------------------------------------

    async def _process(self, batch: _Batch) -> None:
        try:
            await self._invoke_and_settle(batch.messages)
        except Stopped:
            log.info(
                "stopping with a held batch of %d; its messages reappear after their timeout",
                len(batch.messages),
                extra=self._extra,
            )
        finally:
            self._keeper.release(batch.lease)
            self._end()
            self._slots.release()

    async def _invoke_and_settle(self, messages: Sequence[SqsMessage]) -> None:
        trace = messages[0].trace_header or new_trace_header()
        payload = event_payload(m.serialized for m in messages)
        result = await self.invoker.invoke(payload, len(messages), trace)
        if result.too_large:
            if len(messages) == 1:
                log.error(
                    "a single message is too large for the target; left to the queue's "
                    "redrive policy",
                    extra={**self._extra, "batch": messages[0].message_id},
                )
                return
            first, second = split_in_two(messages)
            await self._invoke_and_settle(first)
            await self._invoke_and_settle(second)
            return
        verdict = self.invoker.verdict(
            result,
            [m.message_id for m in messages],
            report_batch_item_failures=self.mapping.report_batch_item_failures,
        )
        if verdict.failed_ids is None:
            log.warning(
                "batch of %d failed (%s); messages return after their visibility timeout",
                len(messages),
                verdict.reason,
                extra=self._extra,
            )
        await self._delete([m.receipt for m in self._deletable(messages, verdict)])

    def _deletable(self, messages: Sequence[SqsMessage], verdict: BatchVerdict) -> list[SqsMessage]:
        """Messages that succeeded; on FIFO, nothing after a failure within the same group."""
        failed = verdict.failed_ids
        if failed is None:
            return []
        if not self._fifo:
            return [m for m in messages if m.message_id not in failed]
        blocked: set[str | None] = set()
        keep: list[SqsMessage] = []
        for message in messages:
            if message.message_id in failed or message.group_id in blocked:
                blocked.add(message.group_id)
                continue
            keep.append(message)
        return keep

    async def _delete(self, receipts: list[Receipt]) -> None:
        if not receipts:
            return
        # Shielded: a delete cut in half by shutdown would redeliver work that succeeded.
        with anyio.CancelScope(shield=True):
            deleted = await self.queue.delete(receipts)
        self.metrics.count("deleted", deleted)

    # -- autoscaling signal -----------------------------------------------------------------

    async def _refresh_backlog(self) -> None:
        names: dict[QueueAttributeFilterType, str] = {
            "ApproximateNumberOfMessages": "visible",
            "ApproximateNumberOfMessagesNotVisible": "in_flight",
            "ApproximateNumberOfMessagesDelayed": "delayed",
        }
        while True:
            try:
                attributes: dict[str, Any] = await self.queue.attributes(list(names))
            except AWS_ERRORS as exc:
                log.debug("backlog refresh failed: %s", exc, extra=self._extra)
            else:
                for attribute, state in names.items():
                    self.metrics.backlog(state, float(attributes.get(attribute, 0)))
            await anyio.sleep(self._backlog_interval)
