"""The `python` target: import `module.path:function` and call it in-process, as Lambda would.

The handler gets `(event, context)` with a fresh event per call and a context carrying what
Lambda's does. Async handlers run on the event loop; sync handlers on worker threads. Errors come
back in the shape of Lambda's Python runtime (awslambdaric), so code reading on-failure records or
`responseContext` sees what it would see on AWS.
"""

from __future__ import annotations

import decimal
import importlib
import inspect
import json
import logging
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import orjson

from poller.config.settings import PythonTargetSettings
from poller.targets.base import (
    AcloseOnExit,
    InvocationRequest,
    InvokeResult,
    Outcome,
    TargetSettingError,
)
from poller.targets.output import function_output, install, report_error

# Sync handlers each hold a worker thread for their whole run. The engine already bounds
# concurrency per mapping (maximum_concurrency, shards × parallelization), so this only has to
# stay out of its way: anyio's default limiter (40 threads, shared process-wide) would not.
THREAD_CAPACITY = 100

# Lambda's default memory size; the context reports it as a string, as awslambdaric does.
DEFAULT_MEMORY_MB = 128

_log = logging.getLogger("poller.targets.python")


class TargetLoadError(TargetSettingError):
    """The configured handler cannot be imported or is not callable; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ("handler",))


def load_handler(spec: str) -> Callable[..., Any]:
    """Import `module.path:function` (the attribute may be dotted) and return the callable."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise TargetLoadError(
            f"handler {spec!r} is not of the form module.path:function; write e.g. "
            "app.handlers:handle (a colon between the module and the function)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise TargetLoadError(
                f"handler {spec!r}: module {module_name!r} not found; install it or add the "
                "directory holding it to PYTHONPATH"
            ) from exc
        raise TargetLoadError(
            f"handler {spec!r}: importing {module_name!r} failed because module {missing!r} "
            "(which it imports) is not installed; install it in poller's environment"
        ) from exc
    except Exception as exc:
        raise TargetLoadError(
            f"handler {spec!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}; fix the module"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetLoadError(
                f"handler {spec!r}: {module_name!r} has no attribute {attr_path!r}; check the "
                "name after the colon"
            ) from None
    if not callable(obj):
        raise TargetLoadError(
            f"handler {spec!r} is a {type(obj).__name__}, not a function; point target.handler "
            "at a callable taking (event, context)"
        )
    return obj  # type: ignore[no-any-return]


class CognitoIdentity:
    """`context.identity`: Lambda sets it (with empty fields) even when no Cognito caller exists."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


class LambdaContext:
    """The `context` a handler receives, with the attributes and methods of Lambda's."""

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        aws_request_id: str,
        log_stream_name: str,
        memory_limit_in_mb: int,
        deadline: float,
        trace_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = invoked_function_arn
        # A string, as in Lambda (awslambdaric reads AWS_LAMBDA_FUNCTION_MEMORY_SIZE verbatim).
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = aws_request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = CognitoIdentity()
        self.client_context: Any = None
        self.tenant_id: str | None = None
        # The X-Ray header Lambda would put in _X_AMZN_TRACE_ID. poller never sets that
        # variable in its own process (every handler shares it), so it rides here instead.
        self.trace_id = trace_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before poller gives up on this invocation (never negative)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, msg: object) -> None:
        """Lambda's `context.log`: write to the function's output."""
        sys.stdout.write(str(msg))


@dataclass(frozen=True, slots=True)
class _Returned:
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Raised:
    payload: bytes


_Result = _Returned | _Raised


def _encode_default(obj: object) -> Any:
    # awslambdaric writes Decimals as JSON numbers (DynamoDB code returns them); the stdlib
    # encoder cannot emit a raw number, so integral values become int and the rest float.
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _error_payload(error_message: str, error_type: str, request_id: str, stack: list[str]) -> bytes:
    return json.dumps(
        {
            "errorMessage": error_message,
            "errorType": error_type,
            "requestId": request_id,
            "stackTrace": stack,
        }
    ).encode()


def _marshal(value: Any, request_id: str) -> _Result:
    """JSON-encode a return value as Lambda's runtime does; bytes pass through untouched."""
    if isinstance(value, bytes):
        return _Returned(value)
    try:
        return _Returned(json.dumps(value, default=_encode_default).encode())
    except (TypeError, ValueError) as exc:
        message = f"Unable to marshal response: {exc}"
        return _Raised(_error_payload(message, "Runtime.MarshalError", request_id, []))


