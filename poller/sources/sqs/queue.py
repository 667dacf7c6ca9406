"""The SQS calls one mapping makes, with poller's rules for partial failures and retries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from poller.aws import calls
from poller.aws.errors import AWS_ERRORS
from poller.config.arns import SourceArn
from poller.retry import DELETE_ENTRY, retry_result

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeFilterType
    from types_aiobotocore_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        MessageTypeDef,
    )

log = logging.getLogger("poller.sqs")

# Entries of a batch call that mean "this receipt handle is no longer yours or no longer exists":
# the message was deleted already (perhaps by the handler) or was received again elsewhere.
_GONE_CODES = {"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.ReceiptHandleIsInvalid"}
_CHUNK = 10


# A chunk's entries are tried this many times before the rest is left to come back.
_DELETE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Receipt:
    """What settling one message needs: its id and the handle of this receive."""

    message_id: str
    receipt_handle: str


def _chunks(items: Sequence[Receipt]) -> list[Sequence[Receipt]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


class QueueApi(Protocol):
    """The calls an SQS mapping makes on its queue (`SqsQueue`, or a test's in-memory one)."""

    @property
    def url(self) -> str:
        """The queue URL, once resolved."""
        ...

    @property
    def visibility_timeout(self) -> int:
        """The queue's visibility timeout in seconds, once resolved."""
        ...

    async def resolve(self) -> None:
        """Find the queue and its visibility timeout."""
        ...

    async def attributes(self, names: list[QueueAttributeFilterType]) -> dict[str, str]:
        """GetQueueAttributes of these names."""
        ...

    async def receive(self, max_messages: int, wait_seconds: int) -> list[MessageTypeDef]:
        """One ReceiveMessage with every attribute."""
        ...

    async def delete(self, receipts: Sequence[Receipt]) -> int:
        """Delete these messages; how many are gone."""
        ...

    async def extend(self, receipts: Sequence[Receipt], seconds: int) -> None:
        """Set these messages' visibility to `seconds` from now."""
        ...


class SqsQueue:
    """One queue, resolved from its ARN; every call made through a shared aiobotocore client.

    `receiver`, when given, makes the ReceiveMessage calls: a client without the SDK's own
    retries, since poller's receive loop retries with its own back-off and reports the failure.
    The SDK's retries would repeat a long poll up to four times first, hiding for a minute or
    more a source that answers every receive with a reset.
    """

    def __init__(
        self,
        client: SQSClient,
        arn: SourceArn,
        receiver: SQSClient | None = None,
        *,
        mapping: str | None = None,
    ) -> None:
        self.client = client
        self.receiver = receiver or client
        self.arn = arn
        # Every line this queue logs names the mapping (log alerts are per mapping) and queue.
        self._extra = (
            {"queue": arn.name} if mapping is None else {"mapping": mapping, "queue": arn.name}
        )
        self.url = ""
        self.visibility_timeout = 30

    async def resolve(self) -> None:
        """Find the queue URL (sqs:GetQueueUrl) and its visibility timeout."""
        answer = await calls.bounded(
            "GetQueueUrl",
            self.client.get_queue_url(
                QueueName=self.arn.name, QueueOwnerAWSAccountId=self.arn.account
            ),
        )
        self.url = answer["QueueUrl"]
        attributes = await self.attributes(["VisibilityTimeout"])
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", "30"))

    async def attributes(self, names: list[QueueAttributeFilterType]) -> dict[str, str]:
        answer = await calls.bounded(
            "GetQueueAttributes",
            self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=names),
        )
        # A copy keyed by plain str: the stubs' Literal keys would not fit `dict[str, str]`.
        return {name: value for name, value in answer.get("Attributes", {}).items()}

    async def receive(self, max_messages: int, wait_seconds: int) -> list[MessageTypeDef]:
        receiving = self.receiver.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        # The long poll may wait its full WaitTimeSeconds before answering empty.
        seconds = wait_seconds + calls.LONG_POLL_MARGIN
        answer = await calls.bounded("ReceiveMessage", receiving, seconds=seconds)
        return answer.get("Messages", [])

    async def delete(self, receipts: Sequence[Receipt]) -> int:
        """Delete in chunks of 10, retrying entries that failed for a passing reason.

        Returns how many SQS confirmed (or reported as already gone). Gives up on an entry
        after a few tries: an undeleted message comes back, which at-least-once allows.
        """
        deleted = 0
        for chunk in _chunks(receipts):
            deleted += await self._delete_chunk(chunk)
        return deleted

    async def _delete_chunk(self, chunk: Sequence[Receipt]) -> int:
        pending = {str(i): r for i, r in enumerate(chunk)}
        done = 0
        failure = ""

        async def attempt() -> int:
            nonlocal done, failure
            try:
                done += await self._delete_once(pending)
            except AWS_ERRORS as exc:
                failure = str(exc)
            else:
                failure = f"{len(pending)} entries failed"
            return len(pending)

        left = await retry_result(
            attempt,
            again=bool,
            curve=DELETE_ENTRY,
            stopping=None,  # shielded by the caller: a delete finishes its few tries
            max_attempts=_DELETE_ATTEMPTS,
        )
        if left:
            log.warning(
                "could not delete %d message(s) after retries; they will be delivered again: %s",
                left,
                failure,
                extra=self._extra,
            )
        return done

    async def _delete_once(self, pending: dict[str, Receipt]) -> int:
        """One DeleteMessageBatch of what is pending; removes what needs no retry, returns
        how many SQS confirmed (or reported gone)."""
        answer = await calls.bounded(
            "DeleteMessageBatch",
            self.client.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": k, "ReceiptHandle": r.receipt_handle} for k, r in pending.items()],
            ),
        )
        done = 0
        for entry in answer.get("Successful", []):
            pending.pop(entry["Id"], None)
            done += 1
        for entry in answer.get("Failed", []):
            if entry.get("Code") in _GONE_CODES:
                pending.pop(entry["Id"], None)
                done += 1
            elif entry.get("SenderFault"):
                # A fault of ours that retrying cannot mend; the message simply comes back.
                pending.pop(entry["Id"], None)
                reason = entry.get("Message") or entry.get("Code")
                log.warning("delete refused: %s", reason, extra=self._extra)
        return done

    async def extend(self, receipts: Sequence[Receipt], seconds: int) -> None:
        """Hide these messages for `seconds` more from now; entries already gone are ignored."""
        for chunk in _chunks(receipts):
            try:
                entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                    {"Id": str(i), "ReceiptHandle": r.receipt_handle, "VisibilityTimeout": seconds}
                    for i, r in enumerate(chunk)
                ]
                answer = await calls.bounded(
                    "ChangeMessageVisibilityBatch",
                    self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries),
                )
            except AWS_ERRORS as exc:
                log.warning("could not extend visibility: %s", exc, extra=self._extra)
                continue
            for entry in answer.get("Failed", []):
                log.debug(
                    "visibility not extended for one message: %s",
                    entry.get("Code"),
                    extra=self._extra,
                )
