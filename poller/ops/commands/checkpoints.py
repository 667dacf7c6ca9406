"""`poller checkpoints list` and `poller checkpoints set`: stored stream positions, shown and
moved by an operator (the backends' side is `poller.checkpoints.positions`)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import TextIO

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, error_code
from poller.checkpoints.base import Checkpoint, StoreUnusable
from poller.checkpoints.positions import PositionHeld, Positions, Stored, open_positions
from poller.config.settings import MappingSettings, Settings
from poller.events.invocation import iso_timestamp
from poller.events.streams import stream_record
from poller.ops.commands.ranges import CommandError, run_reporting, stream_mapping
from poller.ops.commands.retention import check_retention
from poller.ops.commands.text import NONE, cell, table
from poller.ops.commands.tip import GAP_PAUSE, Tip
from poller.sources.streams.shards import TRIM_HORIZON, ShardApi, StartAt
from poller.wiring import shard_api

EXIT_FATAL = 1
EXIT_USAGE = 2


def run_command(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `checkpoints list` or `checkpoints set`; its exit code, every problem on stderr."""
    return run_reporting(f"checkpoints {args.action}", _run, settings, args, out)


async def _run(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    stored = settings.checkpoints
    async with AwsClients(settings.aws) as clients:
        positions = open_positions(
            stored.backend,
            path=stored.path,
            table=stored.table,
            lease_duration=stored.lease_duration_seconds,
            clients=clients,
        )
        try:
            if args.action == "list":
                await list_positions(positions, _stream_mappings(settings, args.mapping), out)
            else:
                await set_positions(
                    positions, clients, _one_mapping(settings, args.mapping), args, out
                )
        except PositionHeld as exc:
            raise CommandError(str(exc), EXIT_FATAL) from None
        except StoreUnusable as exc:
            raise CommandError(str(exc), EXIT_FATAL) from None
        except AWS_ERRORS as exc:
            raise CommandError(
                f"{error_code(exc) or type(exc).__name__}: {exc}", EXIT_FATAL
            ) from None
        finally:
            await positions.store.aclose()
    return 0


# -- which mappings ----------------------------------------------------------------------------


def _stream_mappings(settings: Settings, name: str | None) -> list[MappingSettings]:
    if name is not None:
        return [_one_mapping(settings, name)]
    return [m for m in settings.mappings if m.source_arn.is_stream]


def _one_mapping(settings: Settings, name: str) -> MappingSettings:
    return stream_mapping(settings, name, "checkpoints")


# -- list --------------------------------------------------------------------------------------


async def list_positions(
    positions: Positions, mappings: Sequence[MappingSettings], out: TextIO
) -> None:
    """A row per stored shard position of `mappings`."""
    header = ["MAPPING", "SHARD", "SEQUENCE", "FINISHED"]
    if positions.leases:
        header += ["OWNER", "LEASE EXPIRES"]
    rows: list[list[str]] = []
    for mapping in mappings:
        stored = await positions.read(mapping.name, mapping.source_arn.arn)
        for shard_id, position in sorted(stored.items()):
            rows.append([mapping.name, shard_id, *_columns(position, positions.leases)])
    if not rows:
        out.write("no stored positions\n")
        return
    out.write("\n".join(table([*header, "WINDOW STATE"], rows)) + "\n")


def _columns(position: Stored, leases: bool) -> list[str]:
    checkpoint = position.checkpoint
    if checkpoint is None:
        sequence, finished, window = "(none: TRIM_HORIZON)", "no", NONE
    else:
        sequence = checkpoint.sequence_number or "(none yet: starting_position)"
        if checkpoint.at_time is not None:
            sequence = f"at:{iso_timestamp(checkpoint.at_time)}"  # a start, not a record handled
        elif checkpoint.at_sequence:
            sequence = f"at:{checkpoint.sequence_number}"
        finished = "yes" if checkpoint.finished else "no"
        state = checkpoint.window_state
        window = NONE if state is None else f"{len(state)} B"
    columns = [sequence, finished]
    if leases:
        expires = position.expires_at
        columns += [cell(position.owner), cell(None if expires is None else iso_timestamp(expires))]
    return [*columns, window]


# -- set ---------------------------------------------------------------------------------------


async def set_positions(
    positions: Positions,
    clients: AwsClients,
    mapping: MappingSettings,
    args: argparse.Namespace,
    out: TextIO,
) -> None:
    """Resolve the new position of each shard through the stream, then write them."""
    arn = mapping.source_arn.arn
    if args.timestamp is not None:
        # Before the stream's retention, every shard would silently start at its oldest record.
        await check_retention(mapping, clients, float(args.timestamp), time.time(), "--timestamp")
    api = await shard_api(mapping.source_arn, clients)
    listed = [shard.shard_id for shard in await api.list_shards()]
    shards = _chosen(mapping, listed, args)
    stored = await positions.read(mapping.name, arn)
    await positions.hold(mapping.name, arn, {s: stored[s] for s in shards if s in stored})
    stored = await positions.read(mapping.name, arn)  # as it is now the file is ours
    targets = await _resolve(api, shards, args)
    store = positions.store
    if None in targets.values() and await store.mapping_started_at(mapping.name, arn) is None:
        # As a first start would: the shards left alone keep the mapping's starting_position,
        # and the ones cleared then start at TRIM_HORIZON (no checkpoint after a first start).
        for shard_id in listed:
            if shard_id not in stored and shard_id not in targets:
                await store.put(mapping.name, arn, shard_id, Checkpoint(None))
        await store.set_mapping_started_at(mapping.name, arn, time.time())
    for shard_id, to in targets.items():
        before = stored.get(shard_id, Stored(None))
        await positions.write(mapping.name, arn, shard_id, to, before)
        out.write(f"{mapping.name} {shard_id}: {_before(before)} -> {describe_start(to)}\n")
    count = len(targets)
    out.write(
        f"moved {count} shard{'s' if count != 1 else ''}; the next `poller run` reads from there\n"
    )


def _chosen(mapping: MappingSettings, listed: list[str], args: argparse.Namespace) -> list[str]:
    names = ", ".join(listed) or "none"
    if args.shard is not None:
        if args.shard not in listed:
            raise CommandError(
                f"mapping {mapping.name}: stream {mapping.source_arn.arn} has no shard "
                f"{args.shard} (its shards: {names})"
            )
        return [args.shard]
    if args.sequence is not None and len(listed) > 1:
        raise CommandError(
            f"mapping {mapping.name}: --sequence names a record of one shard; pass --shard "
            f"(the stream's shards: {names})"
        )
    return listed


async def _resolve(
    api: ShardApi, shards: Sequence[str], args: argparse.Namespace
) -> dict[str, Checkpoint | None]:
    """The new start of each shard; None for no checkpoint (TRIM_HORIZON)."""
    if args.trim_horizon:
        return dict.fromkeys(shards)
    if args.sequence is not None:
        await _check_sequence(api, shards[0], args.sequence)
        return {shards[0]: Checkpoint(args.sequence, at_sequence=True)}
    if args.latest:
        # "Now" as a LATEST start: what arrives from this moment on, and nothing before it.
        now = time.time()
        return {shard_id: Checkpoint(None, at_time=now) for shard_id in shards}
    since = float(args.timestamp)
    found: dict[str, Checkpoint | None] = {}
    for shard_id in shards:
        first = await first_from(api, shard_id, since)
        # No record from then in this shard (yet): it starts at that time.
        found[shard_id] = (
            Checkpoint(None, at_time=since)
            if first is None
            else Checkpoint(first, at_sequence=True)
        )
    if all(to is not None and to.at_time is not None for to in found.values()):
        raise CommandError(
            f"nothing in {api.stream_arn} arrived at or after {iso_timestamp(since)}: "
            "the time is past its newest record (or after what it still keeps)"
        )
    return found


async def _check_sequence(api: ShardApi, shard_id: str, sequence: str) -> None:
    problem = None if sequence.isdigit() else "not a sequence number (digits only)"
    if problem is None:
        try:
            await api.iterator(shard_id, StartAt("AT_SEQUENCE_NUMBER", sequence))
        except AWS_ERRORS as exc:
            if error_code(exc) not in ("InvalidArgumentException", "ValidationException"):
                raise
            problem = f"the stream refuses it ({exc})"
    if problem is not None:
        raise CommandError(f"shard {shard_id}: --sequence {sequence}: {problem}")


async def first_from(api: ShardApi, shard_id: str, since: float) -> str | None:
    """The sequence number of the shard's first record that arrived at or after `since`;
    None when there is none yet. Kinesis starts the search there (AT_TIMESTAMP); DynamoDB
    Streams has no such iterator, so its shard is read from TRIM_HORIZON."""
    start = StartAt("AT_TIMESTAMP", timestamp=since) if api.supports_at_timestamp else TRIM_HORIZON
    if not api.supports_at_timestamp:
        # DynamoDB Streams' arrival times are whole seconds (rounded down): the second `since`
        # falls in is kept, as `poller replay --from` keeps it.
        since = math.floor(since)
    iterator: str | None = await api.iterator(shard_id, start)
    tip = Tip(api)
    while iterator:
        result = await api.read(iterator, api.max_records)
        for raw in result.records:
            record = stream_record(api.event_record(raw, shard_id), kind=api.kind)
            if record.arrival >= since:
                return record.sequence_number
        if tip.reached(result):
            break
        iterator = result.next_iterator
        if not result.records:
            await anyio.sleep(GAP_PAUSE)  # within the shard's read rate
    return None


def describe_start(checkpoint: Checkpoint | None) -> str:
    """A stored position in words, as `checkpoints set` and `list` print it."""
    if checkpoint is None:
        return "TRIM_HORIZON (no checkpoint)"
    if checkpoint.at_time is not None:
        return f"at {iso_timestamp(checkpoint.at_time)} (first record arriving from then)"
    if checkpoint.at_sequence:
        return f"at {checkpoint.sequence_number} (the next record delivered)"
    if checkpoint.sequence_number:
        return f"after {checkpoint.sequence_number}"
    return "starting_position"


def _before(stored: Stored) -> str:
    checkpoint = stored.checkpoint
    if checkpoint is None:
        return "TRIM_HORIZON (no checkpoint)"
    text = describe_start(checkpoint)
    if checkpoint.finished:
        text += " (finished)"
    if checkpoint.window_state is not None:
        text += f" (open window, {len(checkpoint.window_state)} B of state, dropped)"
    return text
