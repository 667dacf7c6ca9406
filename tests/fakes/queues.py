"""An in-memory SQS queue with the calls `SqsSource` makes (the `QueueApi` seam).

Visibility is kept on the monotonic clock: a received message is hidden until its timeout,
`extend` moves that, `delete` removes it. FIFO: a group with a message in flight hands out
nothing more until that message is deleted or visible again, as SQS does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from poller.sources.sqs.queue import Receipt


@dataclass
class _Message:
    message_id: str
    body: str
    group: str | None
    sent: float
    hidden_until: float = 0.0
    receives: int = 0
    handle: str = ""


@dataclass
class MemoryQueue:
    """One queue; `arn` ends in .fifo for FIFO semantics."""

    arn: str = "arn:aws:sqs:us-east-1:123456789012:orders"
    visibility_timeout: int = 30
    url: str = ""
    messages: dict[str, _Message] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    extensions: list[tuple[list[str], int]] = field(default_factory=list)
    receive_calls: int = 0
    _next: int = 0

    @property
    def fifo(self) -> bool:
        return self.arn.endswith(".fifo")

    def send(self, body: str, group: str | None = None) -> str:
        """Enqueue a message; its id."""
        self._next += 1
        message_id = f"m{self._next:04d}"
        self.messages[message_id] = _Message(message_id, body, group, time.time())
        return message_id

    async def resolve(self) -> None:
        self.url = f"https://sqs.local/{self.arn.rsplit(':', 1)[-1]}"

    async def attributes(self, names: Sequence[str]) -> dict[str, str]:
        now = time.monotonic()
        visible = sum(1 for m in self.messages.values() if m.hidden_until <= now)
        return {
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": str(len(self.messages) - visible),
            "ApproximateNumberOfMessagesDelayed": "0",
        }

    async def receive(self, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        self.receive_calls += 1
        now = time.monotonic()
        busy = {m.group for m in self.messages.values() if m.hidden_until > now}
        out: list[dict[str, Any]] = []
        for message in self.messages.values():
            if len(out) >= max_messages:
                break
            if message.hidden_until > now or (self.fifo and message.group in busy):
                continue
            message.receives += 1
            message.handle = f"{message.message_id}#{message.receives}"
            message.hidden_until = now + self.visibility_timeout
            out.append(self._wire(message))
        if not out:
            # A long poll that finds nothing waits (briefly here) instead of answering at once,
            # so an idle receiver does not spin the event loop.
            await anyio.sleep(min(wait_seconds, 0.02))
        else:
            await anyio.lowlevel.checkpoint()
        return out

    async def delete(self, receipts: Sequence[Receipt]) -> int:
        done = 0
        for receipt in receipts:
            message = self.messages.get(receipt.message_id)
            if message is not None and message.handle == receipt.receipt_handle:
                del self.messages[receipt.message_id]
                self.deleted.append(receipt.message_id)
                done += 1
        return done

    async def extend(self, receipts: Sequence[Receipt], seconds: int) -> None:
        now = time.monotonic()
        self.extensions.append(([r.message_id for r in receipts], seconds))
        for receipt in receipts:
            message = self.messages.get(receipt.message_id)
            if message is not None and message.handle == receipt.receipt_handle:
                message.hidden_until = now + seconds

    def _wire(self, message: _Message) -> dict[str, Any]:
        attributes = {
            "SentTimestamp": str(int(message.sent * 1000)),
            "ApproximateReceiveCount": str(message.receives),
        }
        if message.group is not None:
            attributes["MessageGroupId"] = message.group
        return {
            "MessageId": message.message_id,
            "ReceiptHandle": message.handle,
            "Body": message.body,
            "MD5OfBody": "",
            "Attributes": attributes,
        }
