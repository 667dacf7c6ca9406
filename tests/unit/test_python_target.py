"""The `python` target: calling conventions, Lambda-shaped errors, timeouts, context, output."""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import sys
import textwrap
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from poller.aws.clients import AwsClients
from poller.config.settings import AwsSettings, PythonTargetSettings, RuntimeTargetSettings
from poller.targets import (
    InvocationRequest,
    Outcome,
    PythonTarget,
    TargetLoadError,
    build_target,
)
from poller.targets.python import load_handler
from poller.targets.runtime.target import RuntimeTarget
from tests.support.output import output_lines
from tests.support.queues import ACCOUNT, REGION

EVENT = {"Records": [{"messageId": "m1", "body": "hello"}]}

# --- handlers, imported back through their "module:function" spec -------------------------


def echo(event: Any, context: Any) -> Any:
    return {"records": len(event["Records"]), "thread": threading.current_thread().name}


async def async_echo(event: Any, context: Any) -> Any:
    await asyncio.sleep(0)
    return {"records": len(event["Records"]), "async": True}


def fails(event: Any, context: Any) -> Any:
    raise ValueError("bad record m1")


async def async_fails(event: Any, context: Any) -> Any:
    raise KeyError("missing")


def returns_set(event: Any, context: Any) -> Any:
    return {1, 2}


def returns_none(event: Any, context: Any) -> None:
    return None


def returns_decimal(event: Any, context: Any) -> Any:
    return {"n": decimal.Decimal("3"), "x": decimal.Decimal("1.5")}


def returns_bytes(event: Any, context: Any) -> bytes:
    return b"raw"


def exits(event: Any, context: Any) -> None:
    sys.exit(3)


def mutates(event: Any, context: Any) -> Any:
    seen = list(event["Records"])
    event["Records"].clear()
    return len(seen)


def slow(event: Any, context: Any) -> None:
    time.sleep(1.0)


async def async_slow(event: Any, context: Any) -> None:
    await asyncio.sleep(5)


def context_fields(event: Any, context: Any) -> Any:
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "identity_id": context.identity.cognito_identity_id,
        "client_context": context.client_context,
        "trace_id": context.trace_id,
        "env_trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }


def prints(event: Any, context: Any) -> str:
    print("first line")
    print("two\nlines", end="")
    return "ok"


async def async_prints(event: Any, context: Any) -> str:
    print(f"hello from {context.aws_request_id}")
    await asyncio.sleep(0.01)
    print("partial", end="")
    return "ok"


def prints_a_lot(event: Any, context: Any) -> None:
    for i in range(50):
        print(f"{context.aws_request_id} {i}")
        time.sleep(0.0005)


class AsyncCallable:
    async def __call__(self, event: Any, context: Any) -> str:
        return "called"


async_instance = AsyncCallable()
partial_of_async = partial(async_echo)
NOT_CALLABLE = 42


def target(handler: str, *, timeout: float = 5.0, name: str = "orders") -> PythonTarget:
    settings = PythonTargetSettings(
        type="python", handler=f"{__name__}:{handler}", timeout_seconds=timeout
    )
    return PythonTarget(settings, mapping_name=name, region=REGION, account=ACCOUNT)


def request(request_id: str = "req-1", event: Any = EVENT) -> InvocationRequest:
    return InvocationRequest(json.dumps(event).encode(), request_id, "Root=1-abc")


# --- calling conventions ----------------------------------------------------------------------


async def test_sync_handler_runs_in_a_worker_thread() -> None:
    result = await target("echo").invoke(request())
    assert result.outcome is Outcome.SUCCESS
    body = json.loads(result.payload or b"")
    assert body["records"] == 1
    assert body["thread"] != threading.main_thread().name


@pytest.mark.parametrize("handler", ["async_echo", "partial_of_async"])
async def test_async_handler_is_awaited(handler: str) -> None:
    result = await target(handler).invoke(request())
    assert result.outcome is Outcome.SUCCESS
    assert json.loads(result.payload or b"") == {"records": 1, "async": True}


async def test_instance_with_async_call_is_awaited() -> None:
    result = await target("async_instance").invoke(request())
    assert (result.outcome, result.payload) == (Outcome.SUCCESS, b'"called"')


async def test_each_call_gets_a_fresh_event() -> None:
    handler = target("mutates")
    first = await handler.invoke(request())
    second = await handler.invoke(request())
    assert first.payload == second.payload == b"1"


