"""The Lambda Runtime API (2018-06-01) that the execution environments of a `runtime` target poll.

One aiohttp server per target, on 127.0.0.1. The API has no way for a runtime to say who it is,
and Lambda gives every sandbox an endpoint of its own, so each execution environment gets its own
listening port on that server: a `Channel`. The port a request arrived on names the environment.

A channel holds at most one invocation at a time. `assign` hands it over; the runtime's
`GET /runtime/invocation/next` (waiting, or arriving later) takes it; `POST .../response`,
`.../error` answer it through `Invocation.answer`. The answers and error bodies follow rapid,
Lambda's own Runtime API server: 202 `{"status": "OK"}`, 400 `InvalidRequestID`, 403
`InvalidStateTransition`, 413 `RequestEntityTooLarge`, always as `{"errorMessage", "errorType"}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

BASE = "/2018-06-01"
# rapid's interop.MaxPayloadSize: 6 MB plus a little slack for the JSON around a response.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
# Time a stopping server gives open requests; every `next` waiter is released before that.
_SHUTDOWN_GRACE = 1.0

_log = logging.getLogger("poller.targets.runtime")


class AnswerKind(Enum):
    """How an invocation ended, from the Runtime API's side."""

    RESPONSE = "response"
    ERROR = "error"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class Answer:
    """The runtime's answer: a response body, an error body (with its type), or its death.

    `error_type` is the errorType of an ERROR, the exit status (`exit status 1`) of an EXIT.
    """

    kind: AnswerKind
    body: bytes = b""
    error_type: str = ""


class Startup(Enum):
    """How an environment's init phase ended."""

    READY = "ready"
    INIT_ERROR = "init_error"
    EXITED = "exited"


@dataclass(eq=False, slots=True)
class Invocation:
    """One event on its way through a channel, with the deadline the runtime is told."""

    request_id: str
    payload: bytes
    trace_id: str
    function_arn: str
    timeout: float
    answer: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    deadline: float | None = None  # time.monotonic()
    deadline_ms: int = 0  # epoch milliseconds, the Lambda-Runtime-Deadline-Ms header
    dispatched: bool = False  # the runtime has received it

    def start_clock(self) -> None:
        """Start the timeout (once): at hand-over to a warm runtime, else when it asks for it.

        Lambda does not count a cold start's init phase against the function's timeout.
        """
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
            self.deadline_ms = int((time.time() + self.timeout) * 1000)

    def remaining(self) -> float:
        """Seconds left before the deadline (the whole timeout if the clock has not started)."""
        if self.deadline is None:
            return self.timeout
        return max(0.0, self.deadline - time.monotonic())

    async def wait_answer(self) -> Answer | None:
        """The answer, or None if it did not come before the deadline."""
        # asyncio.wait leaves the future alone at the deadline; a cancelled await would cancel it.
        done, _ = await asyncio.wait({self.answer}, timeout=self.remaining())
        return self.answer.result() if done else None


