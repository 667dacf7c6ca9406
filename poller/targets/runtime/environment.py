"""One execution environment of a `runtime` target: a runtime process in its own process group,
with its own temporary directory, a memory limit, and its output turned into log lines.

The process is the only thing poller can kill to end an invocation, as Lambda ends a sandbox, so
it leads a process group of its own (`start_new_session`): a `bootstrap` script's children die
with it. Its stdout and stderr are read line by line and handed to a sink, tagged with the
request being served, so nothing a function prints reaches poller's own log lines unwrapped.

Those readers and the process watcher are tasks of the owning target's task group (`start`
takes it): they outlive the invocation that started the environment, and the target ends them
when it retires the environment or itself.
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

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

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

# How long `aclose` waits for the output readers to reach EOF before cancelling them.
READER_GRACE = 2.0

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
        # Scope of the readers and the watcher: cancelled when a reader outstays READER_GRACE.
        self._scope = anyio.CancelScope()
        self._served = anyio.Event()  # the readers and the watcher have all returned
        self._exited = anyio.Event()
        self._exit_status: str | None = None

    @property
    def pid(self) -> int | None:
        """The runtime process's id (also its process group's), once started."""
        return self._process.pid if self._process is not None else None

    @property
    def exit_status(self) -> str | None:
        """How the process ended (`exit status 1`, `signal: killed`); None while it runs."""
        return self._exit_status

    async def wait_exited(self, within: float) -> bool:
        """Wait up to `within` seconds for the process to end; True if it has."""
        with anyio.move_on_after(within):
            await self._exited.wait()
        return self._exited.is_set()

    async def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        memory_mb: int,
        task_group: TaskGroup,
    ) -> None:
        """Spawn the runtime, its readers and watcher in `task_group`; OSError if it cannot run.

        Between the spawn and `start_soon` there is no await: no cancellation can leave a
        process running that no task watches.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        limit = (memory_mb + MEMORY_ALLOWANCE_MB) * 1024 * 1024
        # anyio.open_process has no preexec_fn, which the memory limit needs.
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
        try:
            task_group.start_soon(self._serve, self._process)
        except BaseException:  # the group has ended: no process may run that nobody watches
            self._signal_group(signal.SIGKILL)
            self._served.set()  # nothing to wait for in aclose
            raise

    async def _serve(self, process: asyncio.subprocess.Process) -> None:
        """Read stdout and stderr and watch for the exit, until all three end or are cancelled."""
        assert process.stdout is not None and process.stderr is not None
        try:
            with self._scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._pump, process.stdout)
                    tasks.start_soon(self._pump, process.stderr)
                    tasks.start_soon(self._watch, process)
        except Exception:
            # Raised on, it would cancel the target's task group and whatever runs inside it.
            _log.exception("execution environment %d: its readers failed", self.number)
        finally:
            self._served.set()

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        try:
            while chunk := await stream.read(1 << 16):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                while len(pending) > MAX_LINE_BYTES:
                    lines.append(pending[:MAX_LINE_BYTES])
                    pending = pending[MAX_LINE_BYTES:]
                for line in lines:
                    self._emit(line)
        except Exception:  # a broken pipe must not stop the other reader and the watcher
            _log.exception("could not read a function's output")
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
        self._exit_status = status
        self._exited.set()

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group now (timeouts, broken runtimes); the watcher reaps."""
        # Once the watcher has seen the exit (and killed the group), the id may be reused.
        if not self._exited.is_set():
            self._signal_group(signal.SIGKILL)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL what is left after `grace` seconds, and wait for the end."""
        if self._process is None or self._exited.is_set():
            return
        self._signal_group(signal.SIGTERM)
        if not await self.wait_exited(grace):
            self.kill()
            await self.wait_exited(grace)

    async def aclose(self) -> None:
        """Kill if still running, wait for the readers to drain, remove the temporary directory."""
        if self._process is not None:
            self.kill()
            # Readers end at EOF, which the group's death brings; a child that escaped the group
            # and holds a pipe must not hold up shutdown.
            with anyio.move_on_after(READER_GRACE):
                await self._served.wait()
            self._scope.cancel()
            await self._served.wait()
        await anyio.to_thread.run_sync(shutil.rmtree, self.tmp_dir, True)
