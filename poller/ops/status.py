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


# A condition's key: which part raised it, and for what, e.g. ("read", shard_id). Each part
# clears only its own, so one part's success never hides another's trouble.
Condition = tuple[str, ...]
TARGET: Condition = ("target",)  # the invoker: the target throttles or cannot be reached
SOURCE: Condition = ("source",)  # the queue or the stream's listing
STORE: Condition = ("store",)  # loading a stream mapping's checkpoints
LEASES: Condition = ("lease",)  # the lease table's renewals and scans


def reading(shard_id: str) -> Condition:
    """A shard reader's GetShardIterator and GetRecords calls."""
    return ("read", shard_id)


def checkpointing(shard_id: str) -> Condition:
    """A shard reader's checkpoint writes."""
    return ("checkpoint", shard_id)


@dataclass
class _Problem:
    message: str
    fatal: bool  # needs a person (State.FAILED), rather than passing (State.DEGRADED)


@dataclass
class MappingStatus:
    """Mutable, single-writer (the mapping's own tasks) view of one mapping.

    Two layers make the state. `set` moves the mapping through its life (starting, running,
    stopping, failed for good, disabled) and forgets every condition: the parts that raised
    them are gone or just starting. Beside it, each part raises and clears conditions of its
    own (`degraded`, `failed`, `recovered`, by key): while any is outstanding the mapping shows
    failed (if one of them is fatal) or degraded, unless it is stopping or disabled, which
    always show as they are. With none outstanding it shows what `set` last said.

    `error` is then the oldest outstanding condition's message (the oldest fatal one while
    failed), followed by how many more there are: every one is logged as it is raised.
    """

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
    _life: State = field(init=False, repr=False)
    _life_error: str | None = field(init=False, repr=False)
    # Insertion order is age: a condition raised again keeps its place (and takes the new
    # message), one cleared and raised again goes last.
    _conditions: dict[Condition, _Problem] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        # Every state's series exists from the start: 1 for the current one, 0 for the others.
        self._states = {state: self.metrics.state(state.value) for state in State}
        self.set(self.state, self.error)

    @property
    def conditions(self) -> list[Condition]:
        """The outstanding conditions' keys, oldest first."""
        return list(self._conditions)

    def set(self, state: State, error: str | None = None) -> None:
        self._life, self._life_error = state, error
        self._conditions.clear()
        self._show()

    def degraded(self, key: Condition, error: str) -> None:
        """The part behind `key` is retrying something that may pass."""
        self._raise(key, _Problem(error, fatal=False))

    def failed(self, key: Condition, error: str) -> None:
        """The part behind `key` keeps retrying something only a person can mend."""
        self._raise(key, _Problem(error, fatal=True))

    def recovered(self, key: Condition) -> None:
        """The part behind `key` works again (or is gone); a no-op if it raised nothing."""
        if self._conditions.pop(key, None) is not None:
            self._show()

    def _raise(self, key: Condition, problem: _Problem) -> None:
        if self._conditions.get(key) != problem:
            self._conditions[key] = problem
            self._show()

    def _show(self) -> None:
        state, error = self._life, self._life_error
        problems = list(self._conditions.values())
        if problems and state not in (State.STOPPING, State.DISABLED):
            fatal = [problem for problem in problems if problem.fatal]
            state = State.FAILED if fatal else State.DEGRADED
            error = (fatal or problems)[0].message
            if len(problems) > 1:
                more = len(problems) - 1
                error += f" (and {more} more problem{'s' if more > 1 else ''})"
        self.state = state
        self.error = error
        self.metrics.up.set(1 if state in (State.RUNNING, State.DEGRADED, State.STOPPING) else 0)
        for each, gauge in self._states.items():
            gauge.set(1 if each is state else 0)

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
