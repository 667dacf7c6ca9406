"""The one place a mapping is assembled: source + engine + target + stores, from plans.

Settings are read here once and turned into narrow frozen plans (batching, settling, intake);
each default lives in one place. No part receives the app: what a mapping borrows from the
process (clients, the checkpoint store, shutdown, metrics) comes in as `Services`. Tests build
their mappings through these same functions, with fakes at the boundaries.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from poller.aws.calls import charged_to
from poller.aws.clients import AwsClients
from poller.checkpoints.base import CheckpointStore, ShardLeases
from poller.config.arns import SourceArn
from poller.config.loader import SettingsCheck, load_config, parse_config
from poller.config.settings import MappingSettings, Settings, TuningSettings
from poller.engine.batcher import BatchLimits
from poller.engine.destinations import OnFailureDestination, destination_for
from poller.engine.giveup import LeaveToQueue, SendOnFailure, StreamOrigin
from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.engine.settle import SettlePlan, Settler
from poller.filtering.filter_set import FilterSet, pattern_problem
from poller.ops.metrics import Metrics, ShardGauges
from poller.ops.status import MappingStatus, State
from poller.retry import FUNCTION_ERROR, THROTTLE, Curve
from poller.sources.sqs.messages import SqsMessage
from poller.sources.sqs.queue import QueueApi, SqsQueue
from poller.sources.sqs.source import QueuePlan, SqsSource
from poller.sources.streams.context import StreamContext
from poller.sources.streams.dynamodb import DynamoDBShards
from poller.sources.streams.kinesis import KinesisShards
from poller.sources.streams.shards import ShardApi, StreamKind
from poller.sources.streams.source import StreamSource
from poller.targets import build_target
from poller.targets.base import SettingKey, Target, TargetSettingError

log = logging.getLogger("poller.app")


class MappingRunner(Protocol):
    """What the app needs of a running mapping, whatever its source."""

    @property
    def abandoned(self) -> int:
        """Batches left unsettled when the drain deadline passed."""
        ...

    async def run(self) -> None:
        """Run until shutdown has drained it."""
        ...


# -- settings -----------------------------------------------------------------------------


def load_settings(
    path: pathlib.Path,
    environ: Mapping[str, str] | None = None,
    *,
    check_settings: SettingsCheck | None = None,
) -> Settings:
    """A configuration file, validated, filter patterns by the filter engine, then by
    `check_settings` if given; ConfigError."""
    return load_config(path, environ, check_pattern=pattern_problem, check_settings=check_settings)


def parse_settings(text: str, filename: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Configuration text, validated as `load_settings` does."""
    return parse_config(text, filename, environ, check_pattern=pattern_problem)


# -- plans --------------------------------------------------------------------------------


def batch_limits(mapping: MappingSettings) -> BatchLimits:
    """When a batch closes: batch_size, the batching window, the 6 MB payload limit."""
    return BatchLimits(mapping.batch_size, mapping.maximum_batching_window_in_seconds)


def settle_plan(mapping: MappingSettings) -> SettlePlan:
    """SQS: no retries (a failure is the queue's to redeliver), FIFO groups keep order.
    Streams: the mapping's retry count, record age and bisect; a batch is one sequence."""
    source = mapping.source_arn
    if source.kind == "sqs":
        return SettlePlan(
            report_batch_item_failures=mapping.report_batch_item_failures,
            ordering="key" if source.is_fifo else "none",
            max_retries=0,
        )
    return SettlePlan(
        report_batch_item_failures=mapping.report_batch_item_failures,
        ordering="batch",
        max_retries=mapping.maximum_retry_attempts,
        max_record_age=mapping.maximum_record_age_in_seconds,
        bisect=mapping.bisect_batch_on_function_error,
    )


# The largest `concurrency` a `runtime` target accepts, and so the most it gets by default.
RUNTIME_MAX_ENVIRONMENTS = 100


def runtime_concurrency(mapping: MappingSettings) -> int:
    """How many environments a `runtime` target runs when its settings name no `concurrency`:
    the mapping's own concurrency.

    SQS: `maximum_concurrency`. Streams: shards × parallelization_factor, but the shard count is
    unknown when targets are built, so 10 × parallelization_factor stands in for it. Both are
    capped at the largest `concurrency` the configuration accepts.
    """
    if mapping.source_arn.kind == "sqs":
        return min(RUNTIME_MAX_ENVIRONMENTS, mapping.maximum_concurrency)
    return min(RUNTIME_MAX_ENVIRONMENTS, 10 * mapping.parallelization_factor)


