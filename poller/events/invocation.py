"""Lambda's invocation record for given-up stream records (ESM-SEMANTICS §1.4): which shard,
which sequence range, why, and how often it was invoked; what an on-failure destination gets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from poller.engine.records import StreamRecord
from poller.targets.base import InvokeResult, Outcome

StreamKind = Literal["kinesis", "dynamodb"]

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"

_BATCH_INFO = {"kinesis": "KinesisBatchInfo", "dynamodb": "DDBStreamBatchInfo"}


def iso_timestamp(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a `Z`, as Lambda writes them."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invocation_record(
    *,
    kind: StreamKind,
    condition: str,
    function_arn: str,
    shard_id: str,
    stream_arn: str,
    records: Sequence[StreamRecord],
    approximate_invoke_count: int,
    last_result: InvokeResult | None,
    now: float,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Lambda's invocation record for given-up stream records (ESM-SEMANTICS §1.4).

    `last_result` is the last invocation that included these records, None if they were never
    invoked; `responseContext.functionError` is present only when that invocation reached the
    function and it failed (§0). `request_id` defaults to a fresh UUID.
    """
    response: dict[str, Any]
    if last_result is None:
        # Never invoked (too old before the first attempt): no status, no version ran.
        response = {"statusCode": 0, "executedVersion": ""}
    else:
        status = last_result.status_code
        if status is None:
            status = 200 if last_result.reached_function else 0
        response = {
            "statusCode": status,
            "executedVersion": last_result.executed_version
            or ("$LATEST" if last_result.reached_function else ""),
        }
        if last_result.outcome is Outcome.FUNCTION_ERROR:
            response["functionError"] = last_result.function_error or "Unhandled"
        elif last_result.outcome is Outcome.TIMEOUT:
            # Lambda reports a timed-out invocation as an unhandled error.
            response["functionError"] = last_result.function_error or "Unhandled"
    first, last = records[0], records[-1]
    return {
        "requestContext": {
            "requestId": request_id or str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": approximate_invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso_timestamp(now),
        _BATCH_INFO[kind]: {
            "shardId": shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
            "approximateArrivalOfFirstRecord": iso_timestamp(first.arrival),
            "approximateArrivalOfLastRecord": iso_timestamp(last.arrival),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }
