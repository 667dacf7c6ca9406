"""Run a `poller` command in-process (in a worker thread, as the console script would run it)
and capture what it prints."""

from __future__ import annotations

from typing import Any, NamedTuple

import anyio.to_thread

from poller import cli


class Ran(NamedTuple):
    code: int
    out: str
    err: str


async def poller(capsys: Any, *argv: str) -> Ran:
    """`poller ARGV...`: its exit code, stdout and stderr (a SystemExit counts as its code)."""
    capsys.readouterr()

    def call() -> int:
        try:
            return cli.main(list(argv))
        except SystemExit as exc:
            return int(exc.code or 0)

    code = await anyio.to_thread.run_sync(call)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)
