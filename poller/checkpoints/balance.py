"""Lease expiry and balance, as pure decisions over what one scan of the lease table showed.

Expiry follows the Kinesis Client Library: a lease (or a heartbeat) is judged by watching its
counter on this replica's own clock, never by comparing timestamps written by other hosts. A
counter seen unchanged for a lease duration is expired; an owned lease seen for the first time
counts as renewed at that moment, so a replica that just started waits a full duration before
taking a lease from an owner it has never watched.

Balance aims every live replica at floor(n / r) or ceil(n / r) of the n ready shards. Each scan
a replica takes free or expired leases up to its share, gives one up when it holds more than
its share, and, only as a fallback against a peer that stays over its share without giving
anything up, steals one. Giving up is graceful (the reader finishes its in-flight batches and
checkpoints before the lease is released), which is why it is preferred to stealing.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

# A peer must stay over its share this many lease durations (it gives one lease up per renewal
# period when it runs this code) before a short replica steals from it.
STEAL_AFTER_DURATIONS = 3
# A heartbeat unchanged for this many lease durations belongs to a replica long gone: its item
# may be deleted, so the table does not collect one item per restart forever.
FORGET_REPLICA_AFTER_DURATIONS = 10


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One ready shard's lease as the last scan showed it."""

    shard_id: str
    owner: str | None
    counter: int


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica's heartbeat item as the last scan showed it."""

    replica: str
    counter: int
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do this renewal period: leases to take, at most one to steal or to give up."""

    take: tuple[LeaseView, ...] = ()
    steal: LeaseView | None = None
    give_up: str | None = None


class Observer:
    """When each counter was last seen to change, on this replica's monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[int, float]] = {}

    def observe(self, key: str, counter: int, *, owned: bool) -> None:
        """Record the counter read for `key`; an unowned first sighting is already idle."""
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = (counter, self._clock() if owned else -math.inf)
        elif seen[0] != counter:
            self._seen[key] = (counter, self._clock())

    def idle(self, key: str) -> float:
        """Seconds since the counter last changed (infinite when never seen or unowned)."""
        seen = self._seen.get(key)
        return math.inf if seen is None else self._clock() - seen[1]

    def counter(self, key: str) -> int | None:
        """The counter last read for `key`."""
        seen = self._seen.get(key)
        return None if seen is None else seen[0]

    def retain(self, keys: Collection[str]) -> None:
        """Forget everything the last scan no longer showed."""
        for key in [k for k in self._seen if k not in keys]:
            del self._seen[key]


def score(replica: str, shard_id: str) -> int:
    """A per-replica order of shards (rendezvous hashing): replicas looking at the same free
    leases prefer different ones, so their conditional takes rarely collide."""
    return zlib.crc32(f"{replica}|{shard_id}".encode())


class Balancer:
    """Decides, scan after scan, which leases one replica takes, steals or gives up."""

    def __init__(
        self, me: str, duration: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.me = me
        self.duration = duration
        self._clock = clock
        self.leases = Observer(clock)
        self.replicas = Observer(clock)
        self._over_since: dict[str, float] = {}

    def observe(self, leases: Iterable[LeaseView], replicas: Iterable[ReplicaView]) -> None:
        """Feed one scan's counters (every lease, ready or not, and every heartbeat)."""
        lease_keys, replica_keys = set(), set()
        for lease in leases:
            self.leases.observe(lease.shard_id, lease.counter, owned=lease.owner is not None)
            lease_keys.add(lease.shard_id)
        for replica in replicas:
            self.replicas.observe(replica.replica, replica.counter, owned=True)
            replica_keys.add(replica.replica)
        self.leases.retain(lease_keys)
        self.replicas.retain(replica_keys)

    def expired(self, lease: LeaseView) -> bool:
        """Whether the lease's counter stood still for a whole lease duration."""
        return self.leases.idle(lease.shard_id) >= self.duration

    def gone(self, replicas: Iterable[ReplicaView]) -> list[ReplicaView]:
        """Heartbeats so old that their items may be deleted."""
        limit = FORGET_REPLICA_AFTER_DURATIONS * self.duration
        return [
            r for r in replicas if r.replica != self.me and self.replicas.idle(r.replica) > limit
        ]

    def plan(
        self,
        ready: Sequence[LeaseView],
        replicas: Sequence[ReplicaView],
        held: Collection[str],
        *,
        busy: bool = False,
    ) -> Plan:
        """This period's moves. `ready` are the leases of open shards whose parents are done
        (already observed), `held` what this replica holds, `busy` whether a lease it gave up
        is still being handed over (then nothing else moves: one at a time)."""
        me = self.me
        stopping = {r.replica for r in replicas if r.stopping}
        live = {
            r.replica
            for r in replicas
            if not r.stopping and self.replicas.idle(r.replica) < self.duration
        }
        available: list[LeaseView] = []
        counts: Counter[str] = Counter()
        for lease in ready:
            if lease.shard_id in held:
                counts[me] += 1
            elif lease.owner is None or lease.owner == me or self.expired(lease):
                # A lease the table says is ours but we do not hold is one whose take answer
                # was lost: it is free to take again.
                available.append(lease)
            elif lease.owner not in stopping:
                # An owner renewing a lease is alive, heartbeat or not (KCL counts workers so).
                counts[lease.owner] += 1
                live.add(lease.owner)
        live.add(me)
        if not ready:
            return Plan()
        floor, ceil = len(ready) // len(live), -(-len(ready) // len(live))
        short = {r for r in live if counts[r] < floor}
        self._track_over(live, counts, floor, ceil, short)
        if busy:
            return Plan()
        mine = counts[me]
        others_short = bool(short - {me})
        most_loaded = max(live, key=lambda r: (counts[r], r))
        if mine > ceil or (mine > floor and others_short and most_loaded == me):
            ours = [lease.shard_id for lease in ready if lease.shard_id in held]
            return Plan(give_up=max(ours, key=lambda shard: score(me, shard)))
        # While a peer is below the floor, free leases are left for it.
        cap = floor if others_short else ceil
        if mine < cap and available:
            available.sort(key=lambda lease: score(me, lease.shard_id))
            return Plan(take=tuple(available[: cap - mine]))
        if mine < floor and not available:
            return Plan(steal=self._steal(ready, counts, floor))
        return Plan()

    def _track_over(
        self, live: set[str], counts: Counter[str], floor: int, ceil: int, short: set[str]
    ) -> None:
        now = self._clock()
        for replica in live:
            over = counts[replica] > ceil or (counts[replica] > floor and bool(short - {replica}))
            if over:
                self._over_since.setdefault(replica, now)
            else:
                self._over_since.pop(replica, None)
        for replica in [r for r in self._over_since if r not in live]:
            del self._over_since[replica]

    def _steal(
        self, ready: Sequence[LeaseView], counts: Counter[str], floor: int
    ) -> LeaseView | None:
        """One lease of the most loaded peer that stayed over its share for long (a fallback:
        a peer running this code gives leases up by itself, gracefully)."""
        now = self._clock()
        patience = STEAL_AFTER_DURATIONS * self.duration
        victims = [
            replica
            for replica, since in self._over_since.items()
            if replica != self.me and counts[replica] > floor and now - since >= patience
        ]
        if not victims:
            return None
        victim = max(victims, key=lambda r: (counts[r], r))
        theirs = [lease for lease in ready if lease.owner == victim]
        return min(theirs, key=lambda lease: score(self.me, lease.shard_id), default=None)
