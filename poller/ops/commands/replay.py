"""`poller replay`: the records a stream received in a time range, delivered again to the
mapping's target through the mapping's engine (`ranges`), beside the live daemon: the mapping's
checkpoints are never read nor moved."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TextIO

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe
from poller.checkpoints.lineage import ShardInfo, startable
from poller.config.settings import MappingSettings, Settings
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.events.invocation import iso_timestamp
from poller.ops.commands.ranges import (
    EXIT_FATAL,
    CommandError,
    Progress,
    RangeEngine,
    Tally,
    range_engine,
    run_reporting,
    stream_mapping,
    warn_endless_retries,
)
from poller.ops.commands.retention import check_retention
from poller.retry import Stopped
from poller.sources.streams.shards import TRIM_HORIZON, StartAt


def run_command(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `poller replay`; its exit code, every problem on stderr."""
    # Ctrl-C: what was delivered stays delivered; the rest of the range is simply not replayed.
    return run_reporting("replay", replay, settings, args, out)


async def replay(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Deliver the range again; 0 when every record was delivered, filtered out or sent on
    failure, 1 when some were dropped."""
    mapping = stream_mapping(settings, args.mapping, "replay")
    warn_endless_retries(mapping, "replay", "what was not delivered by then is not replayed")
    started = time.time()
    since = float(args.from_)
    until = started if args.to is None else float(args.to)
    if until <= since:
        raise CommandError(
            f"--to {iso_timestamp(until)} is not after --from {iso_timestamp(since)}: "
            "the range is empty"
        )
    async with AwsClients(settings.aws) as clients, _engine(settings, mapping, clients) as engine:
        try:
            await check_retention(mapping, clients, since, started, "--from")
            shards = _chosen(mapping, lineage_order(await engine.api.list_shards()), args.shard)
            counts = await replay_shards(engine, shards, since, until, Progress())
            for shard in shards:
                out.write(f"{mapping.name} {shard.shard_id}: {counts[shard.shard_id].summary()}\n")
        except AWS_ERRORS as exc:
            what = f"mapping {mapping.name}: stream {mapping.source_arn.arn}"
            problem = describe(exc, what=what, permission=engine.api.read_permission)
            raise CommandError(problem.message, EXIT_FATAL) from None
        except Stopped as exc:
            raise CommandError(f"interrupted ({exc})", EXIT_FATAL) from None
    total = engine.tally
    out.write(
        f"replayed {mapping.name} from {iso_timestamp(since)} to {iso_timestamp(until)}: "
        f"{total.summary()}\n"
    )
    return EXIT_FATAL if total.dropped else 0


def _engine(
    settings: Settings, mapping: MappingSettings, clients: AwsClients
) -> AbstractAsyncContextManager[RangeEngine]:
    return range_engine(settings, mapping, clients, Shutdown())


async def replay_shards(
    engine: RangeEngine,
    shards: Sequence[ShardInfo],
    since: float,
    until: float,
    progress: Progress,
) -> dict[str, Tally]:
    """Replay every shard side by side, each child once its parents are done (so each key's
    records arrive in order, as the mapping delivers them); what became of each shard's."""
    done = {shard.shard_id: anyio.Event() for shard in shards}
    counts = {shard.shard_id: Tally() for shard in shards}

    def show() -> None:
        finished = sum(event.is_set() for event in done.values())
        progress.show(f"{finished}/{len(shards)} shards: {engine.tally.summary()}")

    async def one(shard: ShardInfo) -> None:
        for parent in shard.parents:
            if parent in done:
                await done[parent].wait()
        await replay_shard(engine, shard.shard_id, since, until, counts[shard.shard_id], show)
        done[shard.shard_id].set()
        show()

    try:
        async with anyio.create_task_group() as tasks:
            for shard in shards:
                tasks.start_soon(one, shard)
    except ExceptionGroup as group:
        # One shard's failure stops the others; the command reports the first one.
        raise _first(group) from None
    finally:
        progress.done()
    return counts


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def replay_shard(
    engine: RangeEngine,
    shard_id: str,
    since: float,
    until: float,
    counts: Tally,
    show: Callable[[], None] = lambda: None,
) -> Tally:
    """Deliver the shard's records that arrived from `since` (inclusive) to `until`
    (exclusive), in batches of the mapping's batch size."""
    api = engine.api
    if api.supports_at_timestamp:
        start, skip_before = StartAt("AT_TIMESTAMP", timestamp=since), since
    else:
        # DynamoDB Streams has no AT_TIMESTAMP: read from the horizon and skip what is older.
        # Creation times are whole seconds (rounded down), so the start second is kept.
        start, skip_before = TRIM_HORIZON, math.floor(since)
    waiting: list[StreamRecord] = []
    size = engine.mapping.batch_size

    def before_until(record: StreamRecord) -> bool:
        return record.arrival < until

    reads = engine.reads(shard_id, start, before=before_until, skip_before=skip_before)
    async for taken in reads:
        counts.read += len(taken)
        counts.filtered += sum(1 for _, kept in taken if not kept)
        waiting.extend(record for record, kept in taken if kept)
        whole = len(waiting) - len(waiting) % size
        if whole:
            counts.add(await engine.deliver(shard_id, waiting[:whole]))
            del waiting[:whole]
        show()
    if waiting:
        counts.add(await engine.deliver(shard_id, waiting))
    return counts


def lineage_order(listing: Sequence[ShardInfo]) -> list[ShardInfo]:
    """The shards with every parent before its children (as a mapping reads them)."""
    ordered: list[ShardInfo] = []
    done: set[str] = set()
    pending = list(listing)
    while pending:
        ready = startable(pending, done, ()) or pending[:1]  # a cycle would be the stream's bug
        ordered.extend(ready)
        done.update(shard.shard_id for shard in ready)
        pending = [shard for shard in pending if shard.shard_id not in done]
    return ordered


def _chosen(mapping: MappingSettings, shards: list[ShardInfo], name: str | None) -> list[ShardInfo]:
    if name is None:
        return shards
    chosen = [shard for shard in shards if shard.shard_id == name]
    if not chosen:
        names = ", ".join(shard.shard_id for shard in shards) or "none"
        raise CommandError(
            f"mapping {mapping.name}: stream {mapping.source_arn.arn} has no shard {name} "
            f"(its shards: {names})"
        )
    return chosen
