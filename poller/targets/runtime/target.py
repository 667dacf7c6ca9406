"""The `runtime` target: a Lambda deployment package run by poller behind an embedded Runtime API.

A pool of execution environments (`environment.Environment`), started lazily up to
`concurrency`, each one invocation at a time and reused warm, as Lambda reuses a sandbox. An
invocation takes a free environment, else starts one if the pool has room, else is throttled at
once like a Lambda 429, so the engine's hold-and-back-off applies unchanged. Outcomes follow
Lambda's: an answer from `/error` is a function error carrying the runtime's error object; a
timeout kills the environment; an init failure is a `Runtime.*` function error (`failures`), and
the pool then waits (1 s doubling to 30 s) before starting another environment.

Enter the target before its first invocation: its task group owns every environment's readers,
watcher and clean-up, and leaving it ends them all, with the environments and the API server.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from poller.config.settings import RuntimeTargetSettings
from poller.events.envelope import new_trace_header
from poller.retry import ENVIRONMENT_START, Backoff
from poller.targets.base import InvocationRequest, InvokeResult, Outcome
from poller.targets.output import install as install_output
from poller.targets.output import report_error
from poller.targets.runtime import failures
from poller.targets.runtime.api import AnswerKind, Invocation, RuntimeApi, Startup
from poller.targets.runtime.environment import Environment
from poller.targets.runtime.package import (
    FunctionIdentity,
    Package,
    check_bootstrap,
    check_source,
    find_bootstrap,
    lambda_environment,
    log_stream_name,
    prepare_package,
)

# How long an environment gets to exit on SIGTERM at shutdown before SIGKILL.
TERMINATE_GRACE = 2.0

_log = logging.getLogger("poller.targets.runtime")

OutputCallback = Callable[[str, str | None, str], None]
"""Receives (function name, request id or None, one line a function printed)."""


def _print_output(function: str, request_id: str | None, line: str) -> None:
    # The stdout proxy of the `python` target writes whole JSON lines under one lock.
    install_output().emit(function, request_id or "", line)


class RuntimeTarget:
    """Runs a deployment package in warm execution environments behind a Runtime API server."""

    def __init__(
        self,
        settings: RuntimeTargetSettings,
        *,
        mapping_name: str,
        region: str,
        account: str,
        default_concurrency: int,
        init_timeout: float,
        aws_region: str | None = None,
        endpoints: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        # Cheap checks only (paths exist, a bootstrap is there); unpacking waits for a first call.
        self._code = check_source(settings.code, "code")
        self._layers = [
            check_source(layer, "layer", ("layers", index))
            for index, layer in enumerate(settings.layers)
        ]
        if settings.runtime == "provided":
            check_bootstrap(self._code, self._layers)
        self._settings = settings
        self._name = mapping_name
        self._arn = f"arn:aws:lambda:{region}:{account}:function:{mapping_name}"
        self._identity = FunctionIdentity(mapping_name, aws_region or region, endpoints or {})
        self._concurrency = settings.concurrency or default_concurrency
        self._init_timeout = init_timeout
        self._environ = dict(os.environ if environ is None else environ)
        self._on_output = on_output or _print_output
        self._log = log or _log
        self._extra = {"mapping": mapping_name}
        self._api = RuntimeApi(self._log)
        self._root: Path | None = None
        self._package: Package | None = None
        self._package_lock = anyio.Lock()
        self._idle: list[Environment] = []
        self._all: set[Environment] = set()
        self._size = 0  # environments running or starting: the slots taken
        self._started = 0
        self._start_backoff = Backoff(ENVIRONMENT_START)
        self._next_start = 0.0
        # Retired environments whose clean-up has not finished, and the event that says it has.
        self._retiring: dict[Environment, anyio.Event] = {}
        self._task_group: TaskGroup | None = None  # set while entered
        self._closing = False

    @property
    def function_arn(self) -> str:
        """`arn:aws:lambda:{region}:{account}:function:{mapping name}`."""
        return self._arn

    @property
    def description(self) -> str:
        """`runtime:<code>`."""
        return f"runtime:{self._settings.code}"

    @property
    def concurrency(self) -> int:
        """The most execution environments this target runs at once."""
        return self._concurrency

    @property
    def environments_started(self) -> int:
        """How many execution environments were started so far (cold starts)."""
        return self._started

    # -- the task group: entered for the target's whole life ---------------------------------

    async def __aenter__(self) -> Self:
        """Open the task group that every environment's readers, watcher and clean-up join."""
        if self._task_group is not None or self._closing:
            raise RuntimeError("a RuntimeTarget can be entered only once, and not once closed")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """End every environment (SIGTERM, then SIGKILL), cancel what remains, close the group.

        Runs to the end even when the caller is being cancelled, as the environments are
        processes that would outlive poller otherwise.
        """
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError("RuntimeTarget.__aexit__ without __aenter__")
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            self._task_group = None
            # aclose waited for every environment's tasks; anything left is cancelled, not
            # awaited forever. The caller's exception is not handed to the group, which would
            # wrap it in an ExceptionGroup: it propagates from here as it is.
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)

    # -- invoke ------------------------------------------------------------------------------

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        """Run one invocation in a warm environment, a new one, or answer THROTTLED.

        Raises RuntimeError if the target was never entered (`async with target:`).
        """
        if self._task_group is None and not self._closing:
            raise RuntimeError(
                "RuntimeTarget used outside `async with`: its environments' tasks need the "
                "task group the target opens when entered"
            )
        while True:
            if self._closing:
                return InvokeResult(Outcome.INVOKE_ERROR, detail="runtime target is shutting down")
            env = await self._acquire()
            if isinstance(env, InvokeResult):
                return env
            keep = False
            try:
                result, keep = await self._run(env, request)
            finally:
                if keep and not self._closing:
                    self._idle.append(env)
                else:
                    self._retire(env)
            if result is not None:
                return result
            # The runtime died between invocations, before taking this one: use another.

    async def _acquire(self) -> Environment | InvokeResult:
        """A free warm environment, else a new one while below concurrency, else THROTTLED."""
        while self._idle:
            env = self._idle.pop()  # the most recently used: the warmest
            if not env.channel.closed:
                return env
            self._retire(env)  # it died while idle (a crash after answering)
        if self._size >= self._concurrency:
            return InvokeResult(
                Outcome.THROTTLED,
                status_code=429,
                detail=f"all {self._concurrency} execution environments are busy",
            )
        self._size += 1  # taken before any await, so concurrent callers see it
        try:
            started = await self._start()
        except BaseException:
            self._size -= 1
            raise
        if isinstance(started, InvokeResult):
            self._size -= 1
        return started

    async def _run(
        self, env: Environment, request: InvocationRequest
    ) -> tuple[InvokeResult | None, bool]:
        """Hand the invocation to `env` and classify how it ended; True to keep `env` warm.

        None when a warm runtime exited before it took the invocation (nothing ran).
        """
        invocation = Invocation(
            request_id=request.request_id,
            payload=request.payload,
            trace_id=request.trace_header or new_trace_header(),
            function_arn=self._arn,
            timeout=self._settings.timeout_seconds,
        )
        channel = env.channel
        channel.assign(invocation)
        if not channel.ready:
            startup = await channel.wait_startup(self._init_timeout)
            if startup is not Startup.READY:
                return self._init_failed(env, startup, request.request_id), False
            self._start_backoff.reset()
            self._next_start = 0.0
        answer = await invocation.wait_answer()
        if answer is None:
            env.kill()
            return self._timed_out(request.request_id), False
        if answer.kind is AnswerKind.EXIT and not invocation.dispatched:
            return None, False
        if answer.kind is AnswerKind.ERROR:
            report_error(self._name, request.request_id, answer.body)
        return failures.answered(answer, request.request_id)

    def _timed_out(self, request_id: str) -> InvokeResult:
        timeout = self._settings.timeout_seconds
        self._log.warning(
            "invocation timed out after %.2f s; its execution environment is replaced",
            timeout,
            extra=self._extra,
        )
        return failures.timed_out(request_id, timeout, self._settings.handler)

    # -- starting environments, and backing off when they cannot start -------------------------

    async def _start(self) -> Environment | InvokeResult:
        """Start an environment (after any init back-off); an InvokeResult if it cannot run."""
        delay = self._next_start - time.monotonic()
        if delay > 0:
            await anyio.sleep(delay)
        if self._closing:
            return InvokeResult(Outcome.INVOKE_ERROR, detail="runtime target is shutting down")
        try:
            package = await self._prepared()
        except (OSError, zipfile.BadZipFile) as exc:
            # Nothing ran: an invoke error, retried with back-off without consuming attempts.
            message = f"cannot unpack {self._settings.code} or its layers: {exc}"
            self._log.error(message, extra=self._extra)
            return InvokeResult(Outcome.INVOKE_ERROR, detail=message)
        argv, problem = self._command(package)
        if argv is None:
            self._back_off()
            self._log.error("cannot start the runtime: %s", problem, extra=self._extra)
            return failures.invalid_entrypoint(problem)
        channel = await self._api.open_channel()
        self._started += 1
        assert self._root is not None
        env = Environment(
            self._started,
            channel,
            self._root / "envs" / str(self._started),
            lambda request_id, line: self._on_output(self._name, request_id, line),
        )
        variables = lambda_environment(
            self._settings,
            self._identity,
            package,
            api_address=channel.address,
            tmp_dir=env.tmp_dir,
            log_stream=log_stream_name(),
            inherited=self._environ,
        )
        assert self._task_group is not None  # invoke checked it
        try:
            await env.start(
                argv, variables, package.task_root, self._settings.memory_size, self._task_group
            )
        except OSError as exc:
            await self._api.close_channel(channel)
            await env.aclose()
            self._back_off()
            message = f"fork/exec {argv[0]}: {exc.strerror or exc}"
            self._log.error("cannot start the runtime: %s", message, extra=self._extra)
            return failures.invalid_entrypoint(message)
        self._all.add(env)
        self._log.debug("started execution environment %d", env.number, extra=self._extra)
        return env

    def _command(self, package: Package) -> tuple[list[str] | None, str]:
        if self._settings.runtime == "python":
            return [sys.executable, "-m", "awslambdaric", self._settings.handler], ""
        bootstrap, problem = find_bootstrap(package)
        return ([str(bootstrap)], "") if bootstrap is not None else (None, problem)

    async def _prepared(self) -> Package:
        async with self._package_lock:
            if self._package is None:
                if self._root is None:
                    self._root = Path(tempfile.mkdtemp(prefix=f"poller-runtime-{self._name}-"))
                self._package = await anyio.to_thread.run_sync(
                    prepare_package, self._code, self._layers, self._root
                )
            return self._package

    def _back_off(self) -> None:
        self._next_start = time.monotonic() + self._start_backoff.next()

    def _init_failed(
        self, env: Environment, startup: Startup | None, request_id: str
    ) -> InvokeResult:
        self._back_off()
        env.kill()
        if startup is Startup.INIT_ERROR and env.channel.init_error is not None:
            report_error(self._name, request_id, env.channel.init_error.body)
        payload, detail = failures.init_failure(
            startup, env.channel.init_error, env.exit_status, request_id, self._init_timeout
        )
        self._log.warning(
            "execution environment failed to initialise (%s); next start in %.0f s",
            detail,
            self._next_start - time.monotonic(),
            extra=self._extra,
        )
        return failures.function_error(payload, detail)

    # -- retiring environments ----------------------------------------------------------------

    def _retire(self, env: Environment) -> None:
        """Kill `env` now and free its slot; its channel and files are cleaned up in background."""
        env.kill()
        self._size -= 1
        self._all.discard(env)
        if self._task_group is None:
            return  # the target has been closed: its API server and files are already gone
        self._retiring[env] = anyio.Event()
        self._task_group.start_soon(self._clean_up, env)

    async def _clean_up(self, env: Environment) -> None:
        try:
            await env.wait_exited(TERMINATE_GRACE)
            await self._api.close_channel(env.channel)
            await env.aclose()
        except Exception:
            # Raised on, it would cancel the target's task group and whatever runs inside it.
            self._log.exception(
                "could not clean up execution environment %d", env.number, extra=self._extra
            )
        finally:
            self._retiring.pop(env).set()

    async def aclose(self) -> None:
        """Terminate every environment (SIGTERM, then SIGKILL), stop the API, remove the files.

        Also waits for the clean-up of environments retired before. `__aexit__` calls it.
        """
        self._closing = True
        envs = list(self._all)
        self._idle.clear()
        self._all.clear()
        async with anyio.create_task_group() as ending:
            for env in envs:
                ending.start_soon(env.terminate, TERMINATE_GRACE)
        for env in envs:
            await self._api.close_channel(env.channel)
            await env.aclose()
        for cleaned_up in list(self._retiring.values()):
            await cleaned_up.wait()
        await self._api.aclose()
        if self._root is not None:
            await anyio.to_thread.run_sync(shutil.rmtree, self._root, True)
            self._root = None
            self._package = None
