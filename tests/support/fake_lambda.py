"""Test functions reachable over real HTTP: a fake Lambda Invoke API and a plain POST endpoint.

moto cannot run functions without Docker (MOTO-NOTES "Lambda, SNS, S3"), so tests that need a
function that answers, fails, times out or throttles on demand point poller at these instead:

    async with FakeLambda(lambda event, info: Reply.throttled(retry_after_seconds=2)) as fake:
        settings = AwsSettings(endpoints={"lambda": fake.endpoint_url})
        ...
        await fake.wait_for(3, timeout=5)

Error answers are in the shape botocore's rest-json parser expects (an `x-amzn-ErrorType` header
plus a JSON body with `Type`/`message`), so aiobotocore raises the modeled exception classes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import unquote

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    """What a fake function answers. Build one with the class methods; `Reply()` is a `null` result.

    `function_error` is kept apart from `status` because the two servers express it differently:
    the Invoke API answers 200 with `X-Amz-Function-Error`, a plain HTTP function answers 500.
    """

    status: int = 200
    body: bytes = b"null"
    headers: Mapping[str, str] = field(default_factory=dict)
    function_error: str | None = None

    @classmethod
    def result(cls, value: Any = None) -> Reply:
        """A successful invocation returning `value` (JSON-encoded)."""
        return cls(body=json.dumps(value).encode())

    @classmethod
    def raw(cls, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Any status, body and headers, sent as they are."""
        return cls(status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def error(
        cls, message: str = "boom", error_type: str = "Exception", *, kind: str = "Unhandled"
    ) -> Reply:
        """The handler raised: Lambda's error object with `X-Amz-Function-Error: <kind>`."""
        body = {
            "errorMessage": message,
            "errorType": error_type,
            "requestId": str(uuid.uuid4()),
            "stackTrace": ['  File "/var/task/app.py", line 1, in handler\n    raise\n'],
        }
        return cls(body=json.dumps(body).encode(), function_error=kind)

    @classmethod
    def timeout(cls, seconds: float = 3.0) -> Reply:
        """The function outlived its timeout, reported the way Lambda does."""
        message = f"RequestId: {uuid.uuid4()} Error: Task timed out after {seconds:.2f} seconds"
        body = {"errorType": "Sandbox.Timedout", "errorMessage": message}
        return cls(body=json.dumps(body).encode(), function_error="Unhandled")

    @classmethod
    def throttled(
        cls,
        retry_after_seconds: float | None = None,
        reason: str = "ReservedFunctionConcurrentInvocationLimitExceeded",
    ) -> Reply:
        """429 TooManyRequestsException; `retry_after_seconds` goes in the Retry-After header."""
        headers = {"Retry-After": f"{retry_after_seconds:g}"} if retry_after_seconds else {}
        return _aws_error(
            429, "TooManyRequestsException", "Rate Exceeded.", headers, extra={"Reason": reason}
        )

    @classmethod
    def too_large(cls) -> Reply:
        """413 RequestTooLargeException."""
        message = "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
        return _aws_error(413, "RequestTooLargeException", message)

    @classmethod
    def not_found(cls, function: str = "function") -> Reply:
        """404 ResourceNotFoundException."""
        return _aws_error(404, "ResourceNotFoundException", f"Function not found: {function}")

    @classmethod
    def service_error(cls, message: str = "Internal failure") -> Reply:
        """500 ServiceException from the Invoke API itself (the function never ran)."""
        return _aws_error(500, "ServiceException", message, error_class="Service")


def _aws_error(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    error_class: str = "User",
) -> Reply:
    body = {"Type": error_class, "message": message, "Message": message, **(extra or {})}
    all_headers = {"x-amzn-ErrorType": code, **(headers or {})}
    return Reply.raw(status, json.dumps(body).encode(), all_headers)


class Invocation(NamedTuple):
    """One request a fake received; also what its handler gets as `info`."""

    function_name: str
    qualifier: str | None
    event: Any
    headers: Mapping[str, str]


# `(event, info) -> Reply`, sync or async; any other return value is a successful JSON result.
Handler = Callable[[Any, Invocation], Any]


def _default_handler(event: Any, info: Invocation) -> Reply:
    return Reply()


class SlowFunction:
    """A handler whose function takes `seconds` per invocation (the scenario's own duration,
    not a wait) and counts how many invocations ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = 0
        self.peak = 0

    async def __call__(self, event: Any, info: Invocation) -> Reply:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.active -= 1
        return Reply()


class _FakeServer:
    """An aiohttp server on 127.0.0.1 (free port) that records requests and asks `handler`."""

    def __init__(self, handler: Handler | None = None) -> None:
        # Public and reassignable, so a test can change the function's behaviour mid-run.
        self.handler: Handler = handler or _default_handler
        self.invocations: list[Invocation] = []
        # Exceptions raised by the handler itself: a test bug, not a function error.
        self.errors: list[BaseException] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def endpoint_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self._port}"

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _to_response(self, reply: Reply) -> web.Response:
        raise NotImplementedError

    async def __aenter__(self) -> _FakeServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._routes(app)
        # handler_cancellation: a client that gave up (timeout tests) must not leave a handler
        # sleeping that cleanup then waits for.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Invocation]:
        """Wait until at least `count` invocations arrived; TimeoutError says how many did."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.invocations) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.invocations)} of {count} invocations arrived within {timeout} s"
            ) from None
        return list(self.invocations)

    def reset(self) -> None:
        """Forget recorded invocations and errors."""
        self.invocations.clear()
        self.errors.clear()

    async def _dispatch(
        self, request: web.Request, function_name: str, qualifier: str | None
    ) -> web.Response:
        raw = await request.read()
        try:
            event: Any = json.loads(raw) if raw else None
        except ValueError:
            event = raw
        info = Invocation(function_name, qualifier, event, request.headers)
        async with self._changed:
            self.invocations.append(info)
            self._changed.notify_all()
        try:
            answer = self.handler(event, info)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            self.errors.append(exc)
            answer = Reply.service_error(f"fake handler raised {type(exc).__name__}: {exc}")
        reply = answer if isinstance(answer, Reply) else Reply.result(answer)
        return self._to_response(reply)


