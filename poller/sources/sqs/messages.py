"""One received SQS message as the engine moves it: its Lambda record serialized once, plus
what acknowledging it needs (the receipt of this receive)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poller.events.envelope import dumps
from poller.events.sqs import sqs_record
from poller.filtering.filter_set import FilterSet
from poller.sources.sqs.queue import Receipt


@dataclass(frozen=True, slots=True)
class SqsMessage:
    """A received message; satisfies the engine's `Record`."""

    receipt: Receipt
    group_id: str | None
    trace_header: str | None
    arrival: float
    serialized: bytes

    @property
    def id(self) -> str:
        """The messageId: what an SQS batchItemFailures names."""
        return self.receipt.message_id

    @property
    def ordering_key(self) -> str | None:
        """The FIFO message group; None on a standard queue."""
        return self.group_id


def read_messages(
    raw: Sequence[Mapping[str, Any]],
    *,
    queue_arn: str,
    region: str,
    filters: FilterSet,
    batching_window: bool = False,
) -> tuple[list[SqsMessage], list[Receipt]]:
    """(messages that pass the filters, receipts of those filtered out) of one receive;
    `batching_window` as for `sqs_record`."""
    kept: list[SqsMessage] = []
    dropped: list[Receipt] = []
    for message in raw:
        record = sqs_record(
            message, queue_arn=queue_arn, region=region, batching_window=batching_window
        )
        receipt = Receipt(record["messageId"], record["receiptHandle"])
        if filters and not filters.matches_sqs(record):
            dropped.append(receipt)
            continue
        attributes = record["attributes"]
        sent = attributes.get("SentTimestamp")
        kept.append(
            SqsMessage(
                receipt=receipt,
                group_id=attributes.get("MessageGroupId"),
                trace_header=attributes.get("AWSTraceHeader"),
                arrival=int(sent) / 1000 if sent and sent.isdigit() else 0.0,
                serialized=dumps(record),
            )
        )
    return kept, dropped
