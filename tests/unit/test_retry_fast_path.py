"""A call that succeeds at once costs no retry machinery; one that does not retries as before."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from poller import retry
from poller.retry import Curve, retry_result

QUICK = Curve(base=0.001, cap=0.001, jitter=0.0)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every tenacity retry object retry_result builds."""
    made: list[Any] = []
    original = retry.AsyncRetrying

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(retry, "AsyncRetrying", counting)
    return made


async def test_a_first_success_builds_no_retry_object(built: list[Any]) -> None:
    calls: list[int] = []

    async def call() -> int:
        calls.append(1)
        return len(calls)

    assert await retry_result(call, again=lambda n: False, curve=QUICK, stopping=None) == 1
    assert calls == [1] and built == []


async def test_a_failed_first_attempt_is_retried_and_counted(built: list[Any]) -> None:
    calls: list[int] = []
    announced: list[tuple[int, int]] = []

    async def call() -> int:
        calls.append(1)
        return len(calls)

    result = await retry_result(
        call,
        again=lambda n: n < 3,
        curve=QUICK,
        stopping=anyio.Event(),
        before_sleep=lambda result, attempt, delay: announced.append((result, attempt)),
    )
    assert result == 3 and len(calls) == 3 and len(built) == 1
    assert announced == [(1, 1), (2, 2)]


async def test_max_attempts_counts_the_first_attempt(built: list[Any]) -> None:
    calls: list[int] = []

    async def call() -> int:
        calls.append(1)
        return len(calls)

    result = await retry_result(
        call, again=lambda n: True, curve=QUICK, stopping=None, max_attempts=2
    )
    assert result == 2 and len(calls) == 2
