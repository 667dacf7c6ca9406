"""Function output pass-through: what an in-process handler prints or logs becomes JSON lines.

Lambda sends whatever a function writes to stdout or stderr to its log group, one event per line,
and its Python runtime's log handler sends each record the function logs. poller runs `python`
handlers inside its own process, where stdout is also the daemon's log stream, so a bare `print`
would interleave unstructured text with the daemon's JSON logs. Instead proxies are installed on
`sys.stdout` and `sys.stderr`: a write made while a handler runs (recognised by a contextvar set
around the call; asyncio tasks and anyio worker threads copy contextvars) goes to a per-invocation,
per-stream line buffer, flushed as `{"ts", "level": "INFO", "function", "request_id", "output"}`
lines on stdout (both streams at INFO, as the `runtime` target labels its process's stderr); every
other write passes through unchanged. `FunctionLogHandler`, on the root logger, does the same for
log records emitted while a handler runs by loggers that are not poller's own: one line per
record, at the record's level.

An error a handler raises goes to the same stream as Lambda writes it to the function's log
stream: one ERROR line carrying its `errorType`, `errorMessage` and `stackTrace` (`report_error`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, cast

_current: ContextVar[_Invocation | None] = ContextVar("poller_function_output", default=None)
_install_lock = threading.Lock()

Stream = Literal["stdout", "stderr"]


def _timestamp(at: datetime | None = None) -> str:
    """UTC ISO 8601 with milliseconds and a `Z`, the form of Lambda's log timestamps."""
    moment = at if at is not None else datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_poller_logger(name: str) -> bool:
    """True for the daemon's own loggers (`poller`, `poller.*`); every other one is a function's
    while a handler runs."""
    return name == "poller" or name.startswith("poller.")


def is_function_record(record: logging.LogRecord) -> bool:
    """True if `record` was logged by a handler's code during an invocation, so it is one of the
    function's lines (`FunctionLogHandler` writes it) and none of the daemon's."""
    return _current.get() is not None and not is_poller_logger(record.name)


