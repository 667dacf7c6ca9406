"""One mapping's lease loop on the lease table: heartbeat, renew, scan, take, balance, release.

Every renewal period (a third of `lease_duration_seconds`) the loop writes this replica's
heartbeat, renews each lease it holds, reads the mapping's partition, creates lease items for
newly listed shards, and lets the Balancer decide what to take, steal or give up. The stream
source asks `state(shard)` which readers may run; a checkpoint write goes through the store,
conditional on the token of the take (`poller.checkpoints.dynamodb`).

A lease whose renewal did not succeed for two renewal periods is dropped here before any peer
can judge it expired (peers wait a whole duration from when they saw its counter move), so two
replicas never knowingly read one shard at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from poller.aws import calls
from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints.balance import Balancer, LeaseView, ReplicaView
from poller.checkpoints.base import LeaseState
from poller.checkpoints.lease_items import (
    Item,
    LeaseTableError,
    is_conditional_failure,
    partition,
    position_of,
    replica_key,
)
from poller.checkpoints.lease_table import (
    LeaseTable,
)
from poller.checkpoints.lineage import ShardInfo, startable
from poller.engine.lifecycle import Shutdown
from poller.ops.status import LEASES, MappingStatus, ShardStatus

log = logging.getLogger("poller.leases")

_PERMISSION = (
    "dynamodb:GetItem, PutItem, UpdateItem, DeleteItem and Query on the lease table "
    "(deploy/iam/lease-table.json)"
)
_ERRORS: tuple[type[BaseException], ...] = (*AWS_ERRORS, LeaseTableError)
# Renewals run concurrently, but not all at once against a table with many shards.
_RENEWALS_IN_FLIGHT = 16


@dataclass
class _Held:
    token: str
    renewed_at: float  # monotonic: when the take or the last successful renewal was sent


@dataclass(frozen=True, slots=True)
class _Scanned:
    view: LeaseView
    finished: bool
    checkpoint: str | None
    has_parents: bool


class LeaseManager:
    """ShardLeases over the lease table for one mapping on one stream."""

    exclusive = False

    def __init__(
        self,
        table: LeaseTable,
        *,
        mapping: str,
        stream_arn: str,
        replica: str,
        duration: float,
        status: MappingStatus,
        shutdown: Shutdown,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.owner = replica
        self.handover_seconds = duration
        self.finished: set[str] = set()
        self._table = table
        self._mapping = mapping
        self._pk = partition(mapping, stream_arn)
        self._duration = duration
        self._period = duration / 3
        self._status = status
        self._shutdown = shutdown
        self._clock = clock
        self._wall = wall
        self._held: dict[str, _Held] = {}
        self._releasing: str | None = None
        self._listing: dict[str, ShardInfo] = {}
        self._balancer = Balancer(replica, duration, clock)
        self._changed: Callable[[], None] = lambda: None
        self._problem: str | None = None
        self._extra = {"mapping": mapping}

    # -- what the stream source asks -----------------------------------------------------------

    def update(self, listing: Sequence[ShardInfo]) -> None:
        """The shards as last listed: lease items are kept for these."""
        self._listing = {shard.shard_id: shard for shard in listing}

    def state(self, shard_id: str) -> LeaseState | None:
        """What this replica may do: "held" (read it), "releasing" (finish, hand over), None."""
        if shard_id not in self._held:
            return None
        return "releasing" if shard_id == self._releasing else "held"

    def token(self, shard_id: str) -> str | None:
        """The token of the take, which every checkpoint write is conditional on."""
        held = self._held.get(shard_id)
        return None if held is None else held.token

    def held(self) -> list[str]:
        """The shards whose leases this replica holds."""
        return sorted(self._held)

    def lost(self, shard_id: str, why: str) -> None:
        """Forget a lease another replica owns now; its reader is stopped."""
        if self._drop(shard_id):
            log.warning(
                "lost the lease on shard %s (%s); stopping its reader and dropping its "
                "buffered records",
                shard_id,
                why,
                extra={**self._extra, "shard": shard_id},
            )

    async def release(self, shard_id: str) -> None:
        """Give a lease back after its reader's final checkpoint, so a peer takes it now."""
        held = self._held.pop(shard_id, None)
        if self._releasing == shard_id:
            self._releasing = None
        self._count()
        if held is None:
            return
        extra = {**self._extra, "shard": shard_id}
        try:
            with anyio.fail_after(self._duration):
                await self._table.release(self._pk, shard_id, held.token)
        except AWS_ERRORS as exc:
            if isinstance(exc, TimeoutError):
                calls.failed(calls.CHECKPOINT)  # cut short here, so no client saw it fail
            if not is_conditional_failure(exc):
                log.warning(
                    "could not release the lease on shard %s (%s); it expires within %.0fs",
                    shard_id,
                    type(exc).__name__,
                    self._duration,
                    extra=extra,
                )
            return
        log.info("released the lease on shard %s", shard_id, extra=extra)

    async def aclose(self) -> None:
        """Release what is still held and delete this replica's heartbeat (shielded, bounded)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._duration):
            for shard_id in list(self._held):
                await self.release(shard_id)
            try:
                await self._table.delete(self._pk, replica_key(self.owner))
            except AWS_ERRORS as exc:
                log.debug("heartbeat not deleted: %s", exc, extra=self._extra)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, changed: Callable[[], None]) -> None:
        """Renew, scan and balance every renewal period until cancelled."""
        self._changed = changed
        log.info(
            "keeping leases in table %s as replica %s (lease duration %.1fs)",
            self._table.name,
            self.owner,
            self._duration,
            extra=self._extra,
        )
        first = True
        while True:
            began = self._clock()
            stopping = self._shutdown.is_stopping
            # A hung request must not hold back the next period's renewals.
            with anyio.move_on_after(self._duration) as hung:
                # The first pass only announces and looks: replicas starting together see each
                # other's heartbeats before anyone takes a lease.
                await self._tick(balance=not first, stopping=stopping)
            if hung.cancelled_caught:
                calls.failed(calls.CHECKPOINT)  # the request cut short failed, unseen by its client
            first = False
            self._expire_unrenewed()
            if self._shutdown.is_stopping and not stopping:
                continue  # shutdown began during this pass: tell the peers at once
            with anyio.move_on_after(max(0.0, self._period - (self._clock() - began))):
                if stopping:
                    await anyio.sleep_forever()
                else:
                    await self._shutdown.stopping.wait()

    async def _tick(self, *, balance: bool, stopping: bool) -> None:
        try:
            # A stopping replica no longer counts as live, so peers take what it releases.
            await self._table.heartbeat(self._pk, self.owner, stopping=stopping, now=self._wall())
            await self._renew_all()
            leases, replicas = _parse(await self._table.lease_loop_items(self._pk))
            self.finished = {shard for shard, lease in leases.items() if lease.finished}
            self._balancer.observe((lease.view for lease in leases.values()), replicas)
            await self._create_missing(leases)
            self._publish(leases)
            if balance and not stopping:
                await self._balance(leases, replicas)
            await self._forget(replicas)
        except _ERRORS as exc:
            self._failed(exc)
            return
        if self._problem is not None:
            self._problem = None
            self._status.recovered(LEASES)

    async def _renew_all(self) -> None:
        errors: list[BaseException] = []
        limiter = anyio.CapacityLimiter(_RENEWALS_IN_FLIGHT)

        async def renew(shard_id: str, held: _Held) -> None:
            async with limiter:
                sent = self._clock()
                try:
                    await self._table.renew(self._pk, shard_id, held.token, self._wall())
                except AWS_ERRORS as exc:
                    if is_conditional_failure(exc):
                        self.lost(shard_id, "another replica took it")
                    else:
                        errors.append(exc)
                    return
                held.renewed_at = sent

        async with anyio.create_task_group() as tasks:
            for shard_id, held in list(self._held.items()):
                tasks.start_soon(renew, shard_id, held)
        if errors:
            raise errors[0]

    def _expire_unrenewed(self) -> None:
        # Detected at most one period late, so stopping after two periods without a renewal
        # stops the reader before a peer (waiting a whole duration) may take the lease.
        limit = self._duration - self._period
        now = self._clock()
        for shard_id, held in list(self._held.items()):
            if now - held.renewed_at >= limit and self._drop(shard_id):
                log.warning(
                    "lease on shard %s not renewed for %.1fs; stopping its reader (a peer may "
                    "take it over)",
                    shard_id,
                    now - held.renewed_at,
                    extra={**self._extra, "shard": shard_id},
                )

    async def _create_missing(self, leases: Mapping[str, _Scanned]) -> None:
        for shard in self._listing.values():
            lease = leases.get(shard.shard_id)
            if lease is None or (shard.parents and not lease.has_parents):
                await self._table.ensure_lease(self._pk, shard.shard_id, shard.parents)

    async def _balance(self, leases: Mapping[str, _Scanned], replicas: list[ReplicaView]) -> None:
        ready_ids = {
            shard.shard_id
            for shard in startable(self._listing.values(), self.finished, ())
            if shard.shard_id in leases
        }
        ready = [leases[shard].view for shard in sorted(ready_ids)]
        plan = self._balancer.plan(ready, replicas, self._held, busy=self._releasing is not None)
        for lease in plan.take:
            await self._take(lease, stolen=False)
        if plan.steal is not None:
            await self._take(plan.steal, stolen=True)
        if plan.give_up is not None:
            self._releasing = plan.give_up
            log.info(
                "giving up the lease on shard %s to balance %d ready shard(s) across replicas",
                plan.give_up,
                len(ready),
                extra={**self._extra, "shard": plan.give_up},
            )
            self._changed()

    async def _take(self, lease: LeaseView, *, stolen: bool) -> None:
        token = secrets.token_hex(8)
        sent = self._clock()
        try:
            await self._table.take(
                self._pk,
                lease.shard_id,
                counter=lease.counter,
                owner=self.owner,
                token=token,
                now=self._wall(),
            )
        except AWS_ERRORS as exc:
            if is_conditional_failure(exc):
                return  # a peer moved first; the next scan shows who
            raise
        self._held[lease.shard_id] = _Held(token, sent)
        self._count()
        extra = {**self._extra, "shard": lease.shard_id}
        if lease.owner is not None and lease.owner != self.owner:
            self._status.metrics.lease_takeovers.inc()
            why = "stolen to balance the fleet" if stolen else "its lease expired"
            log.info(
                "took over shard %s from %s: %s", lease.shard_id, lease.owner, why, extra=extra
            )
        else:
            log.info("took the lease on shard %s", lease.shard_id, extra=extra)
        self._changed()

    async def _forget(self, replicas: list[ReplicaView]) -> None:
        for replica in self._balancer.gone(replicas):
            try:
                await self._table.delete(
                    self._pk, replica_key(replica.replica), counter=replica.counter
                )
            except AWS_ERRORS as exc:
                if not is_conditional_failure(exc):
                    raise

    # -- bookkeeping ---------------------------------------------------------------------------

    def _drop(self, shard_id: str) -> bool:
        if self._held.pop(shard_id, None) is None:
            return False
        if self._releasing == shard_id:
            self._releasing = None
        self._count()
        self._changed()
        return True

    def _count(self) -> None:
        self._status.metrics.leases_owned.set(len(self._held))

    def _publish(self, leases: Mapping[str, _Scanned]) -> None:
        """Show on /status who owns the open shards this replica does not read."""
        shards = self._status.shards
        for shard_id, lease in leases.items():
            current = shards.get(shard_id)
            if shard_id in self._held or (current is not None and current.owner == self.owner):
                continue  # a reader of ours owns that entry
            if lease.finished or shard_id not in self._listing:
                shards.pop(shard_id, None)
            else:
                shards[shard_id] = ShardStatus(
                    shard_id, owner=lease.view.owner, checkpoint=lease.checkpoint
                )

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, LeaseTableError):
            message = f"mapping {self._mapping}: {exc}"
        else:
            what = f"mapping {self._mapping}: lease table {self._table.name}"
            message = describe(exc, what=what, permission=_PERMISSION).message
        if message != self._problem:
            log.error("%s (retrying every %.1fs)", message, self._period, extra=self._extra)
        self._problem = message
        self._status.degraded(LEASES, message)


def _parse(items: Sequence[Item]) -> tuple[dict[str, _Scanned], list[ReplicaView]]:
    # Reads only lease_table.LEASE_LOOP_ATTRIBUTES (the Query projects them); other items
    # (`started`, window chunks) are not leases.
    leases: dict[str, _Scanned] = {}
    replicas: list[ReplicaView] = []
    for item in items:
        sk = str(item["sk"]["S"])
        counter = int(item.get("counter", {}).get("N", "0"))
        if sk.startswith("shard|"):
            shard_id = sk.removeprefix("shard|")
            checkpoint = position_of(item)
            owner = item.get("owner", {}).get("S")
            leases[shard_id] = _Scanned(
                LeaseView(shard_id, None if owner is None else str(owner), counter),
                finished=item.get("state", {}).get("S") == "finished",
                checkpoint=None if checkpoint is None else checkpoint.sequence_number,
                has_parents="parents" in item,
            )
        elif sk.startswith("replica|"):
            stopping = bool(item.get("stopping", {}).get("BOOL", False))
            replicas.append(ReplicaView(sk.removeprefix("replica|"), counter, stopping))
    return leases, replicas
