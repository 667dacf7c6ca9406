"""The daemon: one task group, one task per mapping, signals, a bounded drain, reloads.

Lifecycle as uvicorn has it: start the ops server, start the mappings, wait for a signal;
the first signal stops intake and gives in-flight batches `shutdown_timeout_seconds` to settle;
a second signal exits at once with 128+N. SIGHUP re-reads the configuration: each mapping has
its own shutdown, so one can drain and stop (or restart with new settings) while the others
run on untouched.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from poller.aws.calls import OPERATIONS_BY_SOURCE
from poller.aws.clients import AwsClients
from poller.aws.identity import caller_identity
from poller.checkpoints import CheckpointStore, open_checkpoint_store
from poller.config.arns import SourceArn
from poller.config.changes import changes
from poller.config.reader import ConfigError
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
    load_settings,
    mapping_runner,
    needs_checkpoint_store,
    target_for,
)

log = logging.getLogger("poller.app")


@dataclass
class _Mapping:
    """One configured mapping: its settings, what /status shows of it, and a shutdown of its
    own (the process's first signal begins every one; a reload, only those it removes or
    changes). `stopped` is set once its task has drained and its target is closed."""

    settings: MappingSettings
    status: MappingStatus
    shutdown: Shutdown = field(default_factory=Shutdown)
    target: Target | None = None
    runner: MappingRunner | None = None
    stopped: anyio.Event = field(default_factory=anyio.Event)


class App:
    """Owns the clients, the ops server and every mapping for one `poller run`."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path  # what a reload (SIGHUP) reads again
        self.metrics = metrics or Metrics()
        self.shutdown = Shutdown()
        self.clients = AwsClients(settings.aws)
        self.mappings = [self._status_for(m) for m in settings.mappings]
        self.server = OpsServer(
            settings.server.host,
            settings.server.port,
            self.metrics.registry,
            lambda: [m.status for m in self.mappings],
            lambda: self.shutdown.is_stopping,
        )
        self.started = anyio.Event()
        # Stream positions: one store for every stream mapping, opened by run() when needed.
        self.checkpoints: CheckpointStore | None = None
        self.checkpoints_error = "checkpoint store not opened"
        self._identity: str | None = None
        self._identity_lock = anyio.Lock()
        self._mapping_tasks: TaskGroup | None = None
        self._reload_lock = anyio.Lock()
        self.reloads = 0  # reloads applied, for tests and logs
        # Batches left unsettled by mappings a reload drained while the daemon was stopping:
        # their entries are gone from `mappings` by the time the exit code is counted.
        self._abandoned_by_reloads = 0

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
            if entry.settings.enabled:
                entry.target = self._target_for(entry.settings)
                entry.status.target = entry.target.description

    def _target_for(self, mapping: MappingSettings) -> Target:
        return target_for(mapping, self.clients, self.settings.tuning)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until signalled (or `stop()`); 0, or 1 when the drain left batches unsettled."""
        async with self.clients:
            await self.server.start()
            log.info("serving /metrics /healthz /readyz /status on port %d", self.server.port)
            self._open_checkpoint_store(self.settings)
            try:
                async with anyio.create_task_group() as tg:
                    if handle_signals:
                        tg.start_soon(self._watch_signals, tg)
                    async with anyio.create_task_group() as mappings:
                        self._mapping_tasks = mappings
                        for entry in self.mappings:
                            self._start(entry)
                        if not any(entry.settings.enabled for entry in self.mappings):
                            log.warning(
                                "no mapping is enabled: serving the endpoints only (a SIGHUP "
                                "after editing the file starts what it enables)"
                            )
                        self.started.set()
                        # Serve until signalled, whatever the mappings do: a daemon that exits
                        # when none is enabled, or when all have failed, is a restart loop in a
                        # container, and /status is where the operator sees why.
                        await self.shutdown.stopping.wait()
                    self._mapping_tasks = None
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.server.stop()
                    if self.checkpoints is not None:
                        await self.checkpoints.aclose()
        abandoned = self._abandoned_by_reloads + sum(
            e.runner.abandoned for e in self.mappings if e.runner is not None
        )
        log.info("stopped", extra={"count": abandoned})
        return 1 if abandoned else 0

    def stop(self) -> None:
        """Begin a graceful shutdown (what the first SIGTERM does)."""
        log.info("shutting down: draining in-flight batches")
        timeout = self.settings.shutdown_timeout_seconds
        self.shutdown.begin(timeout)
        for entry in self.mappings:
            entry.shutdown.begin(timeout)

    async def reload(self) -> bool:
        """Read the configuration file again and apply its mappings (what SIGHUP does).

        Added mappings start; removed ones drain and stop; a changed one drains, then starts
        again with its new settings (its checkpoints are in the store, untouched); unchanged
        ones are not touched. A file that does not load, or a target that cannot be built, is
        logged and changes nothing. False when nothing was applied.
        """
        async with self._reload_lock:
            if self.shutdown.is_stopping:
                return False
            loaded = self._load_for_reload()
            if loaded is None:
                return False
            plan = changes(self.settings, loaded)
            needs_restart = plan.needs_restart
            # No store open yet: nothing depends on the old `checkpoints`, so the new file's is
            # the one its first stream mapping opens, not a restart's business.
            adopt_store = self.checkpoints is None and needs_checkpoint_store(loaded)
            if adopt_store:
                needs_restart = tuple(key for key in needs_restart if key != "checkpoints")
            targets: dict[str, Target] = {}
            try:
                for mapping in (*plan.added, *plan.changed):
                    if mapping.enabled:
                        targets[mapping.name] = self._target_for(mapping)
            except ValueError as exc:
                log.error("reload refused, the running mappings are kept: %s", exc)
                return False
            if needs_restart:
                log.warning(
                    "reload: %s changed in %s; a restart applies %s, the running values are kept",
                    ", ".join(needs_restart),
                    self.config_path,
                    "it" if len(needs_restart) == 1 else "them",
                )
            log.info(
                "reload: %d mappings added, %d removed, %d changed, %d unchanged",
                len(plan.added),
                len(plan.removed),
                len(plan.changed),
                len(plan.unchanged),
            )
            if adopt_store:
                self.settings = self.settings.model_copy(update={"checkpoints": loaded.checkpoints})
                self._open_checkpoint_store(loaded)
            await self._apply(loaded, plan.added, plan.removed, plan.changed, targets)
            self.reloads += 1
            return True

    def _load_for_reload(self) -> Settings | None:
        if self.config_path is None:
            log.warning("reload: this daemon was not started from a file; nothing to reload")
            return None
        try:
            return load_settings(self.config_path)
        except ConfigError as exc:
            problems = [problem.format() for problem in exc.problems] or [str(exc)]
            log.error(
                "reload refused, the running mappings are kept: %s",
                "; ".join(problems),
                extra={"count": len(problems)},
            )
            return None

    async def _apply(
        self,
        loaded: Settings,
        added: Sequence[MappingSettings],
        removed: Sequence[MappingSettings],
        changed: Sequence[MappingSettings],
        targets: dict[str, Target],
    ) -> None:
        running = {entry.settings.name: entry for entry in self.mappings}
        leaving = [running[mapping.name] for mapping in (*removed, *changed)]
        for entry in leaving:
            entry.shutdown.begin(self.settings.shutdown_timeout_seconds)

        def fresh(mapping: MappingSettings) -> _Mapping:
            entry = self._status_for(mapping)
            entry.target = targets.get(mapping.name)
            if entry.target is not None:
                entry.status.target = entry.target.description
            return entry

        # Added mappings start at once; a changed one keeps its old entry (shown `stopping`)
        # until that has drained, so that two runners never read the same positions.
        new = {mapping.name: fresh(mapping) for mapping in added}
        gone = {mapping.name for mapping in removed}
        self.mappings = [
            *(new.get(m.name) or running[m.name] for m in loaded.mappings),
            *(running[name] for name in running if name in gone),
        ]
        self.settings = self.settings.model_copy(update={"mappings": loaded.mappings})
        for entry in new.values():
            self._start(entry)
        for entry in leaving:
            await entry.stopped.wait()
            if entry.runner is not None and entry.runner.abandoned:
                if self.shutdown.is_stopping:
                    self._abandoned_by_reloads += entry.runner.abandoned
                log.warning(
                    "reload: the drain deadline passed with batches unsettled; "
                    "their records will be delivered again",
                    extra={"mapping": entry.settings.name, "count": entry.runner.abandoned},
                )
            # Its series go with it; a changed mapping's start again from a clean slate.
            self.metrics.forget(entry.settings.name)
        restarted = {mapping.name: fresh(mapping) for mapping in changed}
        self.mappings = [
            restarted.get(entry.settings.name, entry)
            for entry in self.mappings
            if entry.settings.name not in gone
        ]
        for entry in restarted.values():
            self._start(entry)

    def _open_checkpoint_store(self, settings: Settings) -> None:
        """Open the stream positions' store once a mapping of `settings` needs it."""
        if self.checkpoints is not None or not needs_checkpoint_store(settings):
            return
        try:
            self.checkpoints = open_checkpoint_store(self.settings.checkpoints, self.clients)
        except (NotImplementedError, ValueError, OSError) as exc:
            # Stream mappings then fail on their own; SQS mappings still run.
            self.checkpoints_error = f"checkpoints: {exc}"

    def _start(self, entry: _Mapping) -> None:
        """Start an enabled mapping's task; a disabled one, or one too late, is stopped as is."""
        tasks = self._mapping_tasks
        if entry.target is None or tasks is None or self.shutdown.is_stopping:
            entry.stopped.set()
            return
        tasks.start_soon(self._run_mapping, entry)

    async def _run_mapping(self, entry: _Mapping) -> None:
        # The target lives as long as its mapping, entered and exited in this task: a runtime
        # target's task group holds its environments' tasks. Its exit shields itself.
        try:
            if entry.target is not None:
                async with entry.target:
                    await self._supervise(entry)
        finally:
            entry.stopped.set()

    async def invoke_identity(self, source: SourceArn) -> str:
        """The events' `invokeIdentityArn`, resolved once per process:
        `aws.invoke_identity_arn`, else whom poller's credentials resolve to."""
        if self.settings.aws.invoke_identity_arn:
            return self.settings.aws.invoke_identity_arn
        async with self._identity_lock:
            if self._identity is None:
                self._identity = await caller_identity(self.clients, source)
        return self._identity

    async def _watch_signals(self, tasks: TaskGroup) -> None:
        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with anyio.open_signal_receiver(*watched) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    # In a task of its own: a reload waits for drains, signals must not.
                    tasks.start_soon(self.reload)
                    continue
                if self.shutdown.is_stopping:
                    log.warning("second signal: exiting at once")
                    logging.shutdown()
                    os._exit(128 + signum)
                self.stop()

    async def _supervise(self, entry: _Mapping) -> None:
        """Run one mapping; a bug in it is logged and the mapping restarted, never fatal."""
        restarts = Backoff(RESTART)
        while not entry.shutdown.is_stopping:
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
                await sleep_or_stop(delay, entry.shutdown.stopping)

    def _build_runner(self, entry: _Mapping) -> MappingRunner:
        if entry.target is None:
            raise RuntimeError("build_targets() must run before run()")
        services = Services(
            clients=self.clients,
            shutdown=entry.shutdown,
            metrics=self.metrics,
            tuning=self.settings.tuning,
            identity=self.invoke_identity,
            store=self.checkpoints,
            store_error=self.checkpoints_error,
        )
        return mapping_runner(entry.settings, entry.target, entry.status, services)


def _describe_target(mapping: MappingSettings) -> str:
    target = mapping.target
    detail = {
        "lambda": getattr(target, "function", ""),
        "http": getattr(target, "url", ""),
        "python": getattr(target, "handler", ""),
        "runtime": getattr(target, "code", ""),
    }[target.type]
    return f"{target.type}:{detail}"