class MappingTargetError(ValueError):
    """A mapping's target cannot be built. `problem` says what is wrong and what to do; `key` is
    the target setting at fault (`("handler",)`, `("layers", 1)`), empty when none is."""

    def __init__(self, mapping: str, problem: str, key: SettingKey = ()) -> None:
        super().__init__(f"mapping {mapping}: target: {problem}")
        self.mapping = mapping
        self.problem = problem
        self.key = key


def target_for(mapping: MappingSettings, clients: AwsClients, tuning: TuningSettings) -> Target:
    """The target a mapping invokes; MappingTargetError (a ValueError) when it cannot load.
    Makes no network call and starts no process."""
    arn = mapping.source_arn
    try:
        return build_target(
            mapping.target,
            mapping_name=mapping.name,
            clients=clients,
            region=arn.region,
            account=arn.account,
            runtime_concurrency=runtime_concurrency(mapping),
            runtime_init_timeout=tuning.runtime_init_timeout_seconds,
        )
    except TargetSettingError as exc:
        raise MappingTargetError(mapping.name, str(exc), exc.key) from exc
    except (ValueError, ImportError, NotImplementedError) as exc:
        raise MappingTargetError(mapping.name, str(exc)) from exc


def needs_checkpoint_store(settings: Settings) -> bool:
    """True when an enabled mapping reads a stream, whose positions the store keeps."""
    return any(mapping.source_arn.is_stream for mapping in settings.enabled_mappings)


def queue_plan(mapping: MappingSettings, tuning: TuningSettings) -> QueuePlan:
    """What an SQS mapping's receivers need."""
    source = mapping.source_arn
    return QueuePlan(
        mapping=mapping.name,
        queue_arn=source.arn,
        region=source.region,
        batching=batch_limits(mapping),
        concurrency=mapping.maximum_concurrency,
        backlog_interval=tuning.backlog_refresh_interval_seconds,
    )


# -- what a mapping borrows from the process -------------------------------------------------


@dataclass
class Services:
    """What the daemon lends its mappings. `store` is None (and `store_error` says why) when
    the checkpoint store could not be opened; `identity` resolves Kinesis' invokeIdentityArn."""

    clients: AwsClients
    shutdown: Shutdown
    metrics: Metrics
    tuning: TuningSettings
    identity: Callable[[SourceArn], Awaitable[str]]
    store: CheckpointStore | None = None
    store_error: str = "checkpoint store not opened"
    clock: Callable[[], float] = field(default=time.time)


def invoker_for(target: Target, status: MappingStatus, services: Services) -> Invoker:
    """The invoker of one mapping's target."""
    return Invoker(target, status.metrics, status, shutdown=services.shutdown)


def sqs_settler(
    mapping: MappingSettings, invoker: Invoker, *, shutdown: Shutdown
) -> Settler[SqsMessage]:
    """The engine of an SQS mapping: failures are left to the queue."""
    return Settler(
        settle_plan(mapping),
        invoker,
        LeaveToQueue(mapping.name),
        invoker.metrics,
        mapping=mapping.name,
        shutdown=shutdown,
    )


def stream_settler(
    mapping: MappingSettings,
    invoker: Invoker,
    *,
    kind: StreamKind,
    destination: OnFailureDestination | None,
    shutdown: Shutdown,
    clock: Callable[[], float] = time.time,
    retry_curve: Curve = FUNCTION_ERROR,
    delivery_curve: Curve = THROTTLE,
) -> Settler[StreamRecord]:
    """The engine of a stream mapping: retries, bisect, record age, on-failure. The curves
    space function-error retries, and on-failure deliveries and a window's final invocations
    (tests shorten them)."""
    origin = StreamOrigin(mapping.name, kind, mapping.source_arn.arn, invoker.target.function_arn)
    give_up = SendOnFailure(destination, invoker.metrics, origin, shutdown, clock, delivery_curve)
    return Settler(
        dataclasses.replace(
            settle_plan(mapping), retry_curve=retry_curve, window_curve=delivery_curve
        ),
        invoker,
        give_up,
        invoker.metrics,
        mapping=mapping.name,
        shutdown=shutdown,
        clock=clock,
    )


# -- assembling a mapping -------------------------------------------------------------------


