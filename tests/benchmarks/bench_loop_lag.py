"""Event-loop lag while one Kinesis shard reads, converts, builds and filters 10,000 records.

A GetRecords answer of up to 10,000 records is turned into event records, serialized and
filter-decoded on the event loop; `sources/streams/conversion.py` cuts that work into slices of
SLICE_SECONDS with a checkpoint between them, so no other task (the other shards, the lease
heartbeat, /healthz) waits for the whole of it. This measures how long the loop is held.

The mapping is assembled as the daemon assembles it (`wiring.stream_context`, `StreamSource`,
`KinesisShards`), with fakes only at the boundaries: an in-memory Kinesis client answering
ListShards, GetShardIterator and one GetRecords of RECORDS records of about 700 bytes of JSON
each, an instant checkpoint store, and an instant settler that counts what reaches it. While
the work runs, a probe task loops `await anyio.sleep(PROBE)` and records how much later than
asked each sleep ends: the loop's lag, what any task waiting for a timer or a socket sees. A
second probe only yields, and records the gap between its turns: the longest single step of
the loop. The collector's pauses are recorded too (`Watch` says more). A sliced run ends when
every record the filters keep has reached the settler.

Side by side in one process, alternated run by run, for two scenarios (no filters; a `data`
pattern that keeps half the records, so every record's data is base64- and JSON-decoded):

* sliced: the reader as it is;
* unsliced baseline: the same records through the same per-record steps (`event_record`,
  `stream_record`, the filters) in a plain loop that never yields: one blocking stretch, under
  the same probes. The ratio sliced / unsliced of the longest lag is what slicing buys.

Printed per scenario: longest and p99 lag, longest loop step, longest GC pause (medians over
REPEATS runs, and the worst run's longest lag), the time from the GetRecords answer to the last
record settled (unsliced: the stretch) and records/s. The target: a longest lag under 50 ms on
the sliced path.

Run with `make bench` or `python -m tests.benchmarks.bench_loop_lag`. Figures only, no
pass/fail. BENCH_LAG_RECORDS and BENCH_LAG_REPEATS change the size and the number of runs.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from aiobotocore.session import get_session
from aiohttp import web

from poller.aws.clients import AwsClients
from poller.checkpoints.base import AllShards
from poller.config.arns import SourceArn, parse_source_arn
from poller.config.settings import AwsSettings, MappingSettings, TuningSettings
from poller.engine.lifecycle import Shutdown
from poller.engine.records import StreamRecord
from poller.events.streams import stream_record
from poller.filtering.filter_set import FilterSet
from poller.ops.metrics import Metrics
from poller.ops.status import MappingStatus
from poller.sources.streams.conversion import SLICE_SECONDS
from poller.sources.streams.kinesis import KINESIS_MAX_RECORDS, KinesisShards
from poller.sources.streams.source import StreamSource
from poller.wiring import Services, stream_context
from tests.benchmarks.common import REPO
from tests.fakes.checkpoints import MemoryStore
from tests.support.ports import free_port

RECORDS = int(os.environ.get("BENCH_LAG_RECORDS", str(KINESIS_MAX_RECORDS)))
REPEATS = int(os.environ.get("BENCH_LAG_REPEATS", "5"))
DATA_BYTES = 700
# The reader asks for MAX_UNSETTLED_BATCHES (10) batches a read: 1,000 makes it one read of all.
BATCH_SIZE = 1_000
PROBE = 0.001  # the probe's sleep, seconds
TARGET_MS = 50.0

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/bench-lag"
SHARD = "shardId-000000000000"
IDENTITY = "arn:aws:iam::123456789012:role/bench-lag"
# Real sequence numbers are 56 digits: int() and str() of them are part of the cost.
FIRST_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
# Half the records say "paid": this pattern keeps half, and decodes every record's data.
HALF = '{"data": {"status": ["paid"]}}'


def make_records(n: int) -> list[dict[str, Any]]:
    """`n` GetRecords records as aiobotocore returns them: Data as bytes (~DATA_BYTES of
    JSON), the arrival as a datetime, 56-digit sequence numbers."""
    arrival = datetime.now(UTC)
    records: list[dict[str, Any]] = []
    for i in range(n):
        body: dict[str, Any] = {
            "n": i,
            "status": "paid" if i % 2 else "pending",
            "orderId": f"ORD-{i:07d}",
            "customer": {"id": f"CUST-{i % 997:06d}", "region": "eu-west-1"},
            "amount": round(10 + i % 5000 / 7, 2),
            "currency": "EUR",
            "createdAt": "2025-01-01T12:00:00.000Z",
        }
        body["note"] = ""
        body["note"] = "x" * max(0, DATA_BYTES - len(json.dumps(body)))
        records.append(
            {
                "SequenceNumber": str(FIRST_SEQUENCE + i),
                "ApproximateArrivalTimestamp": arrival,
                "Data": json.dumps(body).encode(),
                "PartitionKey": f"customer-{i % 64}",
            }
        )
    return records


class MemoryKinesis:
    """The few Kinesis calls a shard reader makes, answered from memory at once (each still
    yields to the loop, as a network call does). An iterator is an index into the records."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = records
        self.limits: list[int] = []  # each GetRecords' Limit
        self.answered: list[int] = []  # how many records each GetRecords returned
        self.answered_at: float | None = None  # when the first non-empty GetRecords returned

    async def list_shards(self, **_: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        first = self.records[0]["SequenceNumber"] if self.records else "0"
        return {
            "Shards": [
                {
                    "ShardId": SHARD,
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
                    "SequenceNumberRange": {"StartingSequenceNumber": first},
                }
            ]
        }

    async def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        assert request["ShardIteratorType"] == "TRIM_HORIZON", request
        return {"ShardIterator": "0"}

    async def get_records(self, *, ShardIterator: str, Limit: int, **_: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        self.limits.append(Limit)
        start = int(ShardIterator)
        chunk = list(self.records[start : start + Limit])
        end = start + len(chunk)
        self.answered.append(len(chunk))
        if chunk and self.answered_at is None:
            self.answered_at = time.perf_counter()
        behind = 0 if end >= len(self.records) else 1_000
        return {"Records": chunk, "NextShardIterator": str(end), "MillisBehindLatest": behind}


class CountingSettler:
    """An instant settler: counts the records reaching it; `done` once `expected` did."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.settled = 0
        self.done = anyio.Event()
        self.done_at = 0.0

    async def close_window(self, window: Any) -> None:
        """No tumbling windows here."""

    async def settle(
        self,
        records: Sequence[StreamRecord],
        acknowledge: Any,
        *,
        scope: str | None = None,
        window: Any = None,
    ) -> None:
        self.settled += len(records)
        if self.settled >= self.expected and not self.done.is_set():
            self.done_at = time.perf_counter()
            self.done.set()
        # Returning settles the whole batch: the reader acknowledges it.


class Watch:
    """What the loop does while the work runs, recorded while `recording` is set:

    * `lags`: how late each `anyio.sleep(PROBE)` of a sleeping task ends: what any task waiting
      for a timer or a socket (another shard, the lease heartbeat, /healthz) waits;
    * `steps`: the gap between two turns of a task that only yields: the longest single step
      of the loop, i.e. the longest the reader holds it at once. A sleeper waits up to about
      three steps: asyncio runs an expired timer after the callbacks already queued, and the
      sleeping task's wake-up one iteration later still;
    * `pauses`: the garbage collector's pauses, which land in whichever step allocates.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.steps: list[float] = []
        self.pauses: list[float] = []
        self.recording = False
        self._collecting = 0.0

    async def sleeper(self) -> None:
        clock, sleep = time.perf_counter, anyio.sleep
        while True:
            started = clock()
            await sleep(PROBE)
            if self.recording:
                self.lags.append(max(0.0, clock() - started - PROBE))

    async def yielder(self) -> None:
        clock, checkpoint = time.perf_counter, anyio.lowlevel.checkpoint
        last = clock()
        while True:
            await checkpoint()
            now = clock()
            if self.recording:
                self.steps.append(now - last)
            last = now

    def collector(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._collecting = time.perf_counter()
        elif self.recording:
            self.pauses.append(time.perf_counter() - self._collecting)


@asynccontextmanager
async def watching() -> AsyncIterator[Watch]:
    """A Watch whose probes run (and record) for the duration of the block."""
    watch = Watch()
    gc.callbacks.append(watch.collector)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch.sleeper)
            tasks.start_soon(watch.yielder)
            await anyio.sleep(0.01)  # both probes are running before the work starts
            watch.recording = True
            try:
                yield watch
            finally:
                watch.recording = False
                tasks.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(watch.collector)


@dataclass(frozen=True)
class Run:
    """One run's figures, in seconds."""

    longest_lag: float
    p99_lag: float
    samples: int  # the sleeper's samples
    longest_step: float
    longest_pause: float  # the collector's
    elapsed: float  # GetRecords answer to the last record settled; unsliced: the stretch
    kept: int  # records that passed the filters

    @classmethod
    def of(cls, watch: Watch, elapsed: float, kept: int) -> Run:
        lags = watch.lags
        longest = max(lags, default=0.0)
        # A run gives a few dozen samples at most: p99 is then close to the longest.
        p99 = (
            statistics.quantiles(lags, n=100, method="inclusive")[98] if len(lags) > 1 else longest
        )
        return cls(
            longest,
            p99,
            len(lags),
            max(watch.steps, default=0.0),
            max(watch.pauses, default=0.0),
            elapsed,
            kept,
        )


def _mapping(patterns: Sequence[str]) -> MappingSettings:
    filters = {"filter_criteria": {"filters": [{"pattern": p} for p in patterns]}}
    return MappingSettings.model_validate(
        {
            "name": "bench-lag",
            "source": ARN,
            "target": {"type": "python", "handler": "tests.benchmarks.handlers:instant"},
            "starting_position": "TRIM_HORIZON",
            "batch_size": BATCH_SIZE,
            **(filters if patterns else {}),
        }
    )


def _shards(records: Sequence[Mapping[str, Any]]) -> tuple[KinesisShards, MemoryKinesis]:
    client = MemoryKinesis(records)
    source: SourceArn = parse_source_arn(ARN)
    api = KinesisShards(client, source, invoke_identity_arn=IDENTITY)  # type: ignore[arg-type]
    return api, client


def _expected(records: Sequence[Mapping[str, Any]], patterns: Sequence[str]) -> int:
    """How many records reach the settler: with HALF (the only pattern used), the "paid" ones."""
    if not patterns:
        return len(records)
    return sum(1 for r in records if b'"status": "paid"' in r["Data"])


async def run_sliced(
    records: Sequence[Mapping[str, Any]],
    patterns: Sequence[str],
    client: Any = None,
) -> Run:
    """The daemon's path: StreamSource over KinesisShards, one read of every record; over the
    in-memory client, or over `client` (a real aiobotocore one: its parse is then measured)."""
    mapping = _mapping(patterns)
    if client is None:
        api, memory = _shards(records)
    else:
        api, memory = (
            KinesisShards(client, parse_source_arn(ARN), invoke_identity_arn=IDENTITY),
            None,
        )
    metrics, shutdown, store = Metrics(), Shutdown(), MemoryStore()
    status = MappingStatus(
        name=mapping.name,
        uuid=mapping.uuid,
        source=mapping.source,
        target="python:bench",
        metrics=metrics.for_mapping(mapping.name),
    )

    async def identity(_: SourceArn) -> str:
        return IDENTITY

    services = Services(
        clients=AwsClients(AwsSettings()),  # never asked for a client: the API is the fake
        shutdown=shutdown,
        metrics=metrics,
        tuning=TuningSettings(),
        identity=identity,
        store=store,  # type: ignore[arg-type]
    )
    expected = _expected(records, patterns)
    settler = CountingSettler(expected)
    context = stream_context(
        mapping,
        api,
        settler,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        status,
        services,
        leases=AllShards(),
    )
    source = StreamSource(context)
    stopped = anyio.Event()

    async def run_source() -> None:
        await source.run()
        stopped.set()

    started = time.perf_counter()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tasks:
            async with watching() as watch:
                tasks.start_soon(run_source)
                await settler.done.wait()
            shutdown.begin(5.0)  # stopping is not measured
            await stopped.wait()  # the reader drained and checkpointed
    assert store.checkpoints[SHARD].sequence_number == records[-1]["SequenceNumber"]
    if memory is None:
        return Run.of(watch, settler.done_at - started, settler.settled)
    assert memory.answered[0] == len(records), memory.answered  # one read of every record
    assert memory.answered_at is not None
    return Run.of(watch, settler.done_at - memory.answered_at, settler.settled)


async def run_unsliced(records: Sequence[Mapping[str, Any]], patterns: Sequence[str]) -> Run:
    """The same per-record steps as `convert` (event record, StreamRecord, filters) over the
    same records in a plain loop, never yielding: one blocking stretch, under the probe."""
    mapping = _mapping(patterns)
    api, _ = _shards(records)
    filters = FilterSet.compile(mapping.filter_patterns, source=api.kind)
    kept = 0
    async with watching() as watch:
        await anyio.lowlevel.checkpoint()
        started = time.perf_counter()
        event_record, kind, matches = api.event_record, api.kind, api.matches
        converted: list[StreamRecord] = []
        for raw in records:
            event = event_record(raw, SHARD)
            converted.append(stream_record(event, kind=kind))
            kept += not filters or matches(filters, event)
        stretch = time.perf_counter() - started
        await anyio.sleep(PROBE * 3)  # the probes wake and record the stretch
    return Run.of(watch, stretch, kept)


def _report(label: str, sliced: list[Run], unsliced: list[Run]) -> None:
    def median(runs: list[Run], figure: str) -> float:
        return statistics.median(getattr(run, figure) for run in runs)

    def row(name: str, figure: str, note: str = "") -> None:
        a, b = median(sliced, figure) * 1000, median(unsliced, figure) * 1000
        print(f"   {name:<20}{a:9.1f} ms {b:9.1f} ms   {note}".rstrip())

    longest, base = median(sliced, "longest_lag"), median(unsliced, "longest_lag")
    step = median(sliced, "longest_step")
    worst = max(run.longest_lag for run in sliced) * 1000
    print(f"{label}: {sliced[0].kept} of {RECORDS} records pass the filters")
    print(f"   {'':<20}{'sliced':>12} {'unsliced':>12}")
    row("longest lag", "longest_lag", f"sliced: worst run {worst:.1f} ms")
    row("p99 lag", "p99_lag", f"sliced: of {median(sliced, 'samples'):.0f} samples a run")
    row(
        "longest loop step",
        "longest_step",
        f"sliced: the longest lag is {longest / step:.1f} steps",
    )
    row("longest GC pause", "longest_pause")
    row("time", "elapsed", "sliced: GetRecords answer to the last record settled")
    rate, base_rate = RECORDS / median(sliced, "elapsed"), RECORDS / median(unsliced, "elapsed")
    print(f"   {'records/s':<20}{rate:12,.0f} {base_rate:12,.0f}   unsliced: the stretch alone")
    print(
        f"   longest lag sliced vs unsliced: {longest * 1000:.1f} ms vs {base * 1000:.1f} ms"
        f" ({longest / base:.2f}×; target < {TARGET_MS:.0f} ms sliced)"
    )


@asynccontextmanager
async def healthz_probe() -> AsyncIterator[list[float]]:
    """A /healthz endpoint served by this loop, asked every 5 ms from another thread (as a
    liveness probe asks from outside): the answer times, while the block runs."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    answers: list[float] = []
    stop = threading.Event()

    def ask() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            answers.append(time.perf_counter() - started)
            time.sleep(0.005)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        yield answers
    finally:
        stop.set()
        await anyio.to_thread.run_sync(asker.join)
        await runner.cleanup()


@asynccontextmanager
async def canned_kinesis() -> AsyncIterator[str]:
    """tests/benchmarks/canned_kinesis.py in its own process, RECORDS records in one read."""
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.canned_kinesis", str(port), str(RECORDS)]
    proc = await anyio.open_process(command, cwd=REPO, stdout=subprocess.DEVNULL)
    try:
        with anyio.fail_after(60):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with anyio.fail_after(10):
            await proc.wait()


async def _through_clients(runs: int) -> None:
    """Section 3: the same read over real aiobotocore clients, GetRecords' parse included:
    poller's stream client (`aws.parsing`) against a stock aiobotocore client."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    records = make_records(RECORDS)
    async with canned_kinesis() as endpoint, AwsClients(AwsSettings(endpoint_url=endpoint)) as aws:
        mine = await aws.client("kinesis")
        stock_context = get_session().create_client(
            "kinesis", region_name="us-east-1", endpoint_url=endpoint
        )
        async with stock_context as stock:
            figures: dict[str, list[tuple[Run, float]]] = {"poller": [], "stock": []}
            for client in (mine, stock):  # warm up: first-call costs are not the loop's lag
                await run_sliced(records, [], client)
            for _ in range(runs):
                for name, client in (("poller", mine), ("stock", stock)):
                    gc.collect()
                    async with healthz_probe() as answers:
                        run = await run_sliced(records, [], client)
                    figures[name].append((run, max(answers, default=0.0)))
    print(
        f"3. through aiobotocore (GetRecords parse included), no filters, median of {runs}:"
        " poller's stream client vs a stock aiobotocore client"
    )
    for name, label in (("poller", "poller's client"), ("stock", "stock client")):
        runs_of = figures[name]
        lag = statistics.median(r.longest_lag for r, _ in runs_of) * 1000
        worst = max(r.longest_lag for r, _ in runs_of) * 1000
        health = statistics.median(h for _, h in runs_of) * 1000
        elapsed = statistics.median(r.elapsed for r, _ in runs_of)
        print(
            f"   {label:<16} longest lag {lag:6.1f} ms (worst {worst:.1f}),"
            f" slowest /healthz {health:6.1f} ms, read to settled {elapsed * 1000:6.0f} ms"
        )
    print(f"   target: longest lag and /healthz within {TARGET_MS:.0f} ms with poller's client")


WARM_UP = 500  # records of the warm-up runs


async def _main() -> None:
    records = make_records(RECORDS)
    size = statistics.mean(len(r["Data"]) for r in records)
    print(
        f"Loop lag: one Kinesis read of {RECORDS} records ({size:.0f} B of JSON data each),"
        f" batch size {BATCH_SIZE}, slices of {SLICE_SECONDS * 1000:g} ms,"
        f" probe sleep {PROBE * 1000:.0f} ms;"
        f" medians of {REPEATS} runs"
    )
    scenarios = [("1. no filters", []), (f"2. filter {HALF}", [HALF])]
    for patterns in ([], [HALF]):  # warm up: first-call costs are not the loop's lag
        await run_sliced(records[:WARM_UP], patterns)
        await run_unsliced(records[:WARM_UP], patterns)
    for label, patterns in scenarios:
        sliced: list[Run] = []
        unsliced: list[Run] = []
        for _ in range(REPEATS):  # alternated, so both see the same machine
            gc.collect()
            sliced.append(await run_sliced(records, patterns))
            gc.collect()
            unsliced.append(await run_unsliced(records, patterns))
        _report(label, sliced, unsliced)
    await _through_clients(max(1, min(REPEATS, 3)))


def main() -> None:
    anyio.run(_main)


if __name__ == "__main__":
    main()
