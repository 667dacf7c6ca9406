"""Failed source and checkpoint calls, every attempt, counted for the mapping that made them.

Clients are shared by every mapping (one per service and region), so a client cannot tell
whose call it is running; the calling task can. A mapping runs its tasks under
`charged_to(count)`; a `response-received` hook on each client (`watch`) reports each failed
attempt of a source or checkpoint call, the SDK's own retries and timeouts included, to the
`count` of the task that made it, by operation (`ReceiveMessage`, `GetRecords`, `checkpoint`...).
Tasks started inside that context inherit it, as contextvars do.

`bounded` gives each source call a deadline of its own: an endpoint that accepts connections
and never answers would otherwise hold a call for the SDK's read timeout (60 s per attempt).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient

T = TypeVar("T")

CHECKPOINT = "checkpoint"

# How long a source call may take, the SDK's own retries included (three at most, its waits
# between them 7 s at most), before poller gives up on it: GetRecords, GetShardIterator,
# ListShards, DescribeStream, DeleteMessageBatch, ChangeMessageVisibilityBatch, GetQueueUrl...
CALL_SECONDS = 10.0
# A long poll (ReceiveMessage) may wait its WaitTimeSeconds, up to 20 s, and then this more
# (it is made without the SDK's retries: poller's receive loop retries it).
LONG_POLL_MARGIN = 5.0


class CallTimedOut(TimeoutError):
    """A source call got no answer within its deadline (a TimeoutError, so every caller
    treats it as the passing source error it is)."""

    def __init__(self, operation: str, seconds: float) -> None:
        super().__init__(
            f"{operation} got no answer within {seconds:g}s (the endpoint accepts connections "
            "but does not answer); check the endpoint and the network"
        )
        self.operation = operation


# The calls each source makes, by client service name; each counts under its own name.
SOURCE_CALLS: Mapping[str, frozenset[str]] = {
    "sqs": frozenset(
        {
            "GetQueueUrl",
            "GetQueueAttributes",
            "ReceiveMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibilityBatch",
        }
    ),
    "kinesis": frozenset({"ListShards", "GetShardIterator", "GetRecords"}),
    "dynamodbstreams": frozenset({"DescribeStream", "GetShardIterator", "GetRecords"}),
}
# Every call on the lease table counts as `checkpoint`.
_CHECKPOINT_SERVICE = "dynamodb"
# Answers of the lease protocol, not failures: a conditional write (or a transaction, by its
# cancellation reasons) that found another owner, and the table probed before poller creates
# it (or another replica did).
_CONDITION_FAILED = "ConditionalCheckFailed"
_NOT_FAILED = frozenset({f"{_CONDITION_FAILED}Exception"})
_NOT_FAILED_OF = frozenset(
    {("DescribeTable", "ResourceNotFoundException"), ("CreateTable", "ResourceInUseException")}
)

# The operations a mapping of each source kind can count, so its series exist (at 0) from the
# start and a first failure shows as an increase.
OPERATIONS_BY_SOURCE: Mapping[str, tuple[str, ...]] = {
    "sqs": tuple(sorted(SOURCE_CALLS["sqs"])),
    "kinesis": (*sorted(SOURCE_CALLS["kinesis"]), CHECKPOINT),
    "dynamodb": (*sorted(SOURCE_CALLS["dynamodbstreams"]), CHECKPOINT),
}

Count = Callable[[str], None]

_count: ContextVar[Count | None] = ContextVar("poller_failed_calls", default=None)
_HANDLER_ID = "poller-failed-calls"


@contextmanager
def charged_to(count: Count | None) -> Iterator[None]:
    """Report the failed calls made in this context (and the tasks it starts) to `count`;
    None counts none (on-failure sends, which have their own counter)."""
    token = _count.set(count)
    try:
        yield
    finally:
        _count.reset(token)


def failed(operation: str) -> None:
    """Count one failed call the hook cannot see (SQLite, a request cut short by poller)."""
    count = _count.get()
    if count is not None:
        count(operation)


async def bounded(operation: str, call: Awaitable[T], *, seconds: float = CALL_SECONDS) -> T:
    """Await `call` (a coroutine of `operation`); CallTimedOut, counted as one failed call of
    that operation, if it has not answered within `seconds`.

    A deadline per call, not a read timeout per client: one client per service serves every
    call (ReceiveMessage's long poll and DeleteMessageBatch alike), and the deadline covers the
    SDK's retries and a server that trickles bytes, which a socket read timeout does not.
    """
    with anyio.move_on_after(seconds):
        return await call
    failed(operation)
    raise CallTimedOut(operation, seconds)


def label_of(
    service: str, operation: str, code: str | None, reasons: Sequence[str] = ()
) -> str | None:
    """The `operation` label a failed attempt counts under; None when it is not counted.
    `reasons`: the codes of a cancelled transaction's CancellationReasons."""
    if service == _CHECKPOINT_SERVICE:
        refused = code in _NOT_FAILED or _CONDITION_FAILED in reasons
        if refused or (operation, code) in _NOT_FAILED_OF:
            return None
        return CHECKPOINT
    calls = SOURCE_CALLS.get(service)
    return operation if calls is not None and operation in calls else None


def watch(client: AioBaseClient, service: str) -> None:
    """Hook `client` (of `service`) so its failed source and checkpoint attempts are counted."""
    if service != _CHECKPOINT_SERVICE and service not in SOURCE_CALLS:
        return

    def attempted(
        *,
        event_name: str,
        response_dict: Mapping[str, Any] | None,
        parsed_response: Mapping[str, Any] | None,
        exception: BaseException | None,
        **_: Any,
    ) -> None:
        if exception is None and (response_dict or {}).get("status_code", 200) < 300:
            return
        count = _count.get()
        if count is None:
            return
        parsed = parsed_response or {}
        code = parsed.get("Error", {}).get("Code")
        reasons = [str(reason.get("Code")) for reason in parsed.get("CancellationReasons", [])]
        label = label_of(service, event_name.rsplit(".", 1)[-1], code, reasons)
        if label is not None:
            count(label)

    client.meta.events.register("response-received", attempted, unique_id=_HANDLER_ID)
