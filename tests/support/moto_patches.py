"""Fixes to moto's emulation, applied to the in-process moto server in tests. Each says the gap.

moto's FIFO redelivery (moto 5.2.5, `SQSBackend.receive_message`): when a group's in-flight
messages time out, the receive loop releases them one at a time while walking the queue, and
decides "is this group still in flight?" from a snapshot. So the first expired message of a
group can be skipped (the second still looks in flight) and the *second* delivered first.
Real SQS hands the group back in order. moto also serves requests on threads with no locks,
so two receivers can interleave inside that loop. The patch, for receives only:

- serializes receives (the lock is released while a long poll waits);
- freezes moto's clock for each pass, so "visible" means the same thing throughout a pass;
- releases every timed-out in-flight message before the pass starts, and starts the pass
  over (with the rest of the long poll) when one times out while it waits.

Deletes take the same lock: `Queue.delete_message` rebuilds the queue's message list without
one, so two concurrent deletes can undo each other and a deleted message comes back after its
visibility timeout (218 of 2,000 at concurrency 10); real SQS never does that.

Kinesis resharding: see `_patch_kinesis_resharding`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

_applied = False

# Kinesis: whether GetRecords on a closed shard ends with a null NextShardIterator (AWS does;
# moto never does). A test may turn it off to exercise the other way poller tells that a closed
# shard is finished: the listing's EndingSequenceNumber plus a read with nothing past it.
closed_shard_iterators_end = True


class _Restart(Exception):
    """An in-flight message timed out during a long poll: rerun the receive from the top."""


def apply() -> None:
    """Patch moto's SQS backend once per process."""
    global _applied
    if _applied:
        return
    from moto.sqs import models

    slow_now = models.unix_time_millis

    def real_now(*args: Any) -> float:
        # moto computes "now" by building two datetimes, ~30 times per message per receive
        # (tests/benchmarks/fast_moto.py measured it); the epoch clock is the same value.
        return time.time() * 1000.0 if not args or args[0] is None else float(slow_now(*args))

    frozen = threading.local()
    receive_lock = threading.Lock()
    original_receive = models.SQSBackend.receive_message
    original_wait = models.Queue.wait_for_messages
    original_delete = models.Queue.delete_message

    def now_millis(*args: Any) -> float:
        value = getattr(frozen, "now", None)
        return float(value) if value is not None else float(real_now(*args))

    def release_timed_out(queue: Any) -> None:
        for message in list(queue.pending_messages):
            if message.visible:
                queue.pending_messages.remove(message)

    def wait_for_messages(self: Any, timeout: int) -> None:
        frozen.now = None
        receive_lock.release()
        try:
            original_wait(self, timeout)
        finally:
            receive_lock.acquire()
            frozen.now = real_now()
        if any(message.visible for message in self.pending_messages):
            raise _Restart

    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kw: Any
    ) -> Any:
        deadline = time.monotonic() + wait_seconds_timeout
        with receive_lock:
            try:
                while True:
                    frozen.now = real_now()
                    release_timed_out(self.get_queue(queue_name))
                    remaining = max(0, round(deadline - time.monotonic()))
                    try:
                        return original_receive(self, queue_name, count, remaining, *args, **kw)
                    except _Restart:
                        continue
            finally:
                frozen.now = None

    def delete_message(self: Any, receipt_handle: str) -> None:
        with receive_lock:
            original_delete(self, receipt_handle)

    models.unix_time_millis = now_millis
    models.SQSBackend.receive_message = receive_message
    models.Queue.delete_message = delete_message
    models.Queue.wait_for_messages = wait_for_messages
    _patch_kinesis_resharding()
    _applied = True


def _patch_kinesis_resharding() -> None:
    """Kinesis resharding as AWS does it (moto 5.2.5, `moto.kinesis.models`).

    Gaps covered: (1) moto routes a write to the first shard whose hash range covers the key,
    so writes after a split or merge still land in the closed parent; (2) `split_shard`
    re-puts the parent's records (renumbered from 1, into the parent again) and
    `merge_shards` copies both parents' records into the child, where AWS leaves every record
    in its closed parent; (3) GetRecords on a closed shard never returns a null
    NextShardIterator, so a reader cannot see the shard end the way AWS shows it.
    """
    from moto.kinesis.exceptions import InvalidArgumentError
    from moto.kinesis.models import KinesisBackend, Shard, Stream
    from moto.kinesis.utils import decompose_shard_iterator
    from moto.utilities.utils import md5_hash

    def get_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        if explicit_hash_key:
            key = int(explicit_hash_key)
        else:
            key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
        for shard in self.shards.values():
            if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
                return shard
        return None

    def next_shard_number(stream: Any) -> int:
        return max(shard._shard_id for shard in stream.shards.values()) + 1

    def split_shard(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
        parent = self.shards[shard_to_split]
        start = int(new_starting_hash_key)
        if not parent.is_open or not parent.starting_hash < start <= parent.ending_hash:
            raise InvalidArgumentError(f"cannot split {shard_to_split} at {start}")
        number = next_shard_number(self)
        for offset, (low, high) in enumerate(
            ((parent.starting_hash, start - 1), (start, parent.ending_hash))
        ):
            child = Shard(number + offset, low, high, parent=parent.shard_id)
            self.shards[child.shard_id] = child
        parent.is_open = False

    def merge_shards(self: Any, shard_to_merge: str, adjacent_shard_to_merge: str) -> None:
        first, second = self.shards[shard_to_merge], self.shards[adjacent_shard_to_merge]
        low, high = sorted((first, second), key=lambda shard: shard.starting_hash)
        if low.ending_hash + 1 != high.starting_hash or not (first.is_open and second.is_open):
            raise InvalidArgumentError(adjacent_shard_to_merge)
        child = Shard(
            next_shard_number(self),
            low.starting_hash,
            high.ending_hash,
            parent=first.shard_id,
            adjacent_parent=second.shard_id,
        )
        self.shards[child.shard_id] = child
        first.is_open = second.is_open = False

    original_get_records = KinesisBackend.get_records

    def get_records(self: Any, stream_arn: str | None, shard_iterator: str, limit: Any) -> Any:
        following, records, behind = original_get_records(self, stream_arn, shard_iterator, limit)
        if closed_shard_iterators_end:
            stream_name, shard_id, position = decompose_shard_iterator(following)
            stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
            shard = stream.get_shard(shard_id)
            if not shard.is_open and int(position) >= shard.get_max_sequence_number():
                following = None
        return following, records, behind

    Stream.get_shard_for_key = get_shard_for_key
    Stream.split_shard = split_shard
    Stream.merge_shards = merge_shards
    KinesisBackend.get_records = get_records
