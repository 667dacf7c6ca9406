"""Faults the daemon must ride out while it lives: the source, the target or the checkpoint
store out for a while, a throttle storm, a poison record. Nothing may be lost or given up, and
the mapping must show `degraded` while the fault lasts."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

import anyio

from poller.aws import calls
from poller.sources.sqs.source import LONG_POLL_SECONDS
from tests.chaos.harness import (
    Daemons,
    Env,
    Recorder,
    Result,
    function,
    source_errors,
    watching,
)
from tests.chaos.proxy import FaultProxy, Mode
from tests.chaos.sources import KinesisSource, SqsSource
from tests.support.config import config_yaml
from tests.support.fake_lambda import FakeLambda, Reply
from tests.support.ports import free_port
from tests.support.queues import aws_client
from tests.support.wait import eventually

# How long each outage lasts: long enough for several back-off rounds and status polls.
OUTAGE_S = 12.0
# A blackholed long poll looks like an empty one until its deadline passes (its 20 s wait plus
# the margin): only an outage longer than that can show `degraded`.
LONG_POLL_OUTAGE_S = LONG_POLL_SECONDS + calls.LONG_POLL_MARGIN + 5.0
PHASE = 100  # records put before, during and after a fault

# name: (source kind, what fails, how)
OUTAGES: dict[str, tuple[str, str, str]] = {
    "sqs-source-refused": ("sqs", "source", "refuse"),
    "sqs-source-blackholed": ("sqs", "source", "blackhole"),
    "sqs-source-reset": ("sqs", "source", "reset"),
    "sqs-target-503": ("sqs", "target", "503"),
    "sqs-target-refused": ("sqs", "target", "refuse"),
    "kinesis-source-refused": ("kinesis", "source", "refuse"),
    "kinesis-source-blackholed": ("kinesis", "source", "blackhole"),
    "kinesis-target-503": ("kinesis", "target", "503"),
    "kinesis-target-refused": ("kinesis", "target", "refuse"),
}


def unavailable(ids: list[str]) -> Reply:
    """The Invoke API's own 503: the function never ran."""
    body = {"Type": "Service", "message": "Service Unavailable"}
    return Reply.raw(503, json.dumps(body).encode(), {"x-amzn-ErrorType": "ServiceException"})


@asynccontextmanager
async def _proxied(env: Env, fake: FakeLambda) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    """A fault proxy in front of moto (the source) and one in front of the function."""
    moto = urlparse(env.moto)
    target = urlparse(fake.endpoint_url)
    assert moto.hostname and moto.port and target.hostname and target.port
    async with (
        FaultProxy(moto.hostname, moto.port) as source_proxy,
        FaultProxy(target.hostname, target.port) as target_proxy,
    ):
        yield source_proxy, target_proxy


async def outage(env: Env, name: str) -> Result:
    kind, where, how = OUTAGES[name]
    result = Result(name)
    recorder = Recorder(delay=0.02)
    async with (
        aws_client("sqs", env.moto) as sqs,
        aws_client("kinesis", env.moto) as kinesis,
        function(recorder) as fake,
        _proxied(env, fake) as (source_proxy, target_proxy),
        watching() as watch,
    ):
        source: SqsSource | KinesisSource
        if kind == "sqs":
            source = SqsSource(sqs)
            result.bound, result.bound_source = source.in_flight_bound()
            result.bound_source += " (deletes lost to the outage)"
        else:
            source = KinesisSource(kinesis, sqs)
            result.bound_source = "none re-read while the daemon lives (checkpoints are local)"
            if (where, how) == ("target", "refuse"):
                # Closing the port cuts the invocations in flight: the function got them, the
                # answer never came, so they are retried (at least once, as Lambda does).
                result.bound = source.shards * source.batch_size
                result.bound_source = (
                    f"invocations cut in flight are retried: {source.shards} shards"
                    f" x 1 batch x batch_size {source.batch_size}"
                )
        await source.create()
        daemons = Daemons(env, watch)
        port = free_port()
        config = config_yaml(
            source_proxy.url,
            [source.mapping()],
            lambda_url=target_proxy.url,
            checkpoints={"path": str(env.tmp / "state.db")},
            port=port,
            tuning={"shard_discovery_interval_seconds": 5},
        )
        daemons.start(config, port)
        try:
            await source.put(range(PHASE))
            await eventually(lambda: len(recorder.unique()) >= PHASE, timeout=60)
            start = time.monotonic()
            if how == "503":
                recorder.behaviour = unavailable
            else:
                await (source_proxy if where == "source" else target_proxy).set(Mode(how))
            await source.put(range(PHASE, 2 * PHASE))
            # The outage itself: its length is the scenario.
            await anyio.sleep(LONG_POLL_OUTAGE_S if name == "sqs-source-blackholed" else OUTAGE_S)
            end = time.monotonic()
            counted = await source_errors(port)
            recorder.behaviour = lambda ids: None
            await source_proxy.set(Mode.PASS)
            await target_proxy.set(Mode.PASS)
            await source.put(range(2 * PHASE, 3 * PHASE))
            result.sent = 3 * PHASE
            await eventually(lambda: len(recorder.unique()) >= result.sent, timeout=90)
            result.recover_s = time.monotonic() - end
            await eventually(source.settled, timeout=60)
            back = watch.running_again(end)
            result.notes.append(
                "running again "
                + ("never" if back is None else f"{back - end:.1f} s after the fault ended")
            )
        finally:
            codes = await daemons.stop_all()
            result.unique = len(recorder.unique())
            result.duplicates = recorder.duplicates()
        result.on_failure = await source.on_failure()
        states = watch.states(start, end + 0.5)
        result.degraded = "degraded" in states
        result.notes.append(f"states seen during the fault: {sorted(states)}")
        result.notes.append(f"poller_source_errors_total at the fault's end: {counted}")
        result.notes.extend(f"error shown: {e[:200]}" for e in watch.errors(start, end)[:2])
        if codes != [0]:
            result.failures.append(f"the daemon exited {codes} on SIGTERM")
    return result


