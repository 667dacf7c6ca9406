"""What every shard reader of one stream mapping shares, assembled once by the wiring."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from poller.checkpoints.base import AllShards, CheckpointStore, ShardLeases
from poller.config.settings import MappingSettings
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.engine.settle import Settles
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import MappingMetrics, ShardGauges
from poller.ops.status import MappingStatus
from poller.sources.streams.shards import ShardApi


@dataclass(frozen=True)
class StreamContext:
    """What every shard reader of one mapping shares."""

    mapping: MappingSettings
    api: ShardApi
    settler: Settles[StreamRecord]
    store: CheckpointStore
    filters: FilterSet
    metrics: MappingMetrics
    gauges: ShardGauges
    status: MappingStatus
    shutdown: Shutdown
    clock: Callable[[], float] = time.time
    backoff_base: float = 1.0  # first step of the back-off after a failing AWS call
    leases: ShardLeases = field(default_factory=AllShards)  # which shards this instance reads
