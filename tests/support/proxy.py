"""A TCP proxy on 127.0.0.1 that a test can cut and restore, to play a network outage."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from tests.support.ports import free_port


class Proxy:
    """Forwards 127.0.0.1:<port> to an upstream; `cut()` drops every connection and refuses
    new ones until `restore()`, which listens again on the same port; `blackhole()` keeps every
    connection open and accepts new ones, but forwards nothing either way until `restore()`
    (an endpoint that takes requests and never answers)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._holding = False
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Proxy:
        await self.restore()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cut()

    async def restore(self) -> None:
        self._holding = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    def blackhole(self) -> None:
        self._holding = True

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._holding:  # taken, never answered: read and drop until the client gives up
            self._writers.add(writer)
            with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
                while await reader.read(65536):
                    pass
            self._writers.discard(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
            while data := await reader.read(65536):
                if self._holding:
                    continue  # blackholed: what comes in goes nowhere
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