class FakeLambda(_FakeServer):
    """Speaks Lambda's Invoke API: `POST /2015-03-31/functions/{name}/invocations`."""

    async def __aenter__(self) -> FakeLambda:
        await super().__aenter__()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/2015-03-31/functions/{name}/invocations", self._invoke)

    async def _invoke(self, request: web.Request) -> web.Response:
        # botocore percent-encodes the name segment (an ARN's colons); decode once more in case
        # the router left it encoded.
        name = unquote(request.match_info["name"])
        return await self._dispatch(request, name, request.query.get("Qualifier"))

    def _to_response(self, reply: Reply) -> web.Response:
        headers = {"Content-Type": "application/json", **reply.headers}
        headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
        if reply.status == 200:
            headers.setdefault("X-Amz-Executed-Version", "$LATEST")
        if reply.function_error:
            headers["X-Amz-Function-Error"] = reply.function_error
        return web.Response(status=reply.status, body=reply.body, headers=headers)


class FakeHttpFunction(_FakeServer):
    """A function behind a plain `POST /invoke` (an `http` target), answering with a Reply.

    A Reply with a function error becomes HTTP 500 with its error body; others are sent as-is.
    """

    path = "/invoke"

    @property
    def url(self) -> str:
        """The URL to put in `target.url`."""
        return f"{self.endpoint_url}{self.path}"

    async def __aenter__(self) -> FakeHttpFunction:
        await super().__aenter__()
        return self

    def _routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._invoke)

    async def _invoke(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, self.path, None)

    def _to_response(self, reply: Reply) -> web.Response:
        status = 500 if reply.function_error else reply.status
        headers = {"Content-Type": "application/json", **reply.headers}
        return web.Response(status=status, body=reply.body, headers=headers)


def invocations(fake: FakeLambda, function: str | None = None) -> list[Invocation]:
    """The fake's invocations in arrival order, all or those of one function (by its name,
    whether the daemon called it by name or by ARN)."""
    return [
        inv
        for inv in fake.invocations
        if function is None or inv.function_name.split(":")[-1] == function
    ]


def event_records(fake: FakeLambda, function: str | None = None) -> list[dict[str, Any]]:
    """Every record of every event the fake received, in invocation order (optionally of one
    function): SQS messages, Kinesis or DynamoDB stream records alike."""
    return [record for inv in invocations(fake, function) for record in inv.event["Records"]]
