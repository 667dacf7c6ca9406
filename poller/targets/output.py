"""Function output pass-through: what an in-process handler prints becomes JSON lines.

Lambda sends whatever a function writes to stdout to its log group, one event per line. poller
runs `python` handlers inside its own process, where stdout is also the daemon's log stream, so a
bare `print` would interleave unstructured text with the daemon's JSON logs. Instead a proxy is
installed once on `sys.stdout`: a write made while a handler runs (recognised by a contextvar set
around the call; asyncio tasks and anyio worker threads copy contextvars) goes to a per-invocation
line buffer, flushed as `{"ts", "level": "INFO", "function", "request_id", "output"}` lines; every
other write passes through unchanged.

An error a handler raises goes to the same stream as Lambda writes it to the function's log
stream: one ERROR line carrying its `errorType`, `errorMessage` and `stackTrace` (`report_error`).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO, cast

_current: ContextVar[_Capture | None] = ContextVar("poller_function_output", default=None)
_install_lock = threading.Lock()


def _timestamp() -> str:
    """UTC ISO 8601 with milliseconds and a `Z`, the form of Lambda's log timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class StdoutProxy:
    """Stands in for `sys.stdout`: a handler's writes go to its capture, others pass through."""

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
        capture = _current.get()
        if capture is not None:
            capture.write(text)
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

    def emit(self, function: str, request_id: str, output: str) -> None:
        """Write one function output line as JSON and flush it, so it shows up promptly."""
        self._line(
            {"level": "INFO", "function": function, "request_id": request_id, "output": output}
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

    def _line(self, fields: dict[str, Any]) -> None:
        line = json.dumps({"ts": _timestamp(), **fields}, ensure_ascii=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        # The rest of TextIO (encoding, isatty, fileno, buffer...) is the real stream's.
        return getattr(self._stream, name)


class _Capture:
    """The output of one invocation: complete lines are emitted at once, the rest at the end."""

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


def install() -> StdoutProxy:
    """Put the proxy on `sys.stdout` unless it is already there; cheap enough to call per call.

    Checked on every invocation rather than once at start-up because something else (a test's
    capture, an embedding application) may have replaced `sys.stdout` since.
    """
    with _install_lock:
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
    """Route stdout writes made in this context (and tasks/threads it starts) to JSON lines."""
    capture = _Capture(install(), function, request_id)
    token = _current.set(capture)
    try:
        yield
    finally:
        _current.reset(token)
        capture.close()
