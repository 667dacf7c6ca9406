"""The chaos suite's TCP fault proxy: each mode does to a client what it claims to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.chaos.proxy import FaultProxy, Mode

ANSWER = b"A" * 4096


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The upstream: reads one line, answers 4 KiB and closes."""
    await reader.readline()
    writer.write(ANSWER)
    await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    upstream = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    async with upstream, FaultProxy("127.0.0.1", port, reset_after=100) as fault:
        yield fault


async def _ask(proxy: FaultProxy) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"hello\n")
        await writer.drain()
        return await reader.read(-1)
    finally:
        writer.close()


async def test_pass_forwards_the_whole_answer(proxy: FaultProxy) -> None:
    assert await _ask(proxy) == ANSWER


async def test_refuse_stops_listening_and_pass_listens_again(proxy: FaultProxy) -> None:
    await proxy.set(Mode.REFUSE)
    with pytest.raises(ConnectionRefusedError):
        await _ask(proxy)
    await proxy.set(Mode.PASS)
    assert await _ask(proxy) == ANSWER


async def test_blackhole_accepts_and_never_answers(proxy: FaultProxy) -> None:
    await proxy.set(Mode.BLACKHOLE)
    # A bounded wait for an absence: the connection is accepted and stays silent.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_ask(proxy), timeout=0.5)
    assert proxy.connections == 1
    await proxy.set(Mode.PASS)
    assert await _ask(proxy) == ANSWER


async def _cut_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send the request line; what arrived before the connection was reset (which it must)."""
    writer.write(b"hello\n")
    received = b""
    with pytest.raises(ConnectionResetError):
        while chunk := await reader.read(65536):
            received += chunk
    writer.close()
    return received


async def test_reset_sends_part_of_the_answer_then_an_rst(proxy: FaultProxy) -> None:
    await proxy.set(Mode.RESET)
    received = await _cut_answer(*await asyncio.open_connection("127.0.0.1", proxy.port))
    assert 0 < len(received) <= 100
    assert received == ANSWER[: len(received)]


async def test_reset_cuts_the_answer_of_a_connection_opened_before(proxy: FaultProxy) -> None:
    connection = await asyncio.open_connection("127.0.0.1", proxy.port)
    await proxy.set(Mode.RESET)
    received = await _cut_answer(*connection)
    assert 0 < len(received) <= 100
