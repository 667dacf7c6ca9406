"""A TCP fault proxy on 127.0.0.1, switched between modes while a scenario runs.

- `pass`: forward both ways.
- `refuse`: stop listening (a new connection is refused) and drop every open one.
- `blackhole`: accept and read, never answer, hold the connection open; open connections stop
  forwarding too. Leaving blackhole closes what it held, as a network path coming back after
  the peers gave up would.
- `reset`: forward the request, send part of the answer (at most `reset_after` bytes), then
  reset the connection (RST, not FIN), as a broken middlebox or a crashing server does; an
  answer still to come on an open connection is cut the same way.

moto answers `Connection: close`, so every AWS call opens a new connection and a mode applies
from the next call on; kept-alive connections (the target's) are handled as said above.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from enum import Enum
from types import TracebackType

from tests.support.ports import free_port


class Mode(Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    RESET = "reset"


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `upstream` in the mode `set(mode)` last chose."""

    def __init__(self, upstream_host: str, upstream_port: int, *, reset_after: int = 64) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._reset_after = reset_after
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._passing = asyncio.Event()
        self.mode = Mode.PASS
        self.connections = 0  # accepted, in every mode: a scenario can see it was reached
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        await self.set(Mode.PASS)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_listening()
        self._drop_all()

    async def set(self, mode: Mode) -> None:
        """Switch to `mode`; it applies to open connections as the module docstring says."""
        previous, self.mode = self.mode, mode
        if mode is Mode.REFUSE:
            await self._stop_listening()
            self._drop_all()
            return
        if previous is Mode.BLACKHOLE and mode is not Mode.BLACKHOLE:
            self._drop_all()
        if mode is Mode.PASS:
            self._passing.set()
        else:
            self._passing.clear()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode is Mode.BLACKHOLE:
                await _swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            except OSError:
                _reset(writer)
                return
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, answer=False),
                self._pipe(up_reader, writer, answer=True),
            )
            self._writers.discard(up_writer)
        finally:
            self._writers.discard(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answer: bool
    ) -> None:
        """Copy until EOF; hold while blackholed; in `reset`, cut an answer (the upstream's
        side) after at most `reset_after` bytes, open connections' answers included."""
        sent = 0
        with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
            while data := await reader.read(65536):
                if answer and self.mode is Mode.RESET:
                    part = data[: max(1, min(self._reset_after - sent, len(data) // 2))]
                    writer.write(part)
                    await writer.drain()
                    _reset(writer)
                    return
                if self.mode is Mode.BLACKHOLE:
                    await self._passing.wait()
                writer.write(data)
                await writer.drain()
                sent += len(data)
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


async def _swallow(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError, RuntimeError):
        while await reader.read(65536):
            pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets an RST rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError, RuntimeError):
        writer.transport.abort()
