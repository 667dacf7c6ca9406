"""A stretch of one shard, read and run through a mapping's engine: what `poller replay` and
`poller redrive` share.

The engine is the mapping's own, built by the same wiring functions as `poller run`: its
filters, its target, `stream_settler` (retries, bisect, on-failure) and the batcher. Two things
differ, as the commands' contract says: no record-age limit (every record read again is old by
definition) and no batching window (the records are all there already); batches are plain, with
no tumbling-window fields. The mapping's checkpoints are never read nor written, so a command
runs beside the live daemon.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TextIO

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS
from poller.aws.identity import caller_identity
from poller.config.settings import MappingSettings, Settings
from poller.engine.batcher import Batcher, BatchLimits
from poller.engine.destinations import destination_for
from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.engine.settle import GiveUp, History, Settler
from poller.filtering.filter_set import FilterSet
from poller.ops.commands.tip import GAP_PAUSE, Tip
from poller.ops.metrics import Metrics
from poller.ops.status import MappingStatus
from poller.retry import SOURCE_CALL, Backoff
from poller.sources.streams.conversion import convert
from poller.sources.streams.shards import ShardApi, StartAt, read_error_kind
from poller.wiring import shard_api, stream_settler, target_for

EXIT_FATAL = 1
EXIT_USAGE = 2
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

# Reads of a shard that may fail in a row (throttled, iterator expired) before the command does.
_READ_ATTEMPTS = 8


class CommandError(Exception):
    """What stops a command, said to the user; `code` is its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def run_reporting(
    command: str,
    main: Callable[[Settings, argparse.Namespace, TextIO], Awaitable[int]],
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO | None,
) -> int:
    """Run a command's `main`; its exit code, a CommandError said on stderr as
    `poller COMMAND: ...`, Ctrl-C as exit 130 (no traceback)."""
    try:
        return anyio.run(main, settings, args, out or sys.stdout)
    except CommandError as exc:
        sys.stderr.write(f"poller {command}: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write(f"poller {command}: interrupted\n")
        return INTERRUPTED


def stream_mapping(settings: Settings, name: str, command: str) -> MappingSettings:
    """The configuration's stream mapping `name`; CommandError (exit 2) naming what is wrong."""
    known = {m.name: m for m in settings.mappings}
    mapping = known.get(name)
    if mapping is None:
        names = ", ".join(known) or "none"
        raise CommandError(f"no mapping {name!r} in the configuration (its mappings: {names})")
    if not mapping.source_arn.is_stream:
        raise CommandError(
            f"mapping {name} reads an SQS queue: `poller {command}` works on Kinesis and "
            "DynamoDB stream mappings only"
        )
    return mapping


def warn_endless_retries(mapping: MappingSettings, command: str, left: str) -> None:
    """Say on stderr, before it starts, that a command on this mapping may never end: with
    `maximum_retry_attempts: -1` only the record age limit ends a failing batch's retries, and
    a command has none. `left` says what Ctrl-C leaves."""
    if mapping.maximum_retry_attempts != -1:
        return
    sys.stderr.write(
        f"poller {command}: warning: mapping {mapping.name} retries a failing batch without end "
        "(maximum_retry_attempts: -1, and the record age limit does not apply here): a record "
        f"the function keeps failing holds the command there until Ctrl-C, which stops it; "
        f"{left}\n"
    )


@dataclass
class Tally:
    """What became of the records a command read."""

    read: int = 0
    filtered: int = 0
    delivered: int = 0
    sent_on_failure: int = 0
    dropped: int = 0

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one."""
        for item in dataclasses.fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def summary(self) -> str:
        """The counts in words."""
        return (
            f"{self.read} read, {self.filtered} filtered out, {self.delivered} delivered, "
            f"{self.sent_on_failure} sent on failure, {self.dropped} dropped"
        )


@dataclass(eq=False)
class _Counting:
    """The mapping's give-up step, counting what it sends on failure or drops into the tally
    of the shard the records came from (shards are delivered side by side)."""

    inner: GiveUp[StreamRecord]
    drops: bool  # no on-failure destination: what is given up is dropped
    tallies: dict[str | None, Tally] = dataclasses.field(default_factory=dict)

    async def __call__(
        self,
        records: Sequence[StreamRecord],
        *,
        condition: str,
        reason: str,
        history: History,
        scope: str | None,
    ) -> bool:
        settled = await self.inner(
            records, condition=condition, reason=reason, history=history, scope=scope
        )
        tally = self.tallies.setdefault(scope, Tally())
        if settled and self.drops:
            tally.dropped += len(records)
        elif settled:
            tally.sent_on_failure += len(records)
        return settled


@dataclass
class RangeEngine:
    """One mapping's engine, for records read by a command; `tally` counts every run."""

    mapping: MappingSettings
    api: ShardApi
    settler: Settler[StreamRecord]
    filters: FilterSet
    counting: _Counting
    tally: Tally = dataclasses.field(default_factory=Tally)
    function_arn: str = ""  # the target's, as on-failure records name it

    def reads(
        self,
        shard_id: str,
        start: StartAt,
        *,
        before: Callable[[StreamRecord], bool],
        skip_before: float | None = None,
    ) -> AsyncGenerator[list[tuple[StreamRecord, bool]], None]:
        """The shard's records from `start`, a read at a time, each with whether the filters
        keep it; they end at the first record `before` refuses, at the shard's end, or at its
        tip (`Tip`: on DynamoDB, a run of empty reads)."""
        return _reads(self, shard_id, start, before, skip_before)

    async def deliver(self, shard_id: str, records: Sequence[StreamRecord]) -> Tally:
        """Settle `records` (kept by the filters, in shard order) in batches of the mapping's
        batch size, one batch at a time; what became of them. Raises `Stopped` if
        interrupted. Several shards may be delivered at once, one call per shard at a time."""
        counts = self.counting.tallies[shard_id] = Tally()
        batcher: Batcher[StreamRecord] = Batcher(BatchLimits(self.mapping.batch_size, 0))
        for record in records:
            batcher.add(record, 0.0)
        acknowledged = 0

        async def acknowledge(run: Sequence[StreamRecord]) -> None:
            nonlocal acknowledged
            acknowledged += len(run)

        while len(batcher):
            await self.settler.settle(batcher.take(), acknowledge, scope=shard_id)
        del self.counting.tallies[shard_id]
        # A run given up is acknowledged too, once sent on failure (or dropped).
        counts.delivered = acknowledged - counts.sent_on_failure - counts.dropped
        self.tally.add(counts)
        return counts


async def _reads(
    engine: RangeEngine,
    shard_id: str,
    start: StartAt,
    before: Callable[[StreamRecord], bool],
    skip_before: float | None,
) -> AsyncGenerator[list[tuple[StreamRecord, bool]], None]:
    api = engine.api
    iterator: str | None = await api.iterator(shard_id, start)
    last: int | None = None
    backoff = Backoff(SOURCE_CALL)
    tip = Tip(api)
    while iterator:
        try:
            result = await api.read(iterator, api.max_records)
        except AWS_ERRORS as exc:
            # Throttled (the daemon shares the shard's read budget) or an iterator that
            # expired while a batch was being delivered: wait, or get a new one, and go on.
            kind = read_error_kind(exc)
            if kind not in ("throttled", "expired") or backoff.attempts >= _READ_ATTEMPTS:
                raise
            delay = backoff.next()
            if kind == "expired":
                resume = start if last is None else StartAt("AFTER_SEQUENCE_NUMBER", str(last))
                iterator = await api.iterator(shard_id, resume)
            else:
                await anyio.sleep(delay)
            continue
        backoff.reset()
        conversion = await convert(
            api,
            result.records,
            shard_id=shard_id,
            filters=engine.filters,
            after=last,
            skip_before=skip_before,
        )
        taken: list[tuple[StreamRecord, bool]] = []
        ended = False
        for converted in conversion.records:
            record = converted.record
            last = record.sequence
            if skip_before is not None and record.arrival < skip_before:
                continue
            if not before(record):
                ended = True
                break
            taken.append((record, converted.kept))
        engine.tally.read += len(taken)
        engine.tally.filtered += sum(1 for _, kept in taken if not kept)
        if taken:
            yield taken
        if ended or tip.reached(result):
            return
        iterator = result.next_iterator
        if not result.records:
            await anyio.sleep(GAP_PAUSE)  # behind, but in a gap: stay within the read budget


async def _identity(settings: Settings, mapping: MappingSettings, clients: AwsClients) -> str:
    """Kinesis events' invokeIdentityArn, as the daemon resolves it."""
    if mapping.source_arn.kind != "kinesis":
        return ""
    if settings.aws.invoke_identity_arn:
        return settings.aws.invoke_identity_arn
    return await caller_identity(clients, mapping.source_arn, warn=False)


@asynccontextmanager
async def range_engine(
    settings: Settings, mapping: MappingSettings, clients: AwsClients, shutdown: Shutdown
) -> AsyncIterator[RangeEngine]:
    """The mapping's engine, its target entered for the duration."""
    try:
        target = target_for(mapping, clients, settings.tuning)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    api = await shard_api(
        mapping.source_arn,
        clients,
        invoke_identity_arn=await _identity(settings, mapping, clients),
    )
    metrics = Metrics().for_mapping(mapping.name)
    status = MappingStatus(mapping.name, mapping.uuid, mapping.source, target.description, metrics)
    async with target:
        destination = destination_for(mapping, clients)
        settler = stream_settler(
            mapping,
            Invoker(target, metrics, status, shutdown=shutdown),
            kind=api.kind,
            destination=destination,
            shutdown=shutdown,
        )
        counting = _Counting(settler.give_up, drops=destination is None)
        # Every record read again is old by definition: the age limit would give them all up.
        plan = dataclasses.replace(settler.plan, max_record_age=-1)
        settler = dataclasses.replace(settler, plan=plan, give_up=counting)
        filters = FilterSet.compile(mapping.filter_patterns, source=api.kind)
        yield RangeEngine(
            mapping, api, settler, filters, counting, function_arn=target.function_arn
        )


class Progress:
    """One line on stderr, rewritten in place, when stderr is a terminal; silent otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._on = self._stream.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        """Replace the line with `text`."""
        if self._on:
            self._stream.write("\r" + text.ljust(self._width))
            self._stream.flush()
            self._width = max(self._width, len(text))  # what the line shows, padding included

    def done(self) -> None:
        """End the line, so what follows starts on its own."""
        if self._on and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
