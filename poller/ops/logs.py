"""Structured logs: one JSON object per line, or readable text on a terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from poller.targets.output import FunctionLogHandler, is_function_record, is_poller_logger

# Extra attributes a log call may carry and that the JSON line promotes to top-level keys.
_CONTEXT_KEYS = ("mapping", "shard", "batch", "error", "count", "queue", "attempt", "delay")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "msg", "mapping", ...}`; exceptions as a short string, never a payload."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "msg": record.getMessage(),
            "logger": record.name,
        }
        for key in _CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`ts LEVEL [mapping] msg key=value` for people watching a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso(record.created), f"{record.levelname:<7}"]
        mapping = record.__dict__.get("mapping")
        if mapping:
            parts.append(f"[{mapping}]")
        parts.append(record.getMessage())
        for key in _CONTEXT_KEYS[1:]:
            value = record.__dict__.get(key)
            if value is not None:
                parts.append(f"{key}={value}")
        text = " ".join(parts)
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _daemon_record(record: logging.LogRecord) -> bool:
    """What the daemon's handler writes: poller's records at `--log-level` (their loggers filter),
    other libraries' warnings and errors; a function's records are the function's lines."""
    if is_poller_logger(record.name):
        return True
    return record.levelno >= logging.WARNING and not is_function_record(record)


def configure_logging(level: str, fmt: str | None, stream: TextIO | None = None) -> None:
    """Route every `poller` log to `stream` (default stdout) in the chosen format, and what a
    `python` handler logs to its function lines."""
    out = stream if stream is not None else sys.stdout
    if fmt is None:
        fmt = "text" if out.isatty() else "json"
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_daemon_record)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    # Added before any handler module is imported, so a library that attaches filters to the
    # root's handlers as it is set up (Powertools' Logger does, not to log its records twice)
    # finds this one too.
    root.addHandler(FunctionLogHandler())
    # The root level is the threshold of a function's loggers (those it has not set itself):
    # WARNING, as in Lambda's Python runtime with its default text log format, where a handler
    # calls `logging.getLogger().setLevel(logging.INFO)` to see its INFO records. A handler that
    # does so here lets no other library's INFO into the daemon's lines (`_daemon_record`).
    root.setLevel(logging.WARNING)
    logging.getLogger("poller").setLevel(level.upper())
    # botocore and werkzeug are chatty at INFO; their warnings still show.
    for noisy in ("botocore", "aiobotocore", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
