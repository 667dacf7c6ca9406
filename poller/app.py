"""The daemon: one task group, one task per mapping, signals, a bounded drain (SPEC §1).

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
from typing import Protocol

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints import CheckpointStore, open_checkpoint_store
from poller.config.arns import SourceArn
from poller.config.settings import MappingSettings, Settings
from poller.engine.destinations import destination_for
from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.engine.settle import StreamBatchProcessor
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import Metrics
from poller.ops.server import OpsServer
from poller.ops.status import MappingStatus, State
from poller.sources.sqs.queue import SqsQueue
from poller.sources.sqs.source import SqsSource
from poller.sources.streams.dynamodb import DynamoDBShards
from poller.sources.streams.kinesis import KinesisShards
from poller.sources.streams.reader import StreamContext
from poller.sources.streams.shards import ShardApi, ShardGauges
from poller.sources.streams.source import StreamSource
from poller.targets import Target, build_target, default_concurrency

log = logging.getLogger("poller.app")

_RESTART_DELAY = 5.0
# GetCallerIdentity must not hold a Kinesis mapping back for long when STS is unreachable.
_IDENTITY_TIMEOUT = 15.0


class MappingRunner(Protocol):
    """What the app needs of a running mapping, whatever its source."""

    abandoned: int

    async def run(self) -> None: ...


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
            metrics=self.metrics.for_mapping(mapping.name),
        )
        if not mapping.enabled:
            status.set(State.DISABLED)
        return _Mapping(mapping, status)

    def build_targets(self) -> None:
        """Create each enabled mapping's target; raises ValueError naming the mapping."""
        for entry in self.mappings:
            if not entry.settings.enabled:
                continue
            arn = entry.settings.source_arn
            try:
                entry.target = build_target(
                    entry.settings.target,
                    mapping_name=entry.settings.name,
                    clients=self.clients,
                    region=arn.region,
                    account=arn.account,
                    runtime_concurrency=default_concurrency(entry.settings),
                    runtime_init_timeout=self.settings.tuning.runtime_init_timeout_seconds,
                )
            except (ValueError, ImportError, NotImplementedError) as exc:
                raise ValueError(f"mapping {entry.settings.name}: target: {exc}") from exc
            entry.status.target = entry.target.description

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until signalled (or `stop()`); the exit code of SPEC §1."""
        async with self.clients, AsyncExitStack() as targets:
            # Targets live as long as the run, entered and exited in this task: a runtime target's
            # task group holds its environments' tasks. Exits shield themselves, as `finally` does.
            for entry in self.mappings:
                if entry.target is not None:
                    await targets.enter_async_context(entry.target)
            await self.server.start()
            log.info("serving /metrics /healthz /readyz /status on port %d", self.server.port)
            if any(m.enabled and m.source_arn.is_stream for m in self.settings.mappings):
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
        """The events' `invokeIdentityArn` (ESM-SEMANTICS §0), resolved once per process:
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
        while not self.shutdown.is_stopping:
            try:
                entry.runner = self._build_runner(entry)
                if entry.runner is None:
                    return
                await entry.runner.run()
                return
            except Exception as exc:
                entry.status.set(State.FAILED, f"internal error: {type(exc).__name__}: {exc}")
                log.exception(
                    "mapping crashed; restarting in %.0fs",
                    _RESTART_DELAY,
                    extra={"mapping": entry.settings.name},
                )
                with anyio.move_on_after(_RESTART_DELAY):
                    await self.shutdown.stopping.wait()

    def _build_runner(self, entry: _Mapping) -> MappingRunner | None:
        mapping = entry.settings
        target = entry.target
        if target is None:
            raise RuntimeError("build_targets() must run before run()")
        metrics = entry.status.metrics
        invoker = Invoker(target, metrics, entry.status, shutdown=self.shutdown)
        if mapping.source_arn.is_stream:
            return _StreamRunner(self, entry, invoker)
        return _SqsRunner(self, entry, invoker)


class _Runner:
    """What both kinds of runner hold: built in the app, run inside the event loop."""

    def __init__(self, app: App, entry: _Mapping, invoker: Invoker) -> None:
        self._app = app
        self._entry = entry
        self._invoker = invoker
        self.abandoned = 0


class _SqsRunner(_Runner):
    """Creates the SQS client inside the running loop, then hands over to SqsSource."""

    async def run(self) -> None:
        mapping = self._entry.settings
        client = await self._app.clients.client("sqs")
        source = SqsSource(
            mapping,
            SqsQueue(client, mapping.source_arn),
            self._invoker,
            FilterSet.compile(mapping.filter_patterns),
            self._entry.status.metrics,
            self._entry.status,
            shutdown=self._app.shutdown,
            backlog_interval=self._app.settings.tuning.backlog_refresh_interval_seconds,
        )
        try:
            await source.run()
        finally:
            self.abandoned = source.abandoned


class _StreamRunner(_Runner):
    """Builds a Kinesis or DynamoDB Streams mapping inside the running loop, then runs it."""

    async def run(self) -> None:
        """Wire the shard API, processor and checkpoint store together and run the mapping."""
        app, mapping, status = self._app, self._entry.settings, self._entry.status
        source, target, store = mapping.source_arn, self._entry.target, app.checkpoints
        if target is None:
            raise RuntimeError("build_targets() must run before run()")
        if store is None:
            status.set(State.FAILED, app.checkpoints_error)
            status.reached_source = True
            log.error(app.checkpoints_error, extra={"mapping": mapping.name})
            return
        api: ShardApi
        if source.kind == "kinesis":
            identity = await app.invoke_identity(source)
            client = await app.clients.client("kinesis")
            api = KinesisShards(client, source, invoke_identity_arn=identity)
        else:
            api = DynamoDBShards(await app.clients.client("dynamodbstreams"), source)
        processor = StreamBatchProcessor(
            mapping,
            self._invoker,
            status.metrics,
            kind=api.kind,
            stream_arn=source.arn,
            function_arn=target.function_arn,
            destination=destination_for(mapping, app.clients),
            shutdown=app.shutdown,
        )
        context = StreamContext(
            mapping=mapping,
            api=api,
            processor=processor,
            store=store,
            filters=FilterSet.compile(mapping.filter_patterns, source=api.kind),
            metrics=status.metrics,
            gauges=ShardGauges(app.metrics, mapping.name),
            status=status,
            shutdown=app.shutdown,
            leases=store.leases(mapping.name, source.arn, status, app.shutdown),
        )
        stream = StreamSource(
            context, discovery_interval=app.settings.tuning.shard_discovery_interval_seconds
        )
        try:
            await stream.run()
        finally:
            self.abandoned = stream.abandoned


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
