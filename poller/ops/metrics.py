"""Every Prometheus metric poller exports, defined once on a registry the caller owns.

Each family is labelled by `mapping` first; the helpers in `Metrics.__init__` add it. No
`_created` series: prometheus_client would add one beside every counter and histogram child,
doubling the series a scrape stores for a timestamp nobody alerts on."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from poller.targets.base import Outcome

# Process-wide in prometheus_client, and read when a registry is scraped: done on import, so
# before any metric of poller's exists (as PROMETHEUS_DISABLE_CREATED_SERIES=true would).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

# Stages of poller_events_total: Lambda's event counts (PolledEventCount ... DeletedEventCount).
STAGES = (
    "polled",
    "filtered_out",
    "invoked",
    "failed",
    "dropped",
    "on_failure_delivered",
    "deleted",
)
BACKLOG_STATES = ("visible", "in_flight", "delayed")

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """The metric families. Tests build one per test on a fresh registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Every family, so that a mapping's series can all be dropped together (`forget`).
        self._families: list[Counter | Gauge | Histogram] = []

        def counter(name: str, doc: str, *labels: str) -> Counter:
            family = Counter(name, doc, ["mapping", *labels], registry=r)
            self._families.append(family)
            return family

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            family = Gauge(name, doc, ["mapping", *labels], registry=r)
            self._families.append(family)
            return family

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            family = Histogram(name, doc, ["mapping"], buckets=buckets, registry=r)
            self._families.append(family)
            return family

        self.invocations = counter("poller_invocations_total", "Invocations by outcome", "outcome")
        self.invocation_duration = histogram(
            "poller_invocation_duration_seconds", "Time inside the target", _DURATION_BUCKETS
        )
        self.events = counter("poller_events_total", "Records at each step", "stage")
        self.iterator_age = gauge(
            "poller_iterator_age_seconds", "Age of the last record of the last batch", "shard"
        )
        self.concurrent_executions = gauge("poller_concurrent_executions", "Invocations in flight")
        self.on_failure_delivery_errors = counter(
            "poller_on_failure_delivery_errors_total",
            "Failed deliveries to the on-failure destination",
        )
        self.batch_size = histogram("poller_batch_size", "Records per invocation", _BATCH_BUCKETS)
        self.mapping_up = gauge("poller_mapping_up", "1 while the mapping runs normally")
        self.mapping_state = gauge(
            "poller_mapping_state", "1 for the mapping's current state, 0 for the others", "state"
        )
        self.source_errors = counter(
            "poller_source_errors_total",
            "Failed calls to the source or the checkpoint store, every attempt",
            "operation",
        )
        self.source_backlog = gauge(
            "poller_source_backlog_messages", "SQS queue depth as the queue reports it", "state"
        )
        self.behind_latest = gauge(
            "poller_behind_latest_seconds",
            "Kinesis MillisBehindLatest of the last read, in seconds",
            "shard",
        )
        self.leases_owned = gauge("poller_leases_owned", "Shards this instance holds")
        self.lease_takeovers = counter(
            "poller_lease_takeovers_total", "Leases this instance took from another owner"
        )

    def for_mapping(self, mapping: str, operations: Sequence[str] = ()) -> MappingMetrics:
        """The mapping's children; `operations` are the source calls it can count as failed,
        exported at 0 from the start so that a first failure shows as an increase."""
        return MappingMetrics(self, mapping, operations)

    def forget(self, mapping: str) -> None:
        """Drop every series of a mapping that is no longer configured (a reload removed it),
        so that it leaves /metrics rather than staying there at its last values."""
        for family in self._families:
            family.remove_by_labels({"mapping": mapping})


class MappingMetrics:
    """The children of one mapping, bound once so the per-batch path does no label lookups."""

    def __init__(self, metrics: Metrics, mapping: str, operations: Sequence[str] = ()) -> None:
        self.mapping = mapping
        self._metrics = metrics
        self._events = {stage: metrics.events.labels(mapping, stage) for stage in STAGES}
        self._invocations = {o: metrics.invocations.labels(mapping, o.value) for o in Outcome}
        self.duration = metrics.invocation_duration.labels(mapping)
        self.batch_size = metrics.batch_size.labels(mapping)
        self.concurrent = metrics.concurrent_executions.labels(mapping)
        self.up = metrics.mapping_up.labels(mapping)
        self.on_failure_errors = metrics.on_failure_delivery_errors.labels(mapping)
        self.leases_owned = metrics.leases_owned.labels(mapping)
        self.lease_takeovers = metrics.lease_takeovers.labels(mapping)
        self.up.set(0)
        self._source_errors = {op: metrics.source_errors.labels(mapping, op) for op in operations}

    def count(self, stage: str, n: int = 1) -> None:
        if n:
            self._events[stage].inc(n)

    def invocation(self, outcome: Outcome) -> None:
        self._invocations[outcome].inc()

    def source_error(self, operation: str) -> None:
        """Count one failed attempt of a source or checkpoint call (poller_source_errors_total)."""
        child = self._source_errors.get(operation)
        if child is None:
            child = self._source_errors[operation] = self._metrics.source_errors.labels(
                self.mapping, operation
            )
        child.inc()

    def state(self, state: str) -> Gauge:
        """The poller_mapping_state child of one state."""
        return self._metrics.mapping_state.labels(self.mapping, state)

    def backlog(self, state: str, value: float) -> None:
        self._metrics.source_backlog.labels(self.mapping, state).set(value)

    def iterator_age(self, shard: str, seconds: float) -> None:
        self._metrics.iterator_age.labels(self.mapping, shard).set(seconds)

    def behind_latest(self, shard: str, seconds: float) -> None:
        self._metrics.behind_latest.labels(self.mapping, shard).set(seconds)


class ShardGauges:
    """The per-shard series of one mapping: iterator age and Kinesis' behind-latest."""

    def __init__(self, metrics: Metrics, mapping: str) -> None:
        self._metrics = metrics
        self._mapping = mapping

    def iterator_age(self, shard_id: str, seconds: float) -> None:
        """Set poller_iterator_age_seconds{shard}."""
        self._metrics.iterator_age.labels(self._mapping, shard_id).set(seconds)

    def behind_latest(self, shard_id: str, seconds: float) -> None:
        """Set poller_behind_latest_seconds{shard}."""
        self._metrics.behind_latest.labels(self._mapping, shard_id).set(seconds)

    def remove(self, shard_id: str) -> None:
        """Drop a finished shard's series, so dashboards do not show it stuck forever."""
        for family in (self._metrics.iterator_age, self._metrics.behind_latest):
            with contextlib.suppress(KeyError):
                family.remove(self._mapping, shard_id)
