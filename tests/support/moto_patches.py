"""Fixes to moto's emulation, applied to the in-process moto server in tests. Each says the gap.

moto's FIFO redelivery (moto 5.2.5, `SQSBackend.receive_message`): when a group's in-flight
messages time out, the receive loop releases them one at a time while walking the queue, and
decides "is this group still in flight?" from a snapshot taken before the walk. So the first
expired message of a group is skipped (the second one still looks in flight) and the *second*
is delivered first. Real SQS hands the group back in order. The patch releases every timed-out
in-flight message before moto's loop runs, and restarts the loop (with the rest of the long
poll) whenever an in-flight message times out while it waits, so the snapshot is never stale.
"""

from __future__ import annotations

import time
from typing import Any

_applied = False


class _Restart(Exception):
    """An in-flight message timed out during a long poll: rerun the receive from the top."""


def _release_timed_out(queue: Any) -> None:
    for message in list(queue.pending_messages):
        if message.visible:
            queue.pending_messages.remove(message)


def apply() -> None:
    """Patch moto's SQS backend once per process."""
    global _applied
    if _applied:
        return
    from moto.sqs.models import Queue, SQSBackend

    original_receive = SQSBackend.receive_message
    original_wait = Queue.wait_for_messages

    def wait_for_messages(self: Any, timeout: int) -> None:
        original_wait(self, timeout)
        if any(message.visible for message in self.pending_messages):
            raise _Restart

    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kw: Any
    ) -> Any:
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            _release_timed_out(self.get_queue(queue_name))
            remaining = max(0, round(deadline - time.monotonic()))
            try:
                return original_receive(self, queue_name, count, remaining, *args, **kw)
            except _Restart:
                continue

    SQSBackend.receive_message = receive_message
    Queue.wait_for_messages = wait_for_messages
    _applied = True