class _Mapping:
    """What both runners hold; each assembles its mapping inside the running loop."""

    def __init__(
        self, mapping: MappingSettings, target: Target, status: MappingStatus, services: Services
    ) -> None:
        self._mapping = mapping
        self._target = target
        self._status = status
        self._services = services
        self.abandoned = 0

    async def run(self) -> None:
        """Run the mapping until shutdown has drained it; the failed source and checkpoint
        calls of its tasks count as its own (poller_source_errors_total)."""
        with charged_to(self._status.metrics.source_error):
            await self._run()

    async def _run(self) -> None:
        raise NotImplementedError


class SqsMapping(_Mapping):
    """An SQS mapping, assembled inside the running loop (its client is made there)."""

    async def _run(self) -> None:
        mapping, status, services = self._mapping, self._status, self._services
        region = mapping.source_arn.region
        client = await services.clients.client("sqs", region=region)
        receiver = await services.clients.client("sqs", region=region, retries=False)
        source = sqs_source(
            mapping,
            SqsQueue(client, mapping.source_arn, receiver, mapping=mapping.name),
            self._target,
            status,
            shutdown=services.shutdown,
            tuning=services.tuning,
        )
        try:
            await source.run()
        finally:
            self.abandoned = source.abandoned


def sqs_source(
    mapping: MappingSettings,
    queue: QueueApi,
    target: Target,
    status: MappingStatus,
    *,
    shutdown: Shutdown,
    tuning: TuningSettings,
) -> SqsSource:
    """An SQS mapping's source and engine over `queue` (the real queue, or a test's)."""
    invoker = Invoker(target, status.metrics, status, shutdown=shutdown)
    return SqsSource(
        queue_plan(mapping, tuning),
        queue,
        sqs_settler(mapping, invoker, shutdown=shutdown),
        FilterSet.compile(mapping.filter_patterns),
        status,
        shutdown=shutdown,
    )


class StreamMapping(_Mapping):
    """A Kinesis or DynamoDB Streams mapping, assembled inside the running loop."""

    async def _run(self) -> None:
        mapping, status, services = self._mapping, self._status, self._services
        store = services.store
        if store is None:
            status.set(State.FAILED, services.store_error)
            status.reached_source = True
            log.error(services.store_error, extra={"mapping": mapping.name})
            return
        api = await self._shard_api()
        invoker = invoker_for(self._target, status, services)
        settler = stream_settler(
            mapping,
            invoker,
            kind=api.kind,
            destination=destination_for(mapping, services.clients),
            shutdown=services.shutdown,
            clock=services.clock,
        )
        context = stream_context(
            mapping,
            api,
            settler,
            store,
            status,
            services,
            leases=store.leases(mapping.name, api.stream_arn, status, services.shutdown),
        )
        stream = StreamSource(
            context, discovery_interval=services.tuning.shard_discovery_interval_seconds
        )
        try:
            await stream.run()
        finally:
            self.abandoned = stream.abandoned

    async def _shard_api(self) -> ShardApi:
        source = self._mapping.source_arn
        identity = await self._services.identity(source) if source.kind == "kinesis" else ""
        return await shard_api(source, self._services.clients, invoke_identity_arn=identity)


async def shard_api(
    source: SourceArn, clients: AwsClients, *, invoke_identity_arn: str = ""
) -> ShardApi:
    """The stream API of a Kinesis or DynamoDB stream source (the identity goes in Kinesis
    event records; reading positions needs none)."""
    if source.kind == "kinesis":
        client = await clients.client("kinesis", region=source.region)
        return KinesisShards(client, source, invoke_identity_arn=invoke_identity_arn)
    streams = await clients.client("dynamodbstreams", region=source.region)
    return DynamoDBShards(streams, source)


def stream_context(
    mapping: MappingSettings,
    api: ShardApi,
    settler: Settler[StreamRecord],
    store: CheckpointStore,
    status: MappingStatus,
    services: Services,
    *,
    leases: ShardLeases,
) -> StreamContext:
    """What every shard reader of one stream mapping shares."""
    return StreamContext(
        mapping=mapping,
        api=api,
        settler=settler,
        store=store,
        filters=FilterSet.compile(mapping.filter_patterns, source=api.kind),
        metrics=status.metrics,
        gauges=ShardGauges(services.metrics, mapping.name),
        status=status,
        shutdown=services.shutdown,
        clock=services.clock,
        leases=leases,
    )


def mapping_runner(
    mapping: MappingSettings, target: Target, status: MappingStatus, services: Services
) -> MappingRunner:
    """The runner of one enabled mapping, by its source kind."""
    if mapping.source_arn.is_stream:
        return StreamMapping(mapping, target, status, services)
    return SqsMapping(mapping, target, status, services)
