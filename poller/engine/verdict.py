"""What a function's answer means for a batch, by Lambda's rules, and the one ordering rule.

`verdict_for` classifies an invocation that reached the function; `parse_batch_item_failures`
reads a partial batch response; `split_acknowledged` applies "nothing after a failure within an
ordering key": SQS FIFO message groups, and a stream batch (whose records are one sequence).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from poller.engine.records import Record
from poller.targets.base import InvokeResult, Outcome

R = TypeVar("R", bound=Record)

# How a failure holds back the records after it: "none" (SQS standard: each record stands
# alone), "key" (SQS FIFO: the rest of the failed record's message group), "batch" (streams:
# every later record of the batch, which is one shard's sequence).
Ordering = Literal["none", "key", "batch"]


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """What a function's answer means for a batch: all good, all failed, or these ids failed.

    `failed_ids` is None when the whole batch failed, empty when all succeeded.
    """

    failed_ids: frozenset[str] | None
    reason: str = ""

    @property
    def whole_batch_failed(self) -> bool:
        return self.failed_ids is None

    @property
    def all_succeeded(self) -> bool:
        return self.failed_ids is not None and not self.failed_ids


ALL_SUCCEEDED = BatchVerdict(frozenset())


def whole_batch_failed(reason: str) -> BatchVerdict:
    """The verdict of an answer that fails every record of the batch."""
    return BatchVerdict(None, reason)


def verdict_for(
    result: InvokeResult, batch_ids: Sequence[str], *, report_batch_item_failures: bool
) -> BatchVerdict:
    """Classify a result that reached the function into a batch verdict."""
    if result.outcome is Outcome.TIMEOUT:
        return whole_batch_failed(f"function timed out: {result.detail}")
    if result.outcome is not Outcome.SUCCESS:
        return whole_batch_failed(f"function error {result.function_error or ''}".strip())
    if not report_batch_item_failures:
        return ALL_SUCCEEDED
    return parse_batch_item_failures(result.payload, batch_ids)


def parse_batch_item_failures(payload: bytes | None, batch_ids: Sequence[str]) -> BatchVerdict:
    """Read a `{"batchItemFailures": [...]}` answer per the partial-response outcome table.

    Only called when the mapping lists ReportBatchItemFailures and the function succeeded.
    Anything malformed fails the whole batch (fail-safe): a record is never deleted or
    checkpointed on an answer poller cannot read.
    """
    if payload is None or not payload.strip():
        return ALL_SUCCEEDED
    try:
        answer = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return whole_batch_failed("function response is not valid JSON")
    if answer is None or answer == []:
        # An empty JSON array is a success to AWS: one invocation, nothing retried or sent on
        # failure (AWS-recorded); any other non-object is not.
        return ALL_SUCCEEDED
    if not isinstance(answer, dict):
        return whole_batch_failed("function response is JSON but not an object")
    failures = answer.get("batchItemFailures")
    if failures is None or failures == []:
        return ALL_SUCCEEDED
    if not isinstance(failures, list):
        return whole_batch_failed("batchItemFailures is not a list")
    known = set(batch_ids)
    failed: set[str] = set()
    for entry in failures:
        if not isinstance(entry, dict):
            return whole_batch_failed("a batchItemFailures entry is not an object")
        identifier = entry.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier:
            return whole_batch_failed("a batchItemFailures entry has no itemIdentifier")
        if identifier not in known:
            # The value is the function's to choose: it is not echoed into logs.
            return whole_batch_failed("a reported itemIdentifier is not in the batch")
        failed.add(identifier)
    return BatchVerdict(frozenset(failed))


def split_acknowledged(
    records: Sequence[R], verdict: BatchVerdict, ordering: Ordering
) -> tuple[list[R], list[R]]:
    """(records that may be acknowledged, records that failed or wait behind a failure).

    Both lists keep the batch's order. A whole-batch failure acknowledges nothing.
    """
    failed = verdict.failed_ids
    if failed is None:
        return [], list(records)
    if not failed:
        return list(records), []
    done: list[R] = []
    rest: list[R] = []
    if ordering == "batch":
        for index, record in enumerate(records):
            if record.id in failed:
                return list(records[:index]), list(records[index:])
        return list(records), []
    blocked: set[str | None] = set()
    for record in records:
        key = record.ordering_key if ordering == "key" else None
        if record.id in failed or (ordering == "key" and key in blocked):
            if ordering == "key":
                blocked.add(key)
            rest.append(record)
        else:
            done.append(record)
    return done, rest
