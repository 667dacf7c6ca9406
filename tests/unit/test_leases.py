"""Leases without AWS: the Balancer's expiry and balance decisions on a fake clock, and stream
readers driven by a fake lease set (held, handed back, lost) over the in-memory shard API."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from poller.checkpoints.balance import (
    FORGET_REPLICA_AFTER_DURATIONS,
    STEAL_AFTER_DURATIONS,
    Balancer,
    LeaseView,
    Observer,
    Plan,
    ReplicaView,
)
from poller.checkpoints.base import Checkpoint, LeaseLost, LeaseState
from poller.checkpoints.lineage import ShardInfo
from poller.engine.lifecycle import Shutdown
from poller.ops.status import MappingStatus
from poller.sources.streams.shards import StartAt
from poller.sources.streams.source import StreamSource
from tests.fakes.checkpoints import MemoryStore
from tests.support.wait import eventually
from tests.unit.test_shards import (
    FakeApi,
    FakeSettler,
    FakeShard,
    records,
    shard,
    stream_context,
)

DURATION = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- expiry by observation ---------------------------------------------------------------------


def test_a_counter_is_idle_from_when_this_replica_saw_it_change() -> None:
    clock = Clock()
    observer = Observer(clock)
    observer.observe("owned", 7, owned=True)
    observer.observe("free", 3, owned=False)
    assert observer.idle("owned") == 0 and observer.idle("free") == math.inf
    clock.now += 6
    observer.observe("owned", 7, owned=True)
    assert observer.idle("owned") == 6  # unchanged: still counting
    observer.observe("owned", 8, owned=True)
    assert observer.idle("owned") == 0  # renewed
    observer.retain({"owned"})
    assert observer.counter("free") is None and observer.idle("free") == math.inf


def test_an_owned_lease_seen_for_the_first_time_expires_only_after_a_full_duration() -> None:
    clock = Clock()
    balancer = Balancer("me", DURATION, clock)
    dead = LeaseView("s1", "dead", 41)
    balancer.observe([dead], [])
    assert not balancer.expired(dead)
    clock.now += DURATION - 0.1
    balancer.observe([dead], [])
    assert not balancer.expired(dead)
    clock.now += 0.1
    balancer.observe([dead], [])
    assert balancer.expired(dead)
    assert balancer.plan([dead], [], set()) == Plan(take=(dead,))


# -- balance -----------------------------------------------------------------------------------


def leases(owners: dict[str, str | None]) -> list[LeaseView]:
    return [LeaseView(shard_id, owner, 1) for shard_id, owner in sorted(owners.items())]


def beats(*replicas: str, stopping: Sequence[str] = ()) -> list[ReplicaView]:
    return [ReplicaView(r, 1, r in stopping) for r in replicas]


def plan_for(
    me: str,
    ready: list[LeaseView],
    replicas: list[ReplicaView],
    held: Sequence[str] = (),
    *,
    balancer: Balancer | None = None,
    busy: bool = False,
) -> Plan:
    balancer = balancer or Balancer(me, DURATION, Clock())
    balancer.observe(ready, replicas)
    return balancer.plan(ready, replicas, set(held), busy=busy)


def test_replicas_starting_together_each_take_their_floor_of_the_free_leases() -> None:
    ready = leases({f"s{n}": None for n in range(6)})
    taken: list[str] = []
    for me in ("a", "b", "c"):
        plan = plan_for(me, ready, beats("a", "b", "c"))
        assert len(plan.take) == 2 and plan.steal is None and plan.give_up is None
        taken += [lease.shard_id for lease in plan.take]
    # Each replica prefers its own leases, so their conditional takes rarely collide.
    assert len(set(taken)) > 2


def test_the_last_lease_above_the_floor_goes_to_whoever_takes_it_first() -> None:
    owners: dict[str, str | None] = {f"s{n}": "abc"[n % 3] for n in range(6)} | {"s6": None}
    plan = plan_for("a", leases(owners), beats("a", "b", "c"), ["s0", "s3"])
    assert [lease.shard_id for lease in plan.take] == ["s6"]  # ceil(7 / 3) = 3


def test_a_replica_above_its_share_gives_exactly_one_lease_up_per_period() -> None:
    ready = leases({f"s{n}": "a" for n in range(6)})
    plan = plan_for("a", ready, beats("a", "b"), [f"s{n}" for n in range(6)])
    assert plan.give_up in {f"s{n}" for n in range(6)} and not plan.take
    # While that lease is being handed over, nothing else moves.
    assert plan_for("a", ready, beats("a", "b"), [f"s{n}" for n in range(6)], busy=True) == Plan()


def test_a_peer_below_the_floor_makes_only_the_most_loaded_replica_give_one_up() -> None:
    # 6 leases, 4 replicas: floor 1, ceil 2; d holds none.
    owners: dict[str, str | None] = {f"s{n}": "abc"[n % 3] for n in range(6)}
    ready = leases(owners)
    replicas = beats("a", "b", "c", "d")
    for me in ("a", "b", "c"):
        mine = [s for s, owner in owners.items() if owner == me]
        plan = plan_for(me, ready, replicas, mine)
        assert (plan.give_up is not None) == (me == "c"), me
    # The free lease that appears is left for d, not taken back by c (now at the floor).
    owners["s2"] = None
    assert plan_for("c", leases(owners), replicas, ["s5"]) == Plan()
    assert [lease.shard_id for lease in plan_for("d", leases(owners), replicas).take] == ["s2"]


def test_a_balanced_fleet_makes_no_move() -> None:
    owners: dict[str, str | None] = {f"s{n}": "abc"[n % 3] for n in range(6)}
    for me in ("a", "b", "c"):
        mine = [s for s, owner in owners.items() if owner == me]
        assert plan_for(me, leases(owners), beats("a", "b", "c"), mine) == Plan()


def test_a_stopping_replica_is_not_live_and_its_released_leases_are_taken_at_once() -> None:
    owners: dict[str, str | None] = {"s0": "a", "s1": "a", "s2": "b", "s3": "b", "s4": "c"}
    owners["s5"] = None  # c released one on its way out
    replicas = beats("a", "b", "c", stopping=["c"])
    plan = plan_for("a", leases(owners), replicas, ["s0", "s1"])
    assert [lease.shard_id for lease in plan.take] == ["s5"]  # ceil(6 / 2) = 3


def test_a_stale_heartbeat_is_not_live_but_an_owner_renewing_its_leases_is() -> None:
    clock = Clock()
    balancer = Balancer("a", DURATION, clock)
    ready = leases({"s0": "a", "s1": "b", "s2": "b", "s3": None})
    replicas = beats("a", "gone")
    balancer.observe(ready, replicas)
    clock.now += DURATION  # "gone" stopped beating; b never had a heartbeat item
    ready = [LeaseView(lease.shard_id, lease.owner, 2) for lease in ready]
    replicas = [ReplicaView("a", 2), ReplicaView("gone", 1)]
    balancer.observe(ready, replicas)
    # Live: a and b (renewing), so 4 leases make 2 each: a takes the free one.
    assert [lease.shard_id for lease in balancer.plan(ready, replicas, {"s0"}).take] == ["s3"]
    clock.now += FORGET_REPLICA_AFTER_DURATIONS * DURATION + 1
    balancer.observe(ready, replicas)
    assert [r.replica for r in balancer.gone(replicas)] == ["gone"]


def test_a_lease_the_table_says_is_ours_but_we_do_not_hold_is_free_to_take() -> None:
    ready = leases({"s0": "a", "s1": "b"})
    plan = plan_for("a", ready, beats("a", "b"))
    assert [lease.shard_id for lease in plan.take] == ["s0"]


def test_stealing_is_a_fallback_against_a_peer_that_never_gives_up() -> None:
    clock = Clock()
    balancer = Balancer("b", DURATION, clock)
    ready = leases({f"s{n}": "a" for n in range(4)})
    for step in range(STEAL_AFTER_DURATIONS * 3 + 1):
        # a keeps renewing all four and gives nothing up; b is short.
        ready = [LeaseView(lease.shard_id, "a", step + 1) for lease in ready]
        replicas = [ReplicaView("a", step + 1), ReplicaView("b", step + 1)]
        balancer.observe(ready, replicas)
        plan = balancer.plan(ready, replicas, set())
        if clock.now - 1000.0 < STEAL_AFTER_DURATIONS * DURATION:
            assert plan == Plan(), step
        clock.now += DURATION / 3
    assert plan.steal is not None and plan.steal.owner == "a" and not plan.take


# -- readers under a lease set -----------------------------------------------------------------


class FakeLeases:
    """A lease set the test drives: `grant`, `give_up`, `lose`. It counts how often the source
    asked about each shard: the source asks at every pass, so the count moving is the sign
    that a pass went by."""

    owner = "replica-a"
    exclusive = False
    handover_seconds = 2.0

    def __init__(self, *held: str) -> None:
        self.states: dict[str, LeaseState] = dict.fromkeys(held, "held")
        self.finished: set[str] = set()
        self.released: list[str] = []
        self.closed = False
        self.asked: Counter[str] = Counter()
        self._changed: Callable[[], None] = lambda: None

    def update(self, listing: Sequence[ShardInfo]) -> None:
        pass

    def state(self, shard_id: str) -> LeaseState | None:
        self.asked[shard_id] += 1
        return self.states.get(shard_id)

    async def run(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        await anyio.sleep_forever()

    async def release(self, shard_id: str) -> None:
        self.released.append(shard_id)
        self.states.pop(shard_id, None)

    async def aclose(self) -> None:
        self.closed = True

    def grant(self, shard_id: str) -> None:
        self.states[shard_id] = "held"
        self._changed()

    def give_up(self, shard_id: str) -> None:
        self.states[shard_id] = "releasing"
        self._changed()

    def lose(self, shard_id: str) -> None:
        self.states.pop(shard_id, None)
        self._changed()

    async def passes(self, shard_id: str, count: int = 2) -> None:
        """Wait until the source asked about `shard_id` `count` more times: that many passes
        over it went by, so whatever such a pass starts or stops has happened."""
        target = self.asked[shard_id] + count
        await eventually(lambda: self.asked[shard_id] >= target, timeout=5)


class JournalStore(MemoryStore):
    """Remembers every put in order; refuses puts for shards in `refuse` with LeaseLost after
    telling the lease set, as the lease-table store does."""

    def __init__(self, journal: list[Any], leases: FakeLeases) -> None:
        super().__init__()
        self.journal = journal
        self.leases = leases
        self.refuse: set[str] = set()

    async def put(self, mapping: str, stream_arn: str, shard_id: str, cp: Checkpoint) -> None:
        if shard_id in self.refuse:
            self.leases.lose(shard_id)
            raise LeaseLost(f"shard {shard_id}: the lease was taken by another instance")
        self.journal.append(("put", shard_id, cp))
        await super().put(mapping, stream_arn, shard_id, cp)


@dataclass
class Fleet:
    api: FakeApi
    settler: FakeSettler
    store: JournalStore
    leases: FakeLeases
    status: MappingStatus
    journal: list[Any]


@asynccontextmanager
async def reading(api: FakeApi, leases: FakeLeases, **mapping: Any) -> AsyncIterator[Fleet]:
    """A StreamSource over `api` reading what `leases` grants; stopped on exit."""
    journal: list[Any] = []
    store = JournalStore(journal, leases)
    original_release = leases.release

    async def release(shard_id: str) -> None:
        journal.append(("release", shard_id))
        await original_release(shard_id)

    leases.release = release  # type: ignore[method-assign]
    shutdown = Shutdown()
    context = stream_context(api, FakeSettler(), store, shutdown, leases, **mapping)
    status = context.status
    fleet = Fleet(api, context.settler, store, leases, status, journal)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(StreamSource(context, discovery_interval=0.05).run)
        try:
            yield fleet
        finally:
            shutdown.begin(5.0)


async def test_only_held_shards_are_read_and_a_granted_one_starts_at_its_checkpoint() -> None:
    api = FakeApi(
        [FakeShard(shard("a"), records(range(1, 6))), FakeShard(shard("b"), records(range(1, 9)))]
    )
    leases = FakeLeases("a")
    async with reading(api, leases) as fleet:
        await eventually(lambda: fleet.settler.processed("a") == [1, 2, 3, 4, 5])
        await leases.passes("b")  # considered, and not held
        assert fleet.settler.processed("b") == []
        assert "b" not in fleet.status.shards  # no reader was started for it
        assert fleet.status.shards["a"].owner == "replica-a"
        fleet.store.checkpoints["b"] = Checkpoint("5")  # where another instance stopped
        leases.grant("b")
        await eventually(lambda: fleet.settler.processed("b") == [6, 7, 8])
    assert ("b", StartAt("AFTER_SEQUENCE_NUMBER", "5")) in api.starts
    # Shutdown: each reader's final checkpoint, then its release.
    assert fleet.journal[-1][0] == "release" and leases.closed
    for shard_id in "ab":
        assert fleet.journal.index(("release", shard_id)) > max(
            i for i, entry in enumerate(fleet.journal) if entry[:2] == ("put", shard_id)
        )


async def test_a_lost_lease_stops_its_reader_at_once_and_writes_nothing_more() -> None:
    api = FakeApi(
        [FakeShard(shard("a"), records(range(1, 11), key=lambda s: "x" if s > 5 else "k"))]
    )
    leases = FakeLeases("a")
    async with reading(api, leases) as fleet:
        fleet.settler.blocked["x"] = anyio.Event()  # the second batch stays in flight
        await eventually(lambda: fleet.store.checkpoints.get("a") == Checkpoint("5"))
        await eventually(lambda: fleet.settler.active == 1)
        leases.lose("a")
        await eventually(lambda: "a" not in fleet.status.shards)
        fleet.settler.blocked["x"].set()
        # The in-flight call is over, and later passes did not start the shard again.
        await eventually(lambda: fleet.settler.active == 0)
        await leases.passes("a")
        assert fleet.store.checkpoints["a"] == Checkpoint("5")
        assert fleet.settler.processed("a") == [1, 2, 3, 4, 5]  # the in-flight batch dropped
    assert "a" not in leases.released  # not ours to release any more


async def test_a_lease_given_up_finishes_in_flight_then_checkpoints_then_releases() -> None:
    api = FakeApi(
        [FakeShard(shard("a"), records(range(1, 11), key=lambda s: "x" if s > 5 else "k"))]
    )
    leases = FakeLeases("a")
    async with reading(api, leases) as fleet:
        gate = fleet.settler.blocked["x"] = anyio.Event()
        await eventually(lambda: fleet.settler.active == 1)
        leases.give_up("a")
        await leases.passes("a", count=1)  # the source saw it and handed the reader back
        gate.set()
        await eventually(lambda: ("release", "a") in fleet.journal)
        assert fleet.journal[-2:] == [("put", "a", Checkpoint("10")), ("release", "a")]
        assert "a" not in fleet.status.shards


async def test_a_checkpoint_refused_for_a_lost_lease_stops_the_reader() -> None:
    api = FakeApi([FakeShard(shard("a"))])
    leases = FakeLeases("a")
    async with reading(api, leases) as fleet:
        await eventually(lambda: fleet.store.started is not None)  # first-start markers written
        fleet.store.refuse.add("a")
        api.shards["a"].records += records(range(1, 6))
        await eventually(lambda: fleet.settler.processed("a") == [1, 2, 3, 4, 5])
        await eventually(lambda: "a" not in fleet.status.shards)
        api.shards["a"].records += records(range(6, 9))
        await leases.passes("a")  # later passes did not start the shard again
        assert fleet.settler.processed("a") == [1, 2, 3, 4, 5]  # read no further
        assert "a" not in fleet.status.shards
    assert "a" not in leases.released


async def test_a_parent_finished_by_another_instance_lets_its_child_start() -> None:
    api = FakeApi(
        [
            FakeShard(shard("p", ending=3), records(range(1, 4))),
            FakeShard(shard("c", "p"), records(range(4, 7))),
        ]
    )
    leases = FakeLeases("c")
    async with reading(api, leases) as fleet:
        await leases.passes("p")  # the lineage was looked at: the parent is not ours
        assert fleet.settler.processed() == []  # the parent is not finished yet
        assert not fleet.status.shards  # so the child has no reader yet
        leases.finished.add("p")  # another replica read it to its end
        leases.grant("c")
        await eventually(lambda: fleet.settler.processed("c") == [4, 5, 6])
    assert fleet.settler.processed("p") == []


@pytest.mark.parametrize("exclusive", [True, False])
async def test_latest_is_used_only_when_no_other_instance_can_have_read_the_shard(
    exclusive: bool,
) -> None:
    api = FakeApi([FakeShard(shard("a"), records(range(1, 3)))])
    leases = FakeLeases("a")
    leases.exclusive = exclusive  # type: ignore[misc]
    async with reading(api, leases, starting_position="LATEST") as fleet:
        await eventually(lambda: any(sid == "a" for sid, _ in api.starts))
        started = fleet.store.started
    kind = api.starts[0][1]
    if exclusive:
        assert kind == StartAt("LATEST")
    else:
        assert kind == StartAt("AT_TIMESTAMP", timestamp=started)