class Channel:
    """The Runtime API endpoint of one execution environment and the state of its runtime."""

    def __init__(self, port: int) -> None:
        self.port = port
        loop = asyncio.get_running_loop()
        self.startup: asyncio.Future[Startup] = loop.create_future()
        self.init_error: Answer | None = None
        # The invocation handed out by `next` and not answered yet.
        self.current: Invocation | None = None
        # The last request id handed out: output read after the answer still belongs to it.
        self.last_request_id: str | None = None
        self._pending: Invocation | None = None
        self._waiter: asyncio.Future[Invocation] | None = None
        self._exit_status: str | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the value of AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self.port}"

    @property
    def ready(self) -> bool:
        """True once the runtime has asked for its first invocation (init complete)."""
        return self.startup.done() and self.startup.result() is Startup.READY

    @property
    def waiting(self) -> bool:
        """True while a `next` request is waiting for work."""
        return self._waiter is not None

    @property
    def closed(self) -> bool:
        """True once the runtime process has exited."""
        return self._exit_status is not None

    def assign(self, invocation: Invocation) -> None:
        """Queue the invocation for this runtime's next `next` (one at a time)."""
        if self._pending is not None or self.current is not None:
            raise RuntimeError("execution environment already has an invocation")
        if self.ready:
            invocation.start_clock()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(invocation)
        else:
            self._pending = invocation

    async def wait_startup(self, within: float) -> Startup | None:
        """How init ended, or None if the runtime neither asked for work nor failed in time."""
        done, _ = await asyncio.wait({self.startup}, timeout=within)
        return self.startup.result() if done else None

    def close(self, exit_status: str) -> None:
        """The runtime process exited (`exit status 1`, `signal: killed`): fail what waits."""
        if self._exit_status is not None:
            return
        self._exit_status = exit_status
        if not self.startup.done():
            self.startup.set_result(Startup.EXITED)
        for invocation in (self.current, self._pending):
            if invocation is not None and not invocation.answer.done():
                invocation.answer.set_result(Answer(AnswerKind.EXIT, error_type=exit_status))
        self.current = self._pending = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()

    async def take_next(self) -> Invocation:
        """Wait for the next invocation and mark it current (the `next` handler's core)."""
        if not self.startup.done():
            self.startup.set_result(Startup.READY)
        invocation = self._pending
        self._pending = None
        if invocation is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                invocation = await self._waiter
            finally:
                self._waiter = None
        invocation.start_clock()
        invocation.dispatched = True
        self.current = invocation
        self.last_request_id = invocation.request_id
        return invocation

    def answer(self, invocation: Invocation, answer: Answer) -> None:
        """Settle the current invocation."""
        if self.current is invocation:
            self.current = None
        if not invocation.answer.done():
            invocation.answer.set_result(answer)


def error_response(status: int, error_type: str, message: str) -> web.Response:
    """The Runtime API's error shape: `{"errorMessage", "errorType"}`."""
    return web.json_response({"errorMessage": message, "errorType": error_type}, status=status)


def _accepted() -> web.Response:
    return web.json_response({"status": "OK"}, status=202)


def error_body(body: bytes, header_type: str, default_type: str = "Unhandled") -> tuple[bytes, str]:
    """The error object a function error carries, and its type.

    A JSON object posted by the runtime is passed through as it is (that is what Lambda's
    Invoke API returns); anything else is wrapped into `{"errorMessage", "errorType"}` so that
    readers of the error always find the two fields.
    """
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        body_type = parsed.get("errorType")
        return body, body_type if isinstance(body_type, str) and body_type else header_type
    error_type = header_type or default_type
    message = body.decode("utf-8", errors="replace")
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode(), error_type


