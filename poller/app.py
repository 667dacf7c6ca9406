"""The daemon: one task group, one task per mapping, signals, a bounded drain.

Lifecycle as uvicorn has it: start the ops server, start the mappings, wait for a signal;
the first signal stops intake and gives in-flight batches `shutdown_timeout_seconds` to settle;
a second signal exits at once with 128+N.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio

from poller.aws.calls import OPERATIONS_BY_SOURCE
from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints import CheckpointStore, open_checkpoint_store
from poller.config.arns import SourceArn
from poller.config.settings import MappingSettings, Settings
from poller.engine.lifecycle import Shutdown
from poller.ops.metrics import Metrics
from poller.ops.server import OpsServer
from poller.ops.status import MappingStatus, State
from poller.retry import RESTART, Backoff, sleep_or_stop
from poller.targets import Target
from poller.wiring import (
    MappingRunner,
    Services,
    mapping_runner,
    needs_checkpoint_store,
    target_for,
)

log = logging.getLogger("poller.app")

# GetCallerIdentity must not hold a Kinesis mapping back for long when STS is unreachable.
_IDENTITY_TIMEOUT = 15.0


@dataclass
class _Mapping:
    settings: MappingSettings
    status: MappingStatus
    target: Target | None = None
    runner: MappingRunner | None = None


class App:
    """Owns the clients, the ops server and every mapping for one `poller run`."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.shutdown = Shutdown()
        self.clients = AwsClients(settings.aws)
        self.mappings = [self._status_for(m) for m in settings.mappings]
        self.server = OpsServer(
            settings.server.host,
            settings.server.port,
            self.metrics.registry,
            [m.status for m in self.mappings],
            lambda: self.shutdown.is_stopping,
        )
        self.started = anyio.Event()
        # Stream positions: one store for every stream mapping, opened by run() when needed.
        self.checkpoints: CheckpointStore | None = None
        self.checkpoints_error = "checkpoint store not opened"
        self._identity: str | None = None
        self._identity_lock = anyio.Lock()

    def _status_for(self, mapping: MappingSettings) -> _Mapping:
        status = MappingStatus(
            name=mapping.name,
            uuid=mapping.uuid,
            source=mapping.source,
            target=_describe_target(mapping),
            metrics=self.metrics.for_mapping(
                mapping.name, OPERATIONS_BY_SOURCE[mapping.source_arn.kind]
            ),
        )
        if not mapping.enabled:
            status.set(State.DISABLED)
        return _Mapping(mapping, status)

    def build_targets(self) -> None:
        """Create each enabled mapping's target; raises ValueError naming the mapping."""
        for entry in self.mappings:
            if not entry.settings.enabled:
                continue
            entry.target = target_for(entry.settings, self.clients, self.settings.tuning)
            entry.status.target = entry.target.description

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until signalled (or `stop()`); 0, or 1 when the drain left batches unsettled."""
        async with self.clients, AsyncExitStack() as targets:
            # Targets live as long as the run, entered and exited in this task: a runtime target's
            # task group holds its environments' tasks. Exits shield themselves, as `finally` does.
            for entry in self.mappings:
                if entry.target is not None:
                    await targets.enter_async_context(entry.target)
            await self.server.start()
            log.info("serving /metrics /healthz /readyz /status on port %d", self.server.port)
            if needs_checkpoint_store(self.settings):
                try:
                    self.checkpoints = open_checkpoint_store(
                        self.settings.checkpoints, self.clients
                    )
                except (NotImplementedError, ValueError, OSError) as exc:
                    # Stream mappings then fail on their own; SQS mappings still run.
                    self.checkpoints_error = f"checkpoints: {exc}"
            try:
                async with anyio.create_task_group() as tg:
                    if handle_signals:
                        tg.start_soon(self._watch_signals)
                    async with anyio.create_task_group() as mappings:
                        for entry in self.mappings:
                            if entry.settings.enabled:
                                mappings.start_soon(self._supervise, entry)
                        self.started.set()
                        # Serve until signalled, whatever the mappings do: a daemon that exits
                        # when none is enabled, or when all have failed, is a restart loop in a
                        # container, and /status is where the operator sees why.
                        await self.shutdown.stopping.wait()
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.server.stop()
                    if self.checkpoints is not None:
                        await self.checkpoints.aclose()
        abandoned = sum(e.runner.abandoned for e in self.mappings if e.runner is not None)
        log.info("stopped", extra={"count": abandoned})
        return 1 if abandoned else 0

    def stop(self) -> None:
        """Begin a graceful shutdown (what the first SIGTERM does)."""
        log.info("shutting down: draining in-flight batches")
        self.shutdown.begin(self.settings.shutdown_timeout_seconds)

    async def invoke_identity(self, source: SourceArn) -> str:
        """The events' `invokeIdentityArn`, resolved once per process:
        `aws.invoke_identity_arn`, else whom poller's credentials resolve to."""
        if self.settings.aws.invoke_identity_arn:
            return self.settings.aws.invoke_identity_arn
        async with self._identity_lock:
            if self._identity is None:
                self._identity = await self._caller_identity(source)
        return self._identity

    async def _caller_identity(self, source: SourceArn) -> str:
        try:
            with anyio.fail_after(_IDENTITY_TIMEOUT):
                sts = await self.clients.client("sts", retries=False, read_timeout=10)
                answer = await sts.get_caller_identity()
            return role_arn(str(answer["Arn"]))
        except AWS_ERRORS as exc:
            fallback = f"arn:{source.partition}:iam::{source.account}:root"
            action = "sts:GetCallerIdentity"
            problem = describe(exc, what=action, permission=action)
            log.warning(
                "cannot tell which identity poller runs as (%s); Kinesis events carry "
                "invokeIdentityArn %s; set aws.invoke_identity_arn to choose it",
                problem.message,
                fallback,
            )
            return fallback

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self.shutdown.is_stopping:
                    log.warning("second signal: exiting at once")
                    logging.shutdown()
                    os._exit(128 + signum)
                self.stop()

    async def _supervise(self, entry: _Mapping) -> None:
        """Run one mapping; a bug in it is logged and the mapping restarted, never fatal."""
        restarts = Backoff(RESTART)
        while not self.shutdown.is_stopping:
            started = anyio.current_time()
            try:
                entry.runner = self._build_runner(entry)
                await entry.runner.run()
                return
            except Exception as exc:
                entry.status.set(State.FAILED, f"internal error: {type(exc).__name__}: {exc}")
                if anyio.current_time() - started > RESTART.cap:
                    restarts.reset()  # it ran a good while: a new crash, not a crash loop
                delay = restarts.next()
                log.exception(
                    "mapping crashed; restarting in %.0fs",
                    delay,
                    extra={"mapping": entry.settings.name},
                )
                await sleep_or_stop(delay, self.shutdown.stopping)

    def _build_runner(self, entry: _Mapping) -> MappingRunner:
        if entry.target is None:
            raise RuntimeError("build_targets() must run before run()")
        services = Services(
            clients=self.clients,
            shutdown=self.shutdown,
            metrics=self.metrics,
            tuning=self.settings.tuning,
            identity=self.invoke_identity,
            store=self.checkpoints,
            store_error=self.checkpoints_error,
        )
        return mapping_runner(entry.settings, entry.target, entry.status, services)


def role_arn(caller_arn: str) -> str:
    """An STS assumed-role ARN as the IAM role it stands for (what Lambda puts in events);
    any other caller ARN is returned as it is."""
    prefix, _, resource = caller_arn.partition(":assumed-role/")
    if not resource or ":sts::" not in prefix:
        return caller_arn
    role = resource.split("/", 1)[0]
    return f"{prefix.replace(':sts::', ':iam::')}:role/{role}"


def _describe_target(mapping: MappingSettings) -> str:
    target = mapping.target
    detail = {
        "lambda": getattr(target, "function", ""),
        "http": getattr(target, "url", ""),
        "python": getattr(target, "handler", ""),
        "runtime": getattr(target, "code", ""),
    }[target.type]
    return f"{target.type}:{detail}"