@pytest.mark.parametrize(
    ("handler", "payload"),
    [("returns_none", b"null"), ("returns_bytes", b"raw")],
)
async def test_return_value_encoding(handler: str, payload: bytes) -> None:
    result = await target(handler).invoke(request())
    assert (result.outcome, result.payload) == (Outcome.SUCCESS, payload)


async def test_decimals_are_json_numbers() -> None:
    result = await target("returns_decimal").invoke(request())
    assert json.loads(result.payload or b"") == {"n": 3, "x": 1.5}


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [("fails", "ValueError", "bad record m1"), ("async_fails", "KeyError", "'missing'")],
)
async def test_exception_is_a_function_error_shaped_like_lambdas(
    handler: str, error_type: str, message: str
) -> None:
    result = await target(handler).invoke(request("req-9"))
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    error = json.loads(result.payload or b"")
    assert set(error) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert (error["errorType"], error["errorMessage"]) == (error_type, message)
    assert error["requestId"] == "req-9"
    # The trace starts at the handler, as awslambdaric strips its bootstrap frames.
    assert len(error["stackTrace"]) == 1
    assert f", in {handler}\n" in error["stackTrace"][0]
    assert "test_python_target.py" in error["stackTrace"][0]


async def test_unserializable_return_is_a_marshal_error() -> None:
    result = await target("returns_set").invoke(request())
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = json.loads(result.payload or b"")
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response: Object of type set")
    assert error["stackTrace"] == []


async def test_sys_exit_is_a_function_error_not_a_daemon_exit() -> None:
    result = await target("exits").invoke(request())
    assert result.outcome is Outcome.FUNCTION_ERROR
    error = json.loads(result.payload or b"")
    assert error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in error["errorMessage"]


async def test_wrong_signature_is_a_function_error() -> None:
    settings = PythonTargetSettings(type="python", handler="json:dumps", timeout_seconds=5)
    result = await PythonTarget(settings, mapping_name="m", region=REGION, account=ACCOUNT).invoke(
        request()
    )
    assert result.outcome is Outcome.FUNCTION_ERROR
    assert json.loads(result.payload or b"")["errorType"] == "TypeError"


# --- timeouts and cancellation --------------------------------------------------------------


@pytest.mark.parametrize("handler", ["slow", "async_slow"])
async def test_outliving_the_timeout_is_a_timeout(handler: str) -> None:
    started = time.monotonic()
    result = await target(handler, timeout=0.1).invoke(request("req-t"))
    assert time.monotonic() - started < 0.8
    assert result.outcome is Outcome.TIMEOUT
    assert result.function_error == "Unhandled"
    error = json.loads(result.payload or b"")
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"] == "RequestId: req-t Error: Task timed out after 0.10 seconds"


async def test_outer_cancellation_propagates() -> None:
    handler = target("async_slow", timeout=5)
    finished = False
    with anyio.move_on_after(0.05) as scope:
        await handler.invoke(request())
        finished = True
    assert scope.cancelled_caught
    assert not finished


# --- context ------------------------------------------------------------------------------------


async def test_context_carries_lambdas_fields() -> None:
    result = await target("context_fields", timeout=3, name="orders").invoke(request("req-7"))
    ctx = json.loads(result.payload or b"")
    assert ctx["function_name"] == "orders"
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders"
    assert ctx["memory_limit_in_mb"] == "128"  # a string, as in Lambda
    assert ctx["aws_request_id"] == "req-7"
    assert ctx["log_group_name"] == "/aws/lambda/orders"
    assert "/[$LATEST]" in ctx["log_stream_name"]
    assert 2000 < ctx["remaining"] <= 3000
    assert ctx["identity_id"] is None
    assert ctx["client_context"] is None
    # The trace header reaches the handler on its context, never through poller's environment.
    assert ctx["trace_id"] == "Root=1-abc"
    assert ctx["env_trace"] is None


async def test_target_identity() -> None:
    handler = target("echo", name="refunds")
    assert handler.function_arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:refunds"
    assert handler.description == f"python:{__name__}:echo"
    await handler.aclose()


# --- function output (SPEC §7) ------------------------------------------------------------------


