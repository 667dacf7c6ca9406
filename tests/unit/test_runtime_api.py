"""The embedded Runtime API: routes, headers, state checks and error shapes, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from poller.targets.runtime.api import (
    MAX_RESPONSE_BYTES,
    AnswerKind,
    Channel,
    Invocation,
    RuntimeApi,
    Startup,
)
from tests.support.wait import eventually

ARN = "arn:aws:lambda:us-east-1:123456789012:function:orders"
TRACE = "Root=1-5f3a8b2c-0123456789abcdef01234567;Parent=89abcdef01234567;Sampled=1"


@pytest.fixture
async def api() -> AsyncIterator[RuntimeApi]:
    server = RuntimeApi()
    yield server
    await server.aclose()


@pytest.fixture
async def channel(api: RuntimeApi) -> Channel:
    return await api.open_channel()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(channel: Channel, path: str) -> str:
    return f"http://{channel.address}/2018-06-01{path}"


def invocation(request_id: str = "req-1", timeout: float = 3.0) -> Invocation:
    return Invocation(request_id, b'{"Records": []}', TRACE, ARN, timeout)


async def call(
    http: aiohttp.ClientSession, method: str, target: str, body: bytes = b"", **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with http.request(method, target, data=body, headers=headers) as response:
        raw = await response.read()
        return response.status, dict(response.headers), json.loads(raw) if raw else None


async def next_invocation(
    http: aiohttp.ClientSession, channel: Channel
) -> tuple[int, dict[str, str], bytes]:
    async with http.get(url(channel, "/runtime/invocation/next")) as response:
        return response.status, dict(response.headers), await response.read()


async def test_next_hands_over_the_invocation_with_lambdas_headers(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    channel.assign(invocation())
    before = time.time()
    status, headers, body = await next_invocation(http, channel)
    assert status == 200
    assert body == b'{"Records": []}'
    assert headers["Lambda-Runtime-Aws-Request-Id"] == "req-1"
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
    assert headers["Lambda-Runtime-Trace-Id"] == TRACE
    assert headers["Content-Type"] == "application/json"
    deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])
    # The cold runtime's clock starts when it asks: init time is not the function's.
    assert before * 1000 + 2900 <= deadline_ms <= time.time() * 1000 + 3000
    assert channel.ready and channel.startup.result() is Startup.READY


async def test_next_blocks_until_an_invocation_is_assigned(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    waiting = asyncio.ensure_future(next_invocation(http, channel))
    await eventually(lambda: channel.waiting, timeout=5)  # the request reached the API
    assert not waiting.done()
    channel.assign(invocation("late"))
    status, headers, _ = await asyncio.wait_for(waiting, 5)
    assert status == 200 and headers["Lambda-Runtime-Aws-Request-Id"] == "late"


async def test_response_is_accepted_and_settles_the_invocation(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    status, _, body = await call(
        http, "POST", url(channel, "/runtime/invocation/req-1/response"), b'{"ok": 1}'
    )
    assert (status, body) == (202, {"status": "OK"})
    answer = current.answer.result()
    assert answer.kind is AnswerKind.RESPONSE and answer.body == b'{"ok": 1}'
    assert channel.current is None


async def test_error_passes_the_runtimes_error_object_through(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    error = {"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}
    status, _, body = await call(
        http,
        "POST",
        url(channel, "/runtime/invocation/req-1/error"),
        json.dumps(error).encode(),
        **{"Lambda-Runtime-Function-Error-Type": "Unhandled"},
    )
    assert (status, body) == (202, {"status": "OK"})
    answer = current.answer.result()
    assert answer.kind is AnswerKind.ERROR
    assert json.loads(answer.body) == error
    assert answer.error_type == "ValueError"


@pytest.mark.parametrize(
    ("body", "header", "message", "error_type"),
    [
        (b"not json at all", "HandlerError", "not json at all", "HandlerError"),
        (b"", "", "", "Unhandled"),
        (b"[1, 2]", "", "[1, 2]", "Unhandled"),
        (b"\xff\xfe", "X", "\ufffd\ufffd", "X"),
    ],
)
async def test_a_malformed_error_body_becomes_a_lambda_error_object(
    channel: Channel,
    http: aiohttp.ClientSession,
    body: bytes,
    header: str,
    message: str,
    error_type: str,
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    headers = {"Lambda-Runtime-Function-Error-Type": header} if header else {}
    status, _, _ = await call(
        http, "POST", url(channel, "/runtime/invocation/req-1/error"), body, **headers
    )
    assert status == 202
    expected = {"errorMessage": message, "errorType": error_type}
    assert json.loads(current.answer.result().body) == expected


@pytest.mark.parametrize("kind", ["response", "error"])
async def test_unknown_or_stale_request_ids_are_rejected(
    channel: Channel, http: aiohttp.ClientSession, kind: str
) -> None:
    # No invocation at all.
    status, _, body = await call(http, "POST", url(channel, f"/runtime/invocation/nope/{kind}"))
    assert status == 400
    assert body == {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}
    channel.assign(invocation())
    await next_invocation(http, channel)
    status, _, body = await call(http, "POST", url(channel, f"/runtime/invocation/other/{kind}"))
    assert status == 400 and body["errorType"] == "InvalidRequestID"
    # Answered once; a second answer is stale.
    status, _, _ = await call(http, "POST", url(channel, f"/runtime/invocation/req-1/{kind}"))
    assert status == 202
    status, _, body = await call(http, "POST", url(channel, f"/runtime/invocation/req-1/{kind}"))
    assert status == 400 and body["errorType"] == "InvalidRequestID"


async def test_next_before_answering_is_an_invalid_state_transition(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    channel.assign(invocation())
    await next_invocation(http, channel)
    status, _, body = await call(http, "GET", url(channel, "/runtime/invocation/next"))
    assert status == 403
    assert body["errorType"] == "InvalidStateTransition" and body["errorMessage"]


async def test_init_error_is_accepted_once_and_only_during_init(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    error = {
        "errorMessage": "Unable to import module 'x'",
        "errorType": "Runtime.ImportModuleError",
    }
    status, _, body = await call(
        http,
        "POST",
        url(channel, "/runtime/init/error"),
        json.dumps(error).encode(),
        **{"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    assert (status, body) == (202, {"status": "OK"})
    assert channel.startup.result() is Startup.INIT_ERROR
    assert channel.init_error is not None
    assert json.loads(channel.init_error.body) == error
    assert channel.init_error.error_type == "Runtime.ImportModuleError"
    status, _, body = await call(http, "POST", url(channel, "/runtime/init/error"), b"{}")
    assert status == 403 and body["errorType"] == "InvalidStateTransition"


async def test_init_error_after_init_is_rejected(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    channel.assign(invocation())
    await next_invocation(http, channel)
    status, _, body = await call(http, "POST", url(channel, "/runtime/init/error"), b"{}")
    assert status == 403 and body["errorType"] == "InvalidStateTransition"


async def test_init_error_without_a_json_body_gets_a_runtime_type(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await call(http, "POST", url(channel, "/runtime/init/error"), b"oops")
    assert status == 202
    assert channel.init_error is not None
    assert json.loads(channel.init_error.body) == {
        "errorMessage": "oops",
        "errorType": "Runtime.Unknown",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "error_type"),
    [
        ("GET", "/runtime/invocation/req-1/response", 405, "MethodNotAllowed"),
        ("POST", "/runtime/invocation/next", 405, "MethodNotAllowed"),
        ("GET", "/runtime/nothing-here", 404, "NotFound"),
        ("POST", "/runtime/restore/next", 404, "NotFound"),
    ],
)
async def test_unknown_paths_and_methods_get_the_apis_error_shape(
    channel: Channel,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    status: int,
    error_type: str,
) -> None:
    got, headers, body = await call(http, method, url(channel, path))
    assert got == status
    assert headers["Content-Type"].startswith("application/json")
    assert body["errorType"] == error_type and isinstance(body["errorMessage"], str)


async def test_a_path_outside_the_api_version_is_not_found(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    status, _, body = await call(http, "GET", f"http://{channel.address}/runtime/invocation/next")
    assert status == 404 and body["errorType"] == "NotFound"


async def test_an_oversized_response_is_413_and_a_function_error(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    big = b"x" * (MAX_RESPONSE_BYTES + 1)
    status, _, body = await call(
        http, "POST", url(channel, "/runtime/invocation/req-1/response"), big
    )
    assert status == 413 and body["errorType"] == "RequestEntityTooLarge"
    answer = current.answer.result()
    assert answer.kind is AnswerKind.ERROR
    assert answer.error_type == "Function.ResponseSizeTooLarge"
    assert json.loads(answer.body)["errorType"] == "Function.ResponseSizeTooLarge"


async def test_a_response_of_exactly_the_limit_is_accepted(
    channel: Channel, http: aiohttp.ClientSession
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    body = b"x" * MAX_RESPONSE_BYTES
    status, _, _ = await call(
        http, "POST", url(channel, "/runtime/invocation/req-1/response"), body
    )
    assert status == 202 and current.answer.result().body == body


async def test_each_environment_has_its_own_port_and_invocation(
    api: RuntimeApi, http: aiohttp.ClientSession
) -> None:
    first, second = await api.open_channel(), await api.open_channel()
    assert first.port != second.port
    first.assign(invocation("for-first"))
    second.assign(invocation("for-second"))
    _, headers_2, _ = await next_invocation(http, second)
    _, headers_1, _ = await next_invocation(http, first)
    assert headers_1["Lambda-Runtime-Aws-Request-Id"] == "for-first"
    assert headers_2["Lambda-Runtime-Aws-Request-Id"] == "for-second"
    # An answer on the wrong environment's port is an unknown request id there.
    status, _, _ = await call(http, "POST", url(first, "/runtime/invocation/for-second/response"))
    assert status == 400


async def test_closing_a_channel_fails_what_waits_on_it(
    api: RuntimeApi, channel: Channel, http: aiohttp.ClientSession
) -> None:
    current = invocation()
    channel.assign(current)
    await next_invocation(http, channel)
    other = await api.open_channel()
    waiting = asyncio.ensure_future(next_invocation(http, other))
    await eventually(lambda: other.waiting, timeout=5)
    channel.close("signal: killed")
    answer = current.answer.result()
    assert answer.kind is AnswerKind.EXIT and answer.error_type == "signal: killed"
    other.close("exit status 1")
    status, _, body = await asyncio.wait_for(waiting, 5)
    assert status == 403 and b"InvalidStateTransition" in body
    assert other.startup.result() is Startup.READY  # it had asked, so init was complete


async def test_an_exit_during_init_ends_startup(channel: Channel) -> None:
    channel.close("exit status 1")
    assert await channel.wait_startup(1) is Startup.EXITED


async def test_wait_startup_gives_up_after_its_time(channel: Channel) -> None:
    started = time.monotonic()
    assert await channel.wait_startup(0.1) is None
    assert time.monotonic() - started < 1


async def test_stopping_the_server_does_not_wait_for_blocked_runtimes(
    http: aiohttp.ClientSession,
) -> None:
    api = RuntimeApi()
    channel = await api.open_channel()
    waiting = asyncio.ensure_future(next_invocation(http, channel))
    await eventually(lambda: channel.waiting, timeout=5)  # blocked in the server
    started = time.monotonic()
    await api.aclose()
    assert time.monotonic() - started < 1.5
    result = await asyncio.gather(waiting, return_exceptions=True)
    assert result  # answered 403 or disconnected; either way it did not hang