@dataclass(frozen=True, slots=True)
class FunctionError:
    """An error a function raised, in the fields of Lambda's error object."""

    error_type: str
    message: str
    stack: tuple[str, ...] = ()

    @classmethod
    def from_payload(cls, payload: bytes | None) -> FunctionError:
        """Read an error object (`{"errorType", "errorMessage", "stackTrace"}`) as a runtime
        posts it; a body that is not one becomes the message of an `Unhandled` error."""
        text = (payload or b"").decode("utf-8", errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return cls("Unhandled", text)
        stack = body.get("stackTrace")
        if isinstance(stack, str):
            lines = tuple(stack.splitlines())
        elif isinstance(stack, list):
            lines = tuple(str(line) for line in stack)
        else:
            lines = ()
        message = body.get("errorMessage")
        if not isinstance(message, str):
            message = "" if message is None else json.dumps(message)
        return cls(str(body.get("errorType") or "Unhandled"), message, lines)


class _StreamProxy:
    """Stands in for a standard stream: a handler's writes go to its capture, the rest passes."""

    _name: Stream

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        # Handlers run on worker threads while the daemon logs from the event loop; one lock keeps
        # each line whole on the shared stream. Reentrant in case a flush writes back through us.
        self._lock = threading.RLock()

    @property
    def wrapped(self) -> TextIO:
        """The stream this proxy writes to."""
        return self._stream

    def write(self, text: str) -> int:
        """Capture the text if a handler is running in this context, else pass it through."""
        invocation = _current.get()
        if invocation is not None:
            invocation.capture(self._name).write(text)
            return len(text)
        with self._lock:
            return self._stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each string in turn, routed like `write`."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the wrapped stream (a capture's partial line waits for its newline or the end)."""
        with self._lock:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # The rest of TextIO (encoding, isatty, fileno, buffer...) is the real stream's.
        return getattr(self._stream, name)


class StderrProxy(_StreamProxy):
    """Stands in for `sys.stderr`; what a handler writes there becomes function lines on stdout,
    written by the stdout proxy, as the `runtime` target passes on its process's stderr."""

    _name: Stream = "stderr"


class StdoutProxy(_StreamProxy):
    """Stands in for `sys.stdout`, and writes every function line, whichever stream or logger
    it came from: stdout is where the daemon's and the `runtime` target's lines go too."""

    _name: Stream = "stdout"

    def emit(
        self,
        function: str,
        request_id: str,
        output: str,
        level: str = "INFO",
        at: datetime | None = None,
    ) -> None:
        """Write one function output line as JSON and flush it, so it shows up promptly."""
        self._line(
            {"level": level, "function": function, "request_id": request_id, "output": output},
            at,
        )

    def emit_error(self, function: str, request_id: str, error: FunctionError) -> None:
        """Write the error a handler raised as Lambda logs it: one ERROR line, with its stack."""
        self._line(
            {
                "level": "ERROR",
                "function": function,
                "request_id": request_id,
                "errorType": error.error_type,
                "errorMessage": error.message,
                "stackTrace": list(error.stack),
            }
        )

    def _line(self, fields: dict[str, Any], at: datetime | None = None) -> None:
        line = json.dumps({"ts": _timestamp(at), **fields}, ensure_ascii=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class _Capture:
    """One stream of one invocation: complete lines are emitted at once, the rest at the end."""

    def __init__(self, proxy: StdoutProxy, function: str, request_id: str) -> None:
        self._proxy = proxy
        self._function = function
        self._request_id = request_id
        self._pending = ""
        self._closed = False
        # A handler may print from several threads it started itself.
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            if self._closed and self._pending:
                # An abandoned (timed-out) handler still printing: nothing will flush it later.
                lines.append(self._pending)
                self._pending = ""
        for line in lines:
            self._proxy.emit(self._function, self._request_id, line)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            rest, self._pending = self._pending, ""
        if rest:
            self._proxy.emit(self._function, self._request_id, rest)


class _Invocation:
    """What one invocation writes: a line buffer per stream, and where its lines go."""

    def __init__(self, proxy: StdoutProxy, function: str, request_id: str) -> None:
        self.proxy = proxy
        self.function = function
        self.request_id = request_id
        # Separate buffers, as the `runtime` target reads its process's two pipes: a partial
        # stdout line is not completed by what goes to stderr.
        self._captures = {
            "stdout": _Capture(proxy, function, request_id),
            "stderr": _Capture(proxy, function, request_id),
        }

    def capture(self, stream: Stream) -> _Capture:
        return self._captures[stream]

    def close(self) -> None:
        for capture in self._captures.values():
            capture.close()


class FunctionLogHandler(logging.Handler):
    """On the root logger: a record a handler's code logs during an invocation becomes one
    function line at the record's level, as Lambda's Python runtime sends each record to the
    function's log stream. The rest (the daemon's records, and everything logged outside an
    invocation) is left to the daemon's own log handler."""

    def emit(self, record: logging.LogRecord) -> None:
        invocation = _current.get()
        if invocation is None or is_poller_logger(record.name):
            return
        try:
            # The message with its traceback, if any, in one line: one record is one event.
            output = self.format(record)
            at = datetime.fromtimestamp(record.created, UTC)
            invocation.proxy.emit(
                invocation.function, invocation.request_id, output, record.levelname, at
            )
        except Exception:
            self.handleError(record)


def install() -> StdoutProxy:
    """Put the proxies on `sys.stdout` and `sys.stderr` unless they are already there; cheap
    enough to call per call. Returns the stdout proxy, which writes the function lines.

    Checked on every invocation rather than once at start-up because something else (a test's
    capture, an embedding application) may have replaced `sys.stdout` since.
    """
    with _install_lock:
        if not isinstance(sys.stderr, StderrProxy):
            sys.stderr = cast(TextIO, StderrProxy(sys.stderr))
        current = sys.stdout
        if isinstance(current, StdoutProxy):
            return current
        proxy = StdoutProxy(current)
        sys.stdout = cast(TextIO, proxy)
        return proxy


def report_error(function: str, request_id: str, payload: bytes | None) -> None:
    """Log the error object a function's invocation answered with, as one ERROR line."""
    install().emit_error(function, request_id, FunctionError.from_payload(payload))


@contextmanager
def function_output(function: str, request_id: str) -> Iterator[None]:
    """Route stdout and stderr writes and function log records made in this context (and the
    tasks and anyio worker threads it starts) to JSON lines."""
    invocation = _Invocation(install(), function, request_id)
    token = _current.set(invocation)
    try:
        yield
    finally:
        _current.reset(token)
        invocation.close()