def _exception_result(exc: BaseException, request_id: str) -> _Raised:
    """Lambda's error object: the stack trace starts at the handler, without poller's frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and frames[0].filename == __file__:
        frames.pop(0)
    if isinstance(exc, SystemExit):
        # In Lambda, sys.exit() ends the runtime process and the invoke reports that.
        message = (
            f"RequestId: {request_id} Error: Runtime exited with error: exit status {exc.code}"
        )
        return _Raised(_error_payload(message, "Runtime.ExitError", request_id, []))
    stack = traceback.format_list(frames)
    return _Raised(_error_payload(str(exc), type(exc).__name__, request_id, stack))


def _call_sync(handler: Callable[..., Any], event: Any, context: LambdaContext) -> Any:
    """Runs on a worker thread: call, and marshal the result there too (it can be large)."""
    try:
        value = handler(event, context)
    except (Exception, SystemExit) as exc:
        return _exception_result(exc, context.aws_request_id)
    if inspect.isawaitable(value):
        # A callable that returns a coroutine without being detectably async (a wrapper, a
        # partial of an async function): hand the awaitable back to the event loop.
        return value
    return _marshal(value, context.aws_request_id)


async def _call_async(start: Callable[[], Awaitable[Any]], request_id: str) -> _Result:
    """Await the handler; calling it happens inside the try too (a wrong signature raises there)."""
    try:
        value = await start()
    except (Exception, SystemExit) as exc:
        return _exception_result(exc, request_id)
    return _marshal(value, request_id)


def _is_async(handler: Callable[..., Any]) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - async __call__ on an instance
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _event(payload: bytes) -> Any:
    """The event as the handler gets it. orjson decodes poller's own payloads to the same
    objects json.loads does, in less than half the time; what orjson refuses and json accepts
    (a window state with NaN or an integer past 64 bits, from a function's answer) is decoded
    by json.loads."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


class PythonTarget(AcloseOnExit):
    """Calls an in-process `handler(event, context)`, sync (worker thread) or async (event loop)."""

    def __init__(
        self,
        settings: PythonTargetSettings,
        *,
        mapping_name: str,
        region: str,
        account: str,
        memory_limit_in_mb: int = DEFAULT_MEMORY_MB,
        log: logging.Logger | None = None,
    ) -> None:
        # The stream proxies go on before the handler's module is imported: a logger it sets up
        # there with a handler on `sys.stdout` (Powertools' Logger) then writes through them, so
        # what it writes during an invocation is a function line like the rest of its output.
        install()
        self._handler = load_handler(settings.handler)
        self._spec = settings.handler
        self._is_async = _is_async(self._handler)
        self._timeout = settings.timeout_seconds
        self._name = mapping_name
        self._arn = f"arn:aws:lambda:{region}:{account}:function:{mapping_name}"
        self._memory = memory_limit_in_mb
        self._log = log or _log
        # One "execution environment" per target, named the way Lambda names log streams.
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        self._log_stream = f"{day}/[$LATEST]{uuid.uuid4().hex}"
        # Created on first use: anyio primitives belong to the running event loop.
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def function_arn(self) -> str:
        """`arn:aws:lambda:{region}:{account}:function:{mapping name}`."""
        return self._arn

    @property
    def description(self) -> str:
        """`python:module.path:function`."""
        return f"python:{self._spec}"

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        """Call the handler once; classify its return, exception or timeout."""
        try:
            # Decoded per call, so a handler that mutates its event cannot touch a retry's.
            event = _event(request.payload)
        except ValueError as exc:
            return InvokeResult(
                Outcome.INVOKE_ERROR, detail=f"event is not valid JSON ({exc}): a poller bug"
            )
        context = LambdaContext(
            function_name=self._name,
            invoked_function_arn=self._arn,
            aws_request_id=request.request_id,
            log_stream_name=self._log_stream,
            memory_limit_in_mb=self._memory,
            deadline=time.monotonic() + self._timeout,
            trace_id=request.trace_header,
        )
        result: _Result | None = None
        with (
            function_output(self._name, request.request_id),
            anyio.move_on_after(self._timeout) as scope,
        ):
            result = await self._run(event, context)
        if scope.cancel_called or result is None:
            return self._timed_out(request.request_id)
        if isinstance(result, _Raised):
            report_error(self._name, request.request_id, result.payload)
            return InvokeResult(
                Outcome.FUNCTION_ERROR,
                payload=result.payload,
                function_error="Unhandled",
                detail=f"handler {self._spec} raised an error",
            )
        return InvokeResult(Outcome.SUCCESS, payload=result.payload)

    async def _run(self, event: Any, context: LambdaContext) -> _Result:
        request_id = context.aws_request_id
        if self._is_async:
            return await _call_async(partial(self._handler, event, context), request_id)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(THREAD_CAPACITY)
        # abandon_on_cancel: a thread cannot be killed, so on timeout (or shutdown) the call is
        # left to finish on its own and its result discarded, while the limiter slot is freed.
        # A handler that never returns therefore leaks its thread; Lambda would kill the sandbox.
        outcome = await anyio.to_thread.run_sync(
            partial(_call_sync, self._handler, event, context),
            abandon_on_cancel=True,
            limiter=self._limiter,
        )
        if isinstance(outcome, _Returned | _Raised):
            return outcome
        awaitable: Awaitable[Any] = outcome
        return await _call_async(lambda: awaitable, request_id)

    def _timed_out(self, request_id: str) -> InvokeResult:
        if not self._is_async:
            self._log.warning(
                "python handler %s outlived its %.2f s timeout; its thread keeps running "
                "unobserved (a thread cannot be stopped)",
                self._spec,
                self._timeout,
                extra={"mapping": self._name},
            )
        message = f"RequestId: {request_id} Error: Task timed out after {self._timeout:.2f} seconds"
        payload = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode()
        return InvokeResult(
            Outcome.TIMEOUT,
            payload=payload,
            function_error="Unhandled",
            detail=f"handler {self._spec} timed out after {self._timeout:g} s",
        )

    async def aclose(self) -> None:
        """Nothing to release: worker threads belong to anyio's pool."""