def response_too_large(request_id: str) -> bytes:
    """The function error Lambda reports when a response is over the limit."""
    message = (
        f"RequestId: {request_id} Error: Response payload size exceeded maximum allowed "
        f"payload size ({MAX_RESPONSE_BYTES} bytes)."
    )
    return json.dumps(
        {"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}
    ).encode()


async def _read_limited(request: web.Request) -> bytes | None:
    """The request body, or None once it exceeds MAX_RESPONSE_BYTES (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 16):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class RuntimeApi:
    """The embedded Runtime API server of one target; `open_channel` adds an environment's port."""

    def __init__(self, log: logging.Logger | None = None) -> None:
        self._log = log or _log
        self._channels: dict[int, tuple[Channel, web.SockSite]] = {}
        self._runner: web.AppRunner | None = None

    async def open_channel(self) -> Channel:
        """Listen on a free loopback port for one more execution environment."""
        if self._runner is None:
            self._runner = web.AppRunner(
                self._application(), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE
            )
            await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        channel = Channel(port)
        self._channels[port] = (channel, site)
        return channel

    async def close_channel(self, channel: Channel, exit_status: str = "closed") -> None:
        """Stop listening for this environment; whatever waited on it is failed first."""
        channel.close(exit_status)
        entry = self._channels.pop(channel.port, None)
        if entry is not None:
            await entry[1].stop()

    async def aclose(self) -> None:
        """Close every channel and stop the server."""
        for channel, _ in list(self._channels.values()):
            await self.close_channel(channel, "server stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get(f"{BASE}/runtime/invocation/next", self._next)
        app.router.add_post(f"{BASE}/runtime/invocation/{{request_id}}/response", self._response)
        app.router.add_post(f"{BASE}/runtime/invocation/{{request_id}}/error", self._error)
        app.router.add_post(f"{BASE}/runtime/init/error", self._init_error)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Whatever a runtime sends, it gets the API's error shape back, never a stack trace.
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed:
            message = f"method {request.method} not allowed on {request.path}"
            return error_response(405, "MethodNotAllowed", message)
        except web.HTTPNotFound:
            return error_response(404, "NotFound", f"unknown path {request.path}")
        except web.HTTPException as exc:
            return error_response(exc.status, exc.reason.replace(" ", ""), exc.text or exc.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("Runtime API: unexpected error serving %s", request.path)
            return error_response(500, "InternalServerError", "Internal Server Error")

    def _channel(self, request: web.Request) -> Channel | None:
        transport = request.transport
        if transport is None:
            return None
        sockname = transport.get_extra_info("sockname")
        entry = self._channels.get(sockname[1]) if sockname else None
        return entry[0] if entry is not None else None

    def _gone(self) -> web.Response:
        message = "this execution environment is shutting down"
        return error_response(403, "InvalidStateTransition", message)

    async def _next(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        if channel is None or channel.closed:
            return self._gone()
        if channel.current is not None or channel.waiting:
            message = "next called before the current invocation was answered"
            return error_response(403, "InvalidStateTransition", message)
        try:
            invocation = await channel.take_next()
        except asyncio.CancelledError:
            if channel.closed:  # the channel closed under the waiting request
                return self._gone()
            raise
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
            "Content-Type": "application/json",
        }
        return web.Response(body=invocation.payload, headers=headers)

    def _current(self, request: web.Request) -> tuple[Channel, Invocation] | web.Response:
        channel = self._channel(request)
        if channel is None or channel.closed:
            return self._gone()
        invocation = channel.current
        if invocation is None or invocation.request_id != request.match_info["request_id"]:
            return error_response(400, "InvalidRequestID", "Invalid request ID")
        return channel, invocation

    async def _response(self, request: web.Request) -> web.StreamResponse:
        found = self._current(request)
        if isinstance(found, web.Response):
            return found
        channel, invocation = found
        body = await _read_limited(request)
        if channel.current is not invocation:  # answered meanwhile, on another connection
            return error_response(400, "InvalidRequestID", "Invalid request ID")
        if body is None:
            too_large = response_too_large(invocation.request_id)
            kind = "Function.ResponseSizeTooLarge"
            channel.answer(invocation, Answer(AnswerKind.ERROR, too_large, kind))
            message = f"Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            return error_response(413, "RequestEntityTooLarge", message)
        channel.answer(invocation, Answer(AnswerKind.RESPONSE, body))
        return _accepted()

    async def _error(self, request: web.Request) -> web.StreamResponse:
        found = self._current(request)
        if isinstance(found, web.Response):
            return found
        channel, invocation = found
        raw = await _read_limited(request)
        if channel.current is not invocation:
            return error_response(400, "InvalidRequestID", "Invalid request ID")
        body, error_type = error_body(raw or b"", request.headers.get(ERROR_TYPE_HEADER, ""))
        channel.answer(invocation, Answer(AnswerKind.ERROR, body, error_type))
        return _accepted()

    async def _init_error(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        if channel is None or channel.closed:
            return self._gone()
        if channel.startup.done():
            message = "init error reported after init completed"
            return error_response(403, "InvalidStateTransition", message)
        raw = await _read_limited(request)
        header_type = request.headers.get(ERROR_TYPE_HEADER, "")
        body, error_type = error_body(raw or b"", header_type, "Runtime.Unknown")
        if not channel.startup.done():
            channel.init_error = Answer(AnswerKind.ERROR, body, error_type)
            channel.startup.set_result(Startup.INIT_ERROR)
        return _accepted()
