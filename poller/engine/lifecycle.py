"""Shutdown as the mappings see it: one flag to stop intake, one deadline to finish by."""

from __future__ import annotations

import math

import anyio


class Shutdown:
    """Set once by the app on the first SIGTERM/SIGINT; read by every mapping."""

    def __init__(self) -> None:
        self.stopping = anyio.Event()
        self.deadline = math.inf

    def begin(self, drain_timeout: float) -> None:
        if not self.stopping.is_set():
            self.deadline = anyio.current_time() + drain_timeout
            self.stopping.set()

    @property
    def is_stopping(self) -> bool:
        return self.stopping.is_set()


class Gate:
    """Open while a mapping's target takes work; closed while a batch is held by a throttle."""

    def __init__(self) -> None:
        self._open = anyio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        if self._open.is_set():
            self._open = anyio.Event()

    async def wait_open(self) -> None:
        await self._open.wait()
