"""Turning one GetRecords answer into engine records, in slices so the loop never stalls.

Building, serializing and filter-decoding 10,000 records takes about half a second of CPU;
done in one go, every other shard, the lease heartbeat and /healthz would wait that long. The
work is cut into slices of a few milliseconds, measured on the clock rather than counted in
records (a record costs 20 to 60 µs depending on its size, the filters and the machine's load),
with a checkpoint between them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel

from poller.engine.records import StreamRecord
from poller.events.streams import stream_record
from poller.filtering.filter_set import FilterSet
from poller.sources.streams.shards import ShardApi

# The longest stretch of conversion between two yields to the event loop. A task woken
# meanwhile (a timer, a socket) runs only after two or three stretches, because asyncio queues
# its wake-up behind the yielding task: 5 ms keeps every other task's wait near 15 ms.
SLICE_SECONDS = 0.005
CLOCK_EVERY = 16  # records between two looks at the clock: 0.3 to 1 ms of work


@dataclass(frozen=True, slots=True)
class Converted:
    """One record read, and whether it goes to the function (False: filtered or skipped)."""

    record: StreamRecord
    kept: bool


@dataclass(frozen=True, slots=True)
class Conversion:
    """The records of one read past `after`, in order, with the counts for the metrics."""

    records: list[Converted]
    polled: int
    filtered: int


async def convert(
    api: ShardApi,
    raw_records: Sequence[Mapping[str, Any]],
    *,
    shard_id: str,
    filters: FilterSet,
    after: int | None,
    skip_before: float | None,
) -> Conversion:
    """Build the event record of each raw record newer than sequence `after`; records that
    arrived before `skip_before` are skipped, records the filters refuse are kept=False."""
    out: list[Converted] = []
    polled = filtered = 0
    last = after
    yield_at = time.perf_counter() + SLICE_SECONDS
    for number, raw in enumerate(raw_records, 1):
        if filters:  # the filters look at the event record: built once, for both
            event = api.event_record(raw, shard_id)
            record = stream_record(event, kind=api.kind)
        else:
            record = api.stream_record(raw, shard_id)
        if number % CLOCK_EVERY == 0 and time.perf_counter() >= yield_at:
            await anyio.lowlevel.checkpoint()
            yield_at = time.perf_counter() + SLICE_SECONDS
        if last is not None and record.sequence <= last:
            continue  # read again by an iterator re-made after an error
        last = record.sequence
        if skip_before is not None and record.arrival < skip_before:
            out.append(Converted(record, kept=False))
            continue
        polled += 1
        if filters and not api.matches(filters, event):
            filtered += 1
            out.append(Converted(record, kept=False))
            continue
        out.append(Converted(record, kept=True))
    return Conversion(out, polled, filtered)
