"""A scripted Target: answers computed from the record ids it was invoked with."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import anyio.lowlevel

from poller.targets.base import InvocationRequest, InvokeResult, Outcome

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"

OK = InvokeResult(Outcome.SUCCESS, payload=b"null", status_code=200, executed_version="$LATEST")
ERROR = InvokeResult(
    Outcome.FUNCTION_ERROR,
    payload=b'{"errorMessage":"boom"}',
    function_error="Unhandled",
    status_code=200,
    executed_version="$LATEST",
)


def failures(*ids: str) -> InvokeResult:
    """A successful answer reporting these items failed."""
    body = {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}
    return InvokeResult(Outcome.SUCCESS, payload=json.dumps(body).encode(), status_code=200)


def record_id(record: dict[str, object]) -> str:
    """What a partial response names a record by, whatever its source."""
    if "messageId" in record:
        return str(record["messageId"])
    inner = record.get("kinesis") or record.get("dynamodb")
    assert isinstance(inner, dict)
    return str(inner.get("sequenceNumber") or inner.get("SequenceNumber"))


class ScriptedTarget:
    """A Target whose answer is `respond(ids)`; `hold` blocks every invocation until set."""

    def __init__(
        self, respond: Callable[[list[str]], InvokeResult] = lambda _: OK, *, delay: float = 0.0
    ) -> None:
        self.respond = respond
        self.delay = delay  # how long each invocation runs (part of a scenario, not a wait)
        self.calls: list[list[str]] = []
        self.events: list[dict[str, object]] = []  # every event, parsed
        self.traces: list[str | None] = []
        self.hold: anyio.Event | None = None
        self.active = 0
        self.peak = 0

    @property
    def function_arn(self) -> str:
        return FUNCTION_ARN

    @property
    def description(self) -> str:
        return "scripted"

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        event = json.loads(request.payload)
        ids = [record_id(r) for r in event["Records"]]
        self.events.append(event)
        self.calls.append(ids)
        self.traces.append(request.trace_header)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.hold is not None:
                await self.hold.wait()
            await anyio.sleep(self.delay) if self.delay else await anyio.lowlevel.checkpoint()
            return self.respond(ids)
        finally:
            self.active -= 1

    async def aclose(self) -> None:
        pass

    @property
    def delivered(self) -> list[str]:
        """Every id invoked, in order, over all calls."""
        return [i for call in self.calls for i in call]
