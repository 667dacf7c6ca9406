"""What Lambda reports when a runtime fails: the error payloads and the invocation results.

The payloads copy the shapes Lambda returns for the same failures (`Runtime.ExitError`,
`Sandbox.Timedout`, `Runtime.InvalidEntrypoint`, `Runtime.Unknown`), so a caller that parses
them sees what it would see from Lambda.
"""

from __future__ import annotations

import json

from poller.targets.base import InvokeResult, Outcome
from poller.targets.runtime.api import Answer, AnswerKind, Startup


def error_payload(error_type: str, message: str) -> bytes:
    """A function-error body as Lambda writes it."""
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def function_error(payload: bytes, detail: str) -> InvokeResult:
    """An unhandled function error carrying `payload`."""
    return InvokeResult(
        Outcome.FUNCTION_ERROR, payload=payload, function_error="Unhandled", detail=detail
    )


def invalid_entrypoint(problem: str) -> InvokeResult:
    """A runtime that cannot even be started (no bootstrap, exec failed)."""
    return function_error(error_payload("Runtime.InvalidEntrypoint", problem), problem)


def answered(answer: Answer, request_id: str) -> tuple[InvokeResult, bool]:
    """The result of an invocation the runtime answered, and whether its environment stays."""
    if answer.kind is AnswerKind.RESPONSE:
        return InvokeResult(Outcome.SUCCESS, payload=answer.body), True
    if answer.kind is AnswerKind.ERROR:
        # A MemoryError leaves the interpreter in doubt: replace the environment.
        keep = answer.error_type != "MemoryError"
        return function_error(answer.body, f"function error {answer.error_type}"), keep
    message = f"RequestId: {request_id} Error: Runtime exited with error: {answer.error_type}"
    detail = f"runtime exited during the invocation ({answer.error_type})"
    return function_error(error_payload("Runtime.ExitError", message), detail), False


def timed_out(request_id: str, timeout: float, handler: str) -> InvokeResult:
    """An invocation that ran past the function's timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
    return InvokeResult(
        Outcome.TIMEOUT,
        payload=error_payload("Sandbox.Timedout", message),
        function_error="Unhandled",
        detail=f"runtime {handler} timed out after {timeout:g} s",
    )


def init_failure(
    startup: Startup | None,
    init_error: Answer | None,
    exit_status: str | None,
    request_id: str,
    init_timeout: float,
) -> tuple[bytes, str]:
    """The payload and a short detail for an environment that failed to initialise."""
    if startup is Startup.INIT_ERROR and init_error is not None:
        return init_error.body, f"init error {init_error.error_type}"
    if startup is Startup.EXITED:
        status = exit_status or "exited"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {status}"
        return error_payload("Runtime.ExitError", message), f"runtime exited ({status})"
    message = (
        f"RequestId: {request_id} Error: the runtime did not ask for an invocation "
        f"(GET /runtime/invocation/next) within {init_timeout:.2f} seconds of starting"
    )
    return error_payload("Runtime.Unknown", message), "runtime init timed out"
