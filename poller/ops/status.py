"""Live state of each mapping, as /status, /readyz, poller_mapping_up and poller_mapping_state
report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client import Gauge

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
    _states: dict[State, Gauge] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Every state's series exists from the start: 1 for the current one, 0 for the others.
        self._states = {state: self.metrics.state(state.value) for state in State}
        self.set(self.state, self.error)

    def set(self, state: State, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.metrics.up.set(1 if state in (State.RUNNING, State.DEGRADED, State.STOPPING) else 0)
        for each, gauge in self._states.items():
            gauge.set(1 if each is state else 0)

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
