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
"""

from __future__ import annotations

import threading
import time
from typing import Any

_applied = False


class _Restart(Exception):
    """An in-flight message timed out during a long poll: rerun the receive from the top."""


def apply() -> None:
    """Patch moto's SQS backend once per process."""
    global _applied
    if _applied:
        return
    from moto.sqs import models

    real_now = models.unix_time_millis
    frozen = threading.local()
    receive_lock = threading.Lock()
    original_receive = models.SQSBackend.receive_message
    original_wait = models.Queue.wait_for_messages

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

    models.unix_time_millis = now_millis
    models.SQSBackend.receive_message = receive_message
    models.Queue.wait_for_messages = wait_for_messages
    _applied = True
