"""Waiting in tests: a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio


async def eventually(
    condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Wait until `condition()` (sync or async) is truthy and return that value; fail with a
    clear message if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(interval)
