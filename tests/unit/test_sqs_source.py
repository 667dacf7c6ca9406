"""The SQS side of the engine on shared fakes: batching, the FIFO rule, filtering, the
visibility heartbeat and the bounded drain. Wired by the same code as production."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from poller.config.settings import MappingSettings, TuningSettings
from poller.engine.lifecycle import Shutdown
from poller.ops.metrics import Metrics
from poller.ops.status import MappingStatus, State
from poller.sources.sqs.queue import Receipt
from poller.sources.sqs.source import SqsSource
from poller.sources.sqs.visibility import VisibilityKeeper
from poller.targets.base import InvokeResult
from poller.wiring import sqs_source
from tests.fakes.queues import MemoryQueue
from tests.fakes.targets import ERROR, OK, ScriptedTarget, failures
from tests.support.wait import eventually

QUEUE = "arn:aws:sqs:us-east-1:123456789012:orders"
FIFO = "arn:aws:sqs:us-east-1:123456789012:orders.fifo"


@dataclass
class Harness:
    queue: MemoryQueue
    target: ScriptedTarget
    source: SqsSource
    status: MappingStatus
    shutdown: Shutdown
    metrics: Metrics

    def events(self, stage: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "poller_events_total", {"mapping": "orders", "stage": stage}
        )
        return value or 0.0


@asynccontextmanager
async def running(
    queue: MemoryQueue,
    respond: Callable[[list[str]], InvokeResult] = lambda _: OK,
    *,
    drain: float = 5.0,
    target: ScriptedTarget | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    """An SQS mapping `orders` over `queue`, built by wiring, running in the background;
    stopped with `drain` seconds to settle when the block ends."""
    mapping = MappingSettings.model_validate(
        {
            "name": "orders",
            "source": queue.arn,
            "target": {"type": "python", "handler": "m:f"},
            **settings,
        }
    )
    metrics = Metrics()
    status = MappingStatus(
        "orders", mapping.uuid, queue.arn, "scripted", metrics.for_mapping("orders")
    )
    shutdown = Shutdown()
    target = target or ScriptedTarget(respond)
    source = sqs_source(mapping, queue, target, status, shutdown=shutdown, tuning=TuningSettings())
    harness = Harness(queue, target, source, status, shutdown, metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        await eventually(lambda: status.state is State.RUNNING, timeout=5)
        try:
            yield harness
        finally:
            shutdown.begin(drain)


async def test_batches_respect_batch_size_and_every_success_is_deleted() -> None:
    queue = MemoryQueue()
    sent = [queue.send(f"body {n}") for n in range(12)]
    async with running(queue, batch_size=5, maximum_batching_window_in_seconds=0) as h:
        await eventually(lambda: sorted(queue.deleted) == sent, timeout=5)
    assert all(len(call) <= 5 for call in h.target.calls)
    assert sorted(h.target.delivered) == sent
    assert h.events("deleted") == 12
    assert all(trace and trace.startswith("Root=1-") for trace in h.target.traces)


async def test_the_batching_window_gathers_messages_that_arrive_within_it() -> None:
    queue = MemoryQueue()
    async with running(queue, batch_size=10, maximum_batching_window_in_seconds=1) as h:
        queue.send("first")
        await eventually(lambda: queue.receive_calls >= 2, timeout=5)  # gathering after it
        queue.send("second")
        await eventually(lambda: len(queue.deleted) == 2, timeout=5)
    assert h.target.calls == [["m0001", "m0002"]]  # one batch: the window held the first


async def test_a_failed_message_is_left_to_the_queue_and_the_rest_deleted() -> None:
    queue = MemoryQueue()
    ids = [queue.send(f"b{n}") for n in range(4)]
    async with running(
        queue,
        lambda batch: failures(ids[1]),
        batch_size=10,
        maximum_batching_window_in_seconds=1,
        function_response_types=["ReportBatchItemFailures"],
    ):
        await eventually(lambda: len(queue.deleted) == 3, timeout=5)
    assert sorted(queue.deleted) == [ids[0], ids[2], ids[3]]
    assert ids[1] in queue.messages  # comes back after its visibility timeout


async def test_fifo_keeps_everything_after_a_failure_in_its_group() -> None:
    queue = MemoryQueue(arn=FIFO)
    order = [("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("a3", "A")]
    a1, b1, a2, b2, a3 = (queue.send(body, group) for body, group in order)
    async with running(
        queue,
        lambda batch: failures(a2) if a2 in batch else OK,
        batch_size=10,
        maximum_batching_window_in_seconds=1,
        function_response_types=["ReportBatchItemFailures"],
    ) as h:
        await eventually(lambda: len(queue.deleted) == 3, timeout=5)
        assert h.target.calls[0] == [a1, b1, a2, b2, a3]
    # a2 failed: a3 (same group, after it) stays; group B is untouched by A's failure.
    assert sorted(queue.deleted) == sorted([a1, b1, b2])
    assert set(queue.messages) == {a2, a3}


async def test_a_whole_batch_failure_deletes_nothing() -> None:
    queue = MemoryQueue()
    ids = [queue.send(f"b{n}") for n in range(3)]
    async with running(queue, lambda batch: ERROR, batch_size=10) as h:
        await eventually(lambda: len(h.target.calls) == 1, timeout=5)
        await eventually(lambda: h.events("failed") == 3, timeout=5)
    assert queue.deleted == []
    assert set(queue.messages) == set(ids)


async def test_filtered_out_messages_are_deleted_without_an_invocation() -> None:
    queue = MemoryQueue()
    keep = queue.send('{"kind": "order"}')
    drop = queue.send('{"kind": "noise"}')
    criteria = {"filters": [{"pattern": '{"body": {"kind": ["order"]}}'}]}
    async with running(queue, batch_size=10, filter_criteria=criteria) as h:
        await eventually(lambda: len(queue.deleted) == 2, timeout=5)
    assert h.target.delivered == [keep]
    assert drop in queue.deleted
    assert h.events("filtered_out") == 1


async def test_the_drain_lets_a_batch_in_flight_finish_and_then_deletes_it() -> None:
    queue = MemoryQueue()
    only = queue.send("slow")
    target = ScriptedTarget()
    target.hold = anyio.Event()
    async with running(queue, target=target, drain=5) as h:
        await eventually(lambda: target.active == 1, timeout=5)
        h.shutdown.begin(5)
        target.hold.set()
        await eventually(lambda: queue.deleted == [only], timeout=5)
    assert h.source.abandoned == 0


async def test_the_drain_deadline_abandons_what_is_still_in_flight() -> None:
    queue = MemoryQueue()
    queue.send("stuck")
    target = ScriptedTarget()
    target.hold = anyio.Event()  # never set: the function never answers
    with anyio.fail_after(10):
        async with running(queue, target=target, drain=0.2) as h:
            await eventually(lambda: target.active == 1, timeout=5)
    assert h.source.abandoned == 1
    assert queue.deleted == []


async def test_shutdown_hands_a_half_gathered_batch_back_to_the_queue() -> None:
    queue = MemoryQueue()
    first = queue.send("early")
    async with running(queue, batch_size=10, maximum_batching_window_in_seconds=60) as h:
        # Received, and a receiver is polling again for more within the 60 s window.
        await eventually(
            lambda: queue.messages[first].receives == 1 and queue.receive_calls >= 2, timeout=5
        )
    assert h.target.calls == []  # the window never closed
    assert ([first], 0) in queue.extensions  # visible again at once, not after 30 s


async def test_the_heartbeat_extends_batches_past_30_percent_of_the_timeout() -> None:
    queue = MemoryQueue(visibility_timeout=10)
    keeper = VisibilityKeeper(queue, Shutdown())  # type: ignore[arg-type]
    old = keeper.hold([Receipt("m1", "h1")], received_at=100.0)
    keeper.hold([Receipt("m2", "h2")], received_at=102.5)
    await keeper.extend_due(now=103.0)  # m1: 3 s of 10 gone; m2: 0.5 s
    assert queue.extensions == [(["m1"], 10)]
    assert old.extended_at == 103.0
    keeper.release(old)
    await keeper.extend_due(now=105.5)  # m2: 3 s gone since its receipt
    assert queue.extensions[-1] == (["m2"], 10)


@pytest.mark.parametrize("timeout", [1, 30, 43_200])
async def test_each_step_is_sent_by_40_percent_of_the_last_one(timeout: int) -> None:
    # Scanning once a tick, wherever the receipt falls between two scans, the extension is
    # sent with a tenth of the timeout to spare before half of the last step has gone.
    queue = MemoryQueue(visibility_timeout=timeout)
    keeper = VisibilityKeeper(queue, Shutdown())  # type: ignore[arg-type]
    tick = keeper.tick
    for offset in (0.0, 0.01, 0.5, 0.99):
        received = 1000.0 + offset * tick
        lease = keeper.hold([Receipt("m", "h")], received_at=received)
        now, sent = 1000.0, []
        while len(sent) < 3:
            now += tick
            before = lease.extended_at
            await keeper.extend_due(now)
            if lease.extended_at != before:
                sent.append(now - before)
        keeper.release(lease)
        assert max(sent) <= 0.4 * timeout + 1e-9, (offset, sent)


async def test_no_more_than_maximum_concurrency_batches_are_ever_in_flight() -> None:
    queue = MemoryQueue()
    sent = [queue.send(f"b{n}") for n in range(12)]
    target = ScriptedTarget(delay=0.05)
    async with running(queue, target=target, batch_size=1,
                       scaling_config={"maximum_concurrency": 2}):  # fmt: skip
        await eventually(lambda: sorted(queue.deleted) == sent, timeout=10)
    assert target.peak == 2  # the cap was reached, and never passed


def test_the_plan_caps_receivers_at_ten() -> None:
    from poller.wiring import queue_plan

    def receivers(concurrency: int) -> int:
        mapping = MappingSettings.model_validate(
            {"name": "q", "source": QUEUE, "target": {"type": "python", "handler": "m:f"},
             "scaling_config": {"maximum_concurrency": concurrency}}
        )  # fmt: skip
        return queue_plan(mapping, TuningSettings()).receivers

    assert receivers(2) == 2
    assert receivers(1000) == 10
