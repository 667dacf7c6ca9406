"""Lambda's invocation record for given-up stream records: which shard,
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


def iso_timestamp(epoch: float, *, timespec: str = "milliseconds") -> str:
    """Epoch seconds as ISO 8601 UTC with a `Z`, as Lambda writes them: with milliseconds by
    default, or to the second (`timespec="seconds"`, rounded down)."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


# How each stream's batch info writes arrival times (AWS-recorded): Kinesis with milliseconds,
# DynamoDB to the second, as its creation times are.
_ARRIVAL_PRECISION = {"kinesis": "milliseconds", "dynamodb": "seconds"}


def response_context(last_result: InvokeResult | None) -> dict[str, Any]:
    """`responseContext` after retries ran out, from the last invocation of the records.

    As AWS writes it: a status and the version that ran; `functionError` the error type when
    the function raised or timed out, present as null when it returned a partial response that
    failed the batch, and absent when the last attempt never reached the function.
    """
    if last_result is None:
        return {"statusCode": 0, "executedVersion": ""}
    reached = last_result.reached_function
    status = last_result.status_code
    if status is None:
        status = 200 if reached else 0
    response: dict[str, Any] = {
        "statusCode": status,
        "executedVersion": last_result.executed_version or ("$LATEST" if reached else ""),
    }
    if last_result.outcome in (Outcome.FUNCTION_ERROR, Outcome.TIMEOUT):
        # Lambda reports a timed-out invocation as an unhandled error.
        response["functionError"] = last_result.function_error or "Unhandled"
    elif last_result.outcome is Outcome.SUCCESS:
        response["functionError"] = None  # it returned; its answer failed the batch
    return response


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
    """Lambda's invocation record for given-up stream records.

    `last_result` is the last invocation that included these records, None if they were never
    invoked. A record that gives up on age (`RecordAgeExceeded`) has no `responseContext` at
    all, and counts one invocation even if none was made, as AWS writes it.
    `request_id` defaults to a fresh UUID.
    """
    first, last = records[0], records[-1]
    timespec = _ARRIVAL_PRECISION[kind]
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id or str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": max(1, approximate_invoke_count),
        },
    }
    if condition != RECORD_AGE_EXCEEDED:
        record["responseContext"] = response_context(last_result)
    record["version"] = "1.0"
    record["timestamp"] = iso_timestamp(now)
    record[_BATCH_INFO[kind]] = {
        "shardId": shard_id,
        "startSequenceNumber": first.sequence_number,
        "endSequenceNumber": last.sequence_number,
        "approximateArrivalOfFirstRecord": iso_timestamp(first.arrival, timespec=timespec),
        "approximateArrivalOfLastRecord": iso_timestamp(last.arrival, timespec=timespec),
        "batchSize": len(records),
        "streamArn": stream_arn,
    }
    return record
