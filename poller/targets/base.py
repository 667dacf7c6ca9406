"""The Target protocol: what every kind of function target answers, and how outcomes are named."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, Self

import anyio

SettingKey = tuple[str | int, ...]
"""A setting's place under a mapping's `target`: `("handler",)`, `("layers", 1)`."""


class TargetSettingError(ValueError):
    """A target setting that cannot work on this machine: a handler that does not import, a
    package or layer that is missing, a custom runtime without its `bootstrap`. The message says
    what to do; `key` is the setting at fault, under `target` (`("handler",)`, `("layers", 1)`).
    """

    def __init__(self, message: str, key: SettingKey) -> None:
        super().__init__(message)
        self.key = key


class Outcome(StrEnum):
    """How an invocation ended; the values are the `outcome` label of poller_invocations_total."""

    SUCCESS = "success"
    FUNCTION_ERROR = "function_error"
    TIMEOUT = "timeout"
    THROTTLED = "throttled"
    INVOKE_ERROR = "invoke_error"


@dataclass(frozen=True, slots=True)
class InvocationRequest:
    """One synchronous invocation: the serialized Lambda event plus its tracing identity."""

    payload: bytes
    request_id: str
    trace_header: str | None = None


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What a target reports back; never raises for anything the function or network did.

    `payload` is the response body (success or function error). `too_large` marks HTTP 413 /
    RequestTooLargeException: the engine splits the batch. `retry_after` is the server's hint in
    seconds (Retry-After, retryAfterSeconds). `detail` is a short human reason for logs and
    /status, never containing record payloads.
    """

    outcome: Outcome
    payload: bytes | None = None
    function_error: str | None = None
    status_code: int | None = None
    executed_version: str | None = None
    retry_after: float | None = None
    too_large: bool = False
    detail: str = ""

    @property
    def reached_function(self) -> bool:
        """True when the function ran (success, function error or timeout)."""
        return self.outcome in (Outcome.SUCCESS, Outcome.FUNCTION_ERROR, Outcome.TIMEOUT)


class Target(Protocol):
    """A function poller invokes. Implementations classify every failure into an InvokeResult.

    A target is used inside `async with target:`, entered and exited by the same task: whatever
    it runs in the background (a `runtime` target's processes and their readers) lives in a task
    group opened on entry and ended on exit.
    """

    async def __aenter__(self) -> Self:
        """Get ready to be invoked; open whatever must outlive single invocations."""
        ...

    async def __aexit__(self, *exc_info: object) -> None:
        """Release everything, completing even when the caller is being cancelled."""
        ...

    @property
    def function_arn(self) -> str:
        """The ARN put in events and on-failure records (requestContext.functionArn)."""
        ...

    @property
    def description(self) -> str:
        """A short human description for /status and logs, e.g. `lambda:process-orders`."""
        ...

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        """Invoke once, synchronously; no retries of its own."""
        ...

    async def aclose(self) -> None:
        """Release connections or worker resources."""
        ...


class AcloseOnExit:
    """`async with` for a target whose whole clean-up is `aclose()`: entering does nothing."""

    async def __aenter__(self) -> Self:
        """Nothing to open: the target connects on first invocation."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """`aclose()`, shielded: a cancelled caller still releases the connections."""
        with anyio.CancelScope(shield=True):
            await self.aclose()

    async def aclose(self) -> None:
        """Release connections or worker resources (nothing, unless overridden)."""
