"""Live state of each mapping, as /status, /readyz and poller_mapping_up report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from poller.ops.metrics import MappingMetrics


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"
    FAILED = "failed"
    DISABLED = "disabled"
    STOPPING = "stopping"


@dataclass
class ShardStatus:
    id: str
    owner: str | None = None
    checkpoint: str | None = None
    iterator_age_seconds: float | None = None
    window: dict[str, object] | None = None  # the open tumbling window: start, end, state size


@dataclass
class MappingStatus:
    """Mutable, single-writer (the mapping's own tasks) view of one mapping."""

    name: str
    uuid: str
    source: str
    target: str
    metrics: MappingMetrics
    state: State = State.STARTING
    error: str | None = None
    # Set once the mapping made its first attempt to reach its source (/readyz).
    reached_source: bool = False
    shards: dict[str, ShardStatus] = field(default_factory=dict)

    def set(self, state: State, error: str | None = None) -> None:
        self.state = state
        self.error = error
        up = state in (State.RUNNING, State.DEGRADED, State.STARTING, State.STOPPING)
        self.metrics.up.set(1 if up and state is not State.STARTING else 0)

    def degraded(self, error: str) -> None:
        if self.state is not State.STOPPING:
            self.set(State.DEGRADED, error)

    def failed(self, error: str) -> None:
        if self.state is not State.STOPPING:
            self.set(State.FAILED, error)

    def recovered(self) -> None:
        if self.state in (State.DEGRADED, State.STARTING, State.FAILED):
            self.set(State.RUNNING)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "state": self.state.value,
            "source": self.source,
            "target": self.target,
            "error": self.error,
            "shards": [
                {
                    "id": s.id,
                    "owner": s.owner,
                    "checkpoint": s.checkpoint,
                    "iterator_age_seconds": s.iterator_age_seconds,
                    "window": s.window,
                }
                for s in self.shards.values()
            ],
        }
