"""The engine's Batcher: batch size, the 6 MB payload limit, and the batching window, as SQS
receivers and stream lanes both use it."""

from __future__ import annotations

import math
import time

from poller.engine.batcher import Batcher, BatchLimits
from poller.engine.records import StreamRecord
from poller.events.envelope import MAX_PAYLOAD_BYTES
from poller.sources.sqs.messages import SqsMessage
from poller.sources.sqs.queue import Receipt


def record(seq: int, key: str = "k", size: int = 10) -> StreamRecord:
    return StreamRecord(str(seq), seq, key, time.time(), b"x" * size)


def batcher(size: int, window: float = 0) -> Batcher[StreamRecord]:
    return Batcher(BatchLimits(size, window))


def sequences(batch: list[StreamRecord]) -> list[int]:
    return [r.sequence for r in batch]


def test_a_batch_stops_at_batch_size_and_the_payload_limit() -> None:
    lane = batcher(3)
    for seq in range(5):
        lane.add(record(seq), now=0)
    assert lane.full()
    assert sequences(lane.take()) == [0, 1, 2]
    assert sequences(lane.take()) == [3, 4]
    big = batcher(100)
    for seq in range(3):
        big.add(record(seq, size=MAX_PAYLOAD_BYTES // 2 + 100), now=0)
    assert big.full()
    assert sequences(big.take()) == [0]  # two of them exceed 6 MB
    assert len(big.take()) == 1
    assert len(big.take()) == 1
    assert not big


def test_a_record_alone_over_the_limit_still_makes_a_batch_of_one() -> None:
    lane = batcher(10)
    lane.add(record(1, size=MAX_PAYLOAD_BYTES + 1), now=0)
    assert sequences(lane.take()) == [1]  # the target answers 413 and the engine gives it up


def test_the_window_counts_from_the_first_record_or_the_last_invocation() -> None:
    lane = batcher(10, window=2)
    lane.add(record(0), now=100.0)
    assert lane.due_at() == 102.0
    lane.take()
    lane.restart_window(now=105.0)
    lane.add(record(1), now=104.0)  # arrived while the last batch was in flight
    assert lane.due_at() == 107.0


def test_a_backlog_goes_batch_after_batch_and_its_remainder_waits_for_the_window() -> None:
    lane = batcher(10, window=2)
    for seq in range(25):  # one read brought two and a half batches
        lane.add(record(seq), now=100.0)
    assert lane.due_at() == -math.inf  # a whole batch waits: due at once, whatever the window
    assert len(lane.take()) == 10
    lane.restart_window(now=100.5)
    assert lane.due_at() == -math.inf
    assert sequences(lane.take()) == list(range(10, 20))
    lane.restart_window(now=101.0)
    assert lane.due_at() == 103.0  # the remainder: a window from the end of the last batch
    assert sequences(lane.take()) == list(range(20, 25))


def test_a_zero_window_is_due_at_once() -> None:
    lane = batcher(10, window=0)
    lane.add(record(1), now=5.0)
    assert lane.due_at() == -math.inf


def test_sqs_messages_batch_the_same_way() -> None:
    # A receiver's carried-over messages (those that did not fit the last batch) go first,
    # and its window restarts when it starts gathering again.
    queue: Batcher[SqsMessage] = Batcher(BatchLimits(2, 5))
    for n in range(3):
        message = SqsMessage(Receipt(f"m{n}", f"r{n}"), None, None, 0.0, b"{}")
        queue.add(message, now=10.0)
    assert [m.id for m in queue.take()] == ["m0", "m1"]
    queue.restart_window(now=50.0)
    assert queue.due_at() == 55.0
    assert [m.id for m in queue.clear()] == ["m2"]
    assert not queue