async def throttle_storm(env: Env) -> Result:
    """429 on 80 % of invocations (seeded) for 30 s, maximum_retry_attempts 1: a throttle
    never spends an attempt, so nothing may reach the on-failure destination."""
    result = Result("throttle-storm")
    rng = random.Random(env.seed)
    recorder = Recorder(delay=0.02)
    storm_s = 30.0

    def storm(ids: list[str]) -> Reply | None:
        return Reply.throttled() if rng.random() < 0.8 else None

    async with (
        aws_client("sqs", env.moto) as sqs,
        aws_client("kinesis", env.moto) as kinesis,
        function(recorder) as fake,
        watching() as watch,
    ):
        source = KinesisSource(kinesis, sqs)
        await source.create()
        result.bound_source = "a throttled invocation delivers nothing"
        daemons = Daemons(env, watch)
        port = free_port()
        config = config_yaml(
            env.moto,
            [source.mapping(maximum_retry_attempts=1)],
            lambda_url=fake.endpoint_url,
            checkpoints={"path": str(env.tmp / "state.db")},
            port=port,
        )
        daemons.start(config, port)
        try:
            await source.put(range(PHASE))
            await eventually(lambda: len(recorder.unique()) >= PHASE, timeout=60)
            recorder.behaviour = storm
            start = time.monotonic()
            for phase in range(1, 6):
                await source.put(range(phase * PHASE, (phase + 1) * PHASE))
                await anyio.sleep(storm_s / 5)  # the storm's length is the scenario
            end = time.monotonic()
            recorder.behaviour = lambda ids: None
            result.sent = 6 * PHASE
            await eventually(lambda: len(recorder.unique()) >= result.sent, timeout=90)
            result.recover_s = time.monotonic() - end
        finally:
            codes = await daemons.stop_all()
            result.unique = len(recorder.unique())
            result.duplicates = recorder.duplicates()
        result.on_failure = await source.on_failure()
        result.degraded = "degraded" in watch.states(start, end)
        result.notes.append(f"delivered during the storm: {recorder.answered} invocations")
        if codes != [0]:
            result.failures.append(f"the daemon exited {codes} on SIGTERM")
    return result


