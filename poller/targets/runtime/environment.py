"""One execution environment of a `runtime` target: a runtime process in its own process group,
with its own temporary directory, a memory limit, and its output turned into log lines.

The process is the only thing poller can kill to end an invocation, as Lambda ends a sandbox, so
it leads a process group of its own (`start_new_session`): a `bootstrap` script's children die
with it. Its stdout and stderr are read line by line and handed to a sink, tagged with the
request being served, so nothing a function prints reaches poller's own log lines unwrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from poller.targets.runtime.api import Channel

# RLIMIT_AS caps address space, not resident memory: an interpreter maps far more than it
# touches (shared libraries, 8 MB thread stacks, glibc's 64 MB malloc arena per thread), so the
# limit is memory_size plus this allowance. A bare awslambdaric process maps about 20 MB and one
# importing boto3 about 60 MB, which leaves room for a few threads; a function running many
# threads may need more memory_size (or MALLOC_ARENA_MAX in `environment`). An approximation of
# Lambda's cgroup limit, which counts resident memory.
MEMORY_ALLOWANCE_MB = 256

# Lambda cuts log lines at 256 KB; a longer line becomes several.
MAX_LINE_BYTES = 256 * 1024

OutputSink = Callable[[str | None, str], None]
"""Receives (request id or None during init, one line of output without its newline)."""

_log = logging.getLogger("poller.targets.runtime")


def exit_status(returncode: int) -> str:
    """A process's end in the words of Lambda's errors (Go's): `exit status 1`, `signal: killed`."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.strsignal(-returncode)
    except ValueError:
        name = None
    return f"signal: {(name or f'signal {-returncode}').lower()}"


class Environment:
    """A runtime process bound to one Runtime API channel; reused until it fails or times out."""

    def __init__(self, number: int, channel: Channel, tmp_dir: Path, sink: OutputSink) -> None:
        self.number = number
        self.channel = channel
        self.tmp_dir = tmp_dir
        self._sink = sink
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.exited: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        """The runtime process's id (also its process group's), once started."""
        return self._process.pid if self._process is not None else None

    async def start(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, memory_mb: int
    ) -> None:
        """Spawn the runtime; raises OSError when it cannot be executed at all."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        limit = (memory_mb + MEMORY_ALLOWANCE_MB) * 1024 * 1024
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            # Runs between fork and exec: a bound C function, no Python-level locks to deadlock.
            preexec_fn=partial(resource.setrlimit, resource.RLIMIT_AS, (limit, limit)),
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._tasks = [
            asyncio.ensure_future(self._pump(self._process.stdout)),
            asyncio.ensure_future(self._pump(self._process.stderr)),
            asyncio.ensure_future(self._watch(self._process)),
        ]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(1 << 16):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            while len(pending) > MAX_LINE_BYTES:
                lines.append(pending[:MAX_LINE_BYTES])
                pending = pending[MAX_LINE_BYTES:]
            for line in lines:
                self._emit(line)
        if pending:
            self._emit(pending)

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").removesuffix("\r")
        try:
            self._sink(self.channel.last_request_id, text)
        except Exception:  # a broken sink must not stop the pipe being drained
            _log.exception("could not pass on a function's output line")

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        returncode = await process.wait()
        # The sandbox goes with its runtime: whatever the runtime started goes too.
        self._signal_group(signal.SIGKILL)
        status = exit_status(returncode)
        self.channel.close(status)
        if not self.exited.done():
            self.exited.set_result(status)

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group now (timeouts, broken runtimes); the watcher reaps."""
        # Once the watcher has seen the exit (and killed the group), the id may be reused.
        if not self.exited.done():
            self._signal_group(signal.SIGKILL)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL what is left after `grace` seconds, and wait for the end."""
        if self._process is None or self.exited.done():
            return
        self._signal_group(signal.SIGTERM)
        done, _ = await asyncio.wait({self.exited}, timeout=grace)
        if not done:
            self.kill()
            await asyncio.wait({self.exited}, timeout=grace)

    async def aclose(self) -> None:
        """Kill if still running, wait for the readers to drain, remove the temporary directory."""
        if self._process is not None and not self.exited.done():
            self.kill()
        if self._tasks:
            # Readers end at EOF, which the group's death brings; a child that escaped the group
            # and holds a pipe must not hold up shutdown.
            _, late = await asyncio.wait(self._tasks, timeout=2.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        await asyncio.to_thread(shutil.rmtree, self.tmp_dir, True)
