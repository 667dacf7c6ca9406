"""A `python` handler's stderr and log records: function lines, as its stdout is.

The daemon's logging is set up as `poller run` sets it up (`configure_logging`), its own lines
going to a separate stream so that they can be told from the function lines on stdout.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from poller.config.settings import PythonTargetSettings
from poller.ops.logs import configure_logging
from poller.targets import InvocationRequest, PythonTarget
from tests.support.output import output_lines
from tests.support.queues import ACCOUNT, REGION

FIELDS = {"ts", "level", "function", "request_id", "output"}

# --- handlers, imported back through their "module:function" spec -------------------------

app_log = logging.getLogger("orders.app")
# Set to INFO at import, as Lambda functions set theirs: the root stays at WARNING.
audit_log = logging.getLogger("orders.audit")
audit_log.setLevel(logging.INFO)


def writes_stderr(event: Any, context: Any) -> None:
    print("to stderr", file=sys.stderr)
    sys.stderr.write("two\nlines")


def logs(event: Any, context: Any) -> None:
    logging.info("root info %s", context.aws_request_id)  # under the WARNING root: dropped
    audit_log.info("audit info %s", context.aws_request_id)
    app_log.warning("app warning")
    logging.debug("root debug")
    logging.getLogger("poller.engine").info("the daemon's own, from inside")


def logs_an_exception(event: Any, context: Any) -> None:
    try:
        raise ValueError("bad order")
    except ValueError:
        app_log.exception("could not process\nthe order")


def logs_at_debug_when_asked(event: Any, context: Any) -> None:
    chatty = logging.getLogger("orders.chatty")
    chatty.setLevel(logging.DEBUG)
    chatty.debug("debug from a logger set to DEBUG")


def logs_from_a_plain_thread(event: Any, context: Any) -> None:
    # A thread the handler starts itself does not inherit its context: nothing it does is
    # attributed to the request.
    def background() -> None:
        logging.getLogger("orders.background").warning("background warning")
        logging.getLogger("orders.background").info("background info")

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()


def logs_a_lot(event: Any, context: Any) -> None:
    for i in range(30):
        audit_log.info("%s %d", context.aws_request_id, i)
        print(f"{context.aws_request_id} {i}", file=sys.stderr)
        time.sleep(0.0005)


async def async_logs_a_lot(event: Any, context: Any) -> None:
    for i in range(30):
        app_log.warning("%s %d", context.aws_request_id, i)
        print(f"{context.aws_request_id} {i}", file=sys.stderr)
        await asyncio.sleep(0)


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def daemon_log() -> Iterator[io.StringIO]:
    """The daemon's own log lines, as `poller run --log-level INFO` configures them; the
    logging set-up before is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("poller").level)
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("poller").setLevel(saved[2])


def target(handler: str, name: str = "orders") -> PythonTarget:
    settings = PythonTargetSettings(type="python", handler=f"{__name__}:{handler}")
    return PythonTarget(settings, mapping_name=name, region=REGION, account=ACCOUNT)


def request(request_id: str) -> InvocationRequest:
    return InvocationRequest(json.dumps({"Records": []}).encode(), request_id)


def daemon_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- stderr ---------------------------------------------------------------------------------


async def test_stderr_lines_become_function_lines_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print("before, from the daemon", file=sys.stderr)
    await target("writes_stderr").invoke(request("req-s"))
    print("after, from the daemon", file=sys.stderr)
    captured = capsys.readouterr()
    lines = output_lines(captured.out)
    assert [line["output"] for line in lines] == ["to stderr", "two", "lines"]
    for line in lines:
        assert set(line) == FIELDS
        # INFO, as the runtime target labels its process's stderr.
        assert (line["level"], line["function"], line["request_id"]) == ("INFO", "orders", "req-s")
    # Writes to stderr outside a handler still go to stderr, untouched.
    assert captured.err == "before, from the daemon\nafter, from the daemon\n"


# --- log records ----------------------------------------------------------------------------


async def test_log_records_become_function_lines_at_their_level(
    capsys: pytest.CaptureFixture[str], daemon_log: io.StringIO
) -> None:
    await target("logs").invoke(request("req-l"))
    lines = output_lines(capsys.readouterr().out)
    assert [(line["level"], line["output"]) for line in lines] == [
        ("INFO", "audit info req-l"),
        ("WARNING", "app warning"),
    ]
    for line in lines:
        assert set(line) == FIELDS
        assert (line["function"], line["request_id"]) == ("orders", "req-l")
        assert line["ts"].endswith("Z")
    # poller's own logger stays the daemon's, even called from inside a handler; the function's
    # records are not written twice.
    assert [(line["logger"], line["msg"]) for line in daemon_lines(daemon_log)] == [
        ("poller.engine", "the daemon's own, from inside")
    ]


async def test_a_logged_exception_is_one_line_with_its_traceback(
    capsys: pytest.CaptureFixture[str], daemon_log: io.StringIO
) -> None:
    await target("logs_an_exception").invoke(request("req-x"))
    (line,) = output_lines(capsys.readouterr().out)
    assert line["level"] == "ERROR"
    assert line["output"].startswith("could not process\nthe order\nTraceback (most recent")
    assert line["output"].endswith("ValueError: bad order")
    assert daemon_log.getvalue() == ""


async def test_a_function_may_lower_its_own_loggers_level(
    capsys: pytest.CaptureFixture[str], daemon_log: io.StringIO
) -> None:
    await target("logs_at_debug_when_asked").invoke(request("req-d"))
    (line,) = output_lines(capsys.readouterr().out)
    assert (line["level"], line["output"]) == ("DEBUG", "debug from a logger set to DEBUG")


async def test_records_from_outside_an_invocation_are_not_attributed(
    capsys: pytest.CaptureFixture[str], daemon_log: io.StringIO
) -> None:
    logging.getLogger("somelib").info("a library's info, outside any invocation")
    logging.getLogger("somelib").warning("a library's warning, outside any invocation")
    await target("logs_from_a_plain_thread").invoke(request("req-t"))
    assert output_lines(capsys.readouterr().out) == []
    # Other libraries' warnings are the daemon's lines, as before; their INFO is not shown.
    assert [(line["logger"], line["msg"]) for line in daemon_lines(daemon_log)] == [
        ("somelib", "a library's warning, outside any invocation"),
        ("orders.background", "background warning"),
    ]


async def test_concurrent_invocations_keep_their_own_records_and_stderr(
    capsys: pytest.CaptureFixture[str], daemon_log: io.StringIO
) -> None:
    sync, asynchronous = target("logs_a_lot"), target("async_logs_a_lot")
    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(sync.invoke, request(f"s{n}"))
            tg.start_soon(asynchronous.invoke, request(f"a{n}"))
    lines = output_lines(capsys.readouterr().out)
    assert len(lines) == 6 * 60
    for line in lines:
        assert line["output"].split()[0] == line["request_id"]
    assert daemon_log.getvalue() == ""