async def poison_record(env: Env) -> Result:
    """One record that always fails, bisect on, 2 attempts: it alone reaches on-failure, and
    the other shard keeps flowing while its shard bisects."""
    result = Result("poison-record")
    recorder = Recorder(delay=0.02)
    async with (
        aws_client("sqs", env.moto) as sqs,
        aws_client("kinesis", env.moto) as kinesis,
        function(recorder) as fake,
        watching() as watch,
    ):
        source = KinesisSource(kinesis, sqs, batch_size=50)
        await source.create()
        result.sent = 600
        await source.put(range(result.sent))
        poison = 137
        poison_shard, poison_sequence = source.placed[poison]
        recorder.behaviour = lambda ids: Reply.error("poison") if str(poison) in ids else None
        daemons = Daemons(env, watch)
        port = free_port()
        mapping = source.mapping(bisect_batch_on_function_error=True, maximum_retry_attempts=2)
        config = config_yaml(
            env.moto,
            [mapping],
            lambda_url=fake.endpoint_url,
            checkpoints={"path": str(env.tmp / "state.db")},
            port=port,
        )
        started = time.monotonic()
        daemons.start(config, port)
        try:
            others = {str(n) for n in range(result.sent) if n != poison}
            await eventually(lambda: others <= recorder.unique(), timeout=90)
            await eventually(source.on_failure, timeout=30)
            result.recover_s = time.monotonic() - started
        finally:
            codes = await daemons.stop_all()
        result.unique = len(recorder.unique()) + 1  # the poison is accounted for on-failure
        result.duplicates = recorder.duplicates()
        result.bound_source = "a failing half delivers nothing; a succeeding one once"
        result.on_failure_expected = 1
        result.on_failure = await source.on_failure()
        messages = await source.on_failure_records()
        info = json.loads(messages[0]["Body"])["KinesisBatchInfo"] if messages else {}
        isolated = (
            info.get("shardId") == poison_shard
            and info.get("startSequenceNumber") == poison_sequence
            and info.get("endSequenceNumber") == poison_sequence
            and info.get("batchSize") == 1
        )
        result.notes.append(f"on-failure record: {info}")
        if not isolated:
            result.failures.append(f"the on-failure record is not exactly record {poison}")
        # The other shard flowed: it was done before its neighbour got past the poison.
        other_done = max(d.t for d in recorder.deliveries if d.shard != poison_shard)
        held_until = min(
            d.t
            for d in recorder.deliveries
            if d.shard == poison_shard
            and int(source.placed[int(d.record)][1]) > int(poison_sequence)
        )
        result.notes.append(
            f"the other shard finished {held_until - other_done:.1f} s before the poison's shard"
            " got past it"
        )
        if other_done >= held_until:
            result.failures.append("the other shard waited for the poison's shard")
        if codes != [0]:
            result.failures.append(f"the daemon exited {codes} on SIGTERM")
    return result


async def store_full(env: Env) -> Result:
    """The SQLite checkpoint store on a small tmpfs that fills up for a while: the mapping is
    degraded, keeps its positions in memory, and replays nothing once space is back."""
    result = Result("store-full")
    mount = env.tmp / "store"
    mount.mkdir()
    refused = _mount_tmpfs(mount, "4m")
    if refused is not None:
        result.skipped = (
            f"cannot mount a tmpfs here (chaos-run environment limit, not a test skip): {refused}"
        )
        return result
    try:
        return await _store_full(env, mount, result)
    finally:
        _unmount(mount)


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `path`; None, or why it could not (needs root, and a
    container or CI runner may forbid it even then)."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


async def _store_full(env: Env, mount: Path, result: Result) -> Result:
    recorder = Recorder(delay=0.02)
    async with (
        aws_client("sqs", env.moto) as sqs,
        aws_client("kinesis", env.moto) as kinesis,
        function(recorder) as fake,
        watching() as watch,
    ):
        source = KinesisSource(kinesis, sqs)
        await source.create()
        result.bound_source = "none re-read: positions are kept in memory while the disk is full"
        daemons = Daemons(env, watch)
        port = free_port()
        config = config_yaml(
            env.moto,
            [source.mapping()],
            lambda_url=fake.endpoint_url,
            checkpoints={"path": str(mount / "state.db")},
            port=port,
        )
        daemons.start(config, port)
        filler = mount / "filler"
        try:
            await source.put(range(PHASE))
            await eventually(lambda: len(recorder.unique()) >= PHASE, timeout=60)
            start = time.monotonic()
            _fill(filler)
            for phase in range(1, 4):
                await source.put(range(phase * PHASE, (phase + 1) * PHASE))
                await anyio.sleep(OUTAGE_S / 3)  # the disk stays full this long
            end = time.monotonic()
            filler.unlink()
            result.sent = 4 * PHASE
            await eventually(lambda: len(recorder.unique()) >= result.sent, timeout=90)
            result.recover_s = time.monotonic() - end
        finally:
            filler.unlink(missing_ok=True)
            codes = await daemons.stop_all()
            result.unique = len(recorder.unique())
            result.duplicates = recorder.duplicates()
        result.on_failure = await source.on_failure()
        states = watch.states(start, end + 0.5)
        result.degraded = "degraded" in states
        result.notes.append(f"states seen while full: {sorted(states)}")
        result.notes.extend(f"error shown: {e[:200]}" for e in watch.errors(start, end)[:2])
        result.notes.append(f"tracebacks in the daemon's log: {daemons.crashes()}")
        if crash := daemons.first_crash():
            result.notes.append(f"the first ended at {crash[:300]}")
        if codes != [0]:
            result.failures.append(f"the daemon exited {codes} on SIGTERM")
    return result


def _fill(path: Path) -> None:
    """Write zeros into `path` until the file system has no space left."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