async def test_printed_lines_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    print("before, from the daemon")
    await target("prints", name="orders").invoke(request("req-p"))
    print("after, from the daemon")
    out = capsys.readouterr().out
    lines = output_lines(out)
    assert [line["output"] for line in lines] == ["first line", "two", "lines"]
    for line in lines:
        assert set(line) == {"ts", "level", "function", "request_id", "output"}
        assert (line["level"], line["function"], line["request_id"]) == ("INFO", "orders", "req-p")
        assert line["ts"].endswith("Z")
    # Writes outside a handler pass through untouched.
    assert out.startswith("before, from the daemon\n")
    assert out.endswith("after, from the daemon\n")


@pytest.mark.parametrize(
    ("handler", "error_type", "message"),
    [
        ("fails", "ValueError", "bad record m1"),
        ("async_fails", "KeyError", "'missing'"),
        ("exits", "Runtime.ExitError", "RequestId: req-e Error: Runtime exited with error"),
    ],
)
async def test_a_raised_error_is_logged_at_error_as_lambda_logs_it(
    capsys: pytest.CaptureFixture[str], handler: str, error_type: str, message: str
) -> None:
    result = await target(handler, name="orders").invoke(request("req-e"))
    assert result.outcome is Outcome.FUNCTION_ERROR
    (line,) = [line for line in output_lines(capsys.readouterr().out) if "errorType" in line]
    assert set(line) == {
        "ts",
        "level",
        "function",
        "request_id",
        "errorType",
        "errorMessage",
        "stackTrace",
    }
    assert (line["level"], line["function"], line["request_id"]) == ("ERROR", "orders", "req-e")
    assert line["errorType"] == error_type
    assert line["errorMessage"].startswith(message)
    # The same stack the error object carries: from the handler down, none of poller's frames.
    assert line["stackTrace"] == json.loads(result.payload or b"")["stackTrace"]
    if error_type != "Runtime.ExitError":
        assert f", in {handler}\n" in line["stackTrace"][0]


async def test_async_handler_output_is_captured(capsys: pytest.CaptureFixture[str]) -> None:
    await target("async_prints").invoke(request("req-a"))
    lines = output_lines(capsys.readouterr().out)
    assert [line["output"] for line in lines] == ["hello from req-a", "partial"]


async def test_concurrent_handlers_keep_their_own_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = target("prints_a_lot")
    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(handler.invoke, request(f"r{n}"))
    lines = output_lines(capsys.readouterr().out)
    assert len(lines) == 200
    for line in lines:
        assert line["output"].split()[0] == line["request_id"]


# --- loading ------------------------------------------------------------------------------------


def load(handler: str) -> PythonTarget:
    settings = PythonTargetSettings(type="python", handler=handler)
    return PythonTarget(settings, mapping_name="m", region=REGION, account=ACCOUNT)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("no_such_module_zz:handle", "module 'no_such_module_zz' not found"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "is a int, not a function"),
    ],
)
def test_load_errors_say_what_to_do(handler: str, expected: str) -> None:
    with pytest.raises(TargetLoadError) as info:
        load(handler)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_spec() -> None:
    # The config loader rejects this form first; the loader still explains it if called directly.
    with pytest.raises(TargetLoadError, match=r"not of the form module\.path:function"):
        load_handler("app.handle")


def test_module_failing_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zz_broken_handler.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "zz_needs_dep.py").write_text(
        textwrap.dedent(
            """
            import zz_not_installed_dep

            def handle(event, context):
                return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TargetLoadError, match="raised RuntimeError: no config; fix the module"):
        load("zz_broken_handler:handle")
    with pytest.raises(TargetLoadError, match=r"'zz_not_installed_dep'.*is not installed"):
        load("zz_needs_dep:handle")


async def test_build_target_python_and_runtime() -> None:
    async with AwsClients(AwsSettings()) as clients:
        built = build_target(
            PythonTargetSettings(type="python", handler=f"{__name__}:echo"),
            mapping_name="orders",
            clients=clients,
            region=REGION,
            account=ACCOUNT,
        )
        assert isinstance(built, PythonTarget)
        runtime = build_target(
            RuntimeTargetSettings(type="runtime", code=".", handler="app.handler"),
            mapping_name="orders",
            clients=clients,
            region=REGION,
            account=ACCOUNT,
        )
        assert isinstance(runtime, RuntimeTarget)
        async with runtime:  # built, it starts nothing until entered and invoked
            pass
