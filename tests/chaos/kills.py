"""SIGKILL loops: kill the daemon (or one replica of three) while it works, restart it, and
count what the kills cost: nothing lost, duplicates within what was in flight."""

from __future__ import annotations

import random
import time
from typing import Any

from tests.chaos.harness import Daemons, Env, Recorder, Result, function, watching
from tests.chaos.sources import KinesisSource, SqsSource, shuffled
from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess
from tests.support.leases import _REPLICA, TABLE, lease_items
from tests.support.ports import free_port
from tests.support.queues import aws_client
from tests.support.wait import eventually

KILLS = 5


async def sqs_sigkill(env: Env) -> Result:
    result = Result("sqs-sigkill")
    async with aws_client("sqs", env.moto) as sqs:
        source = SqsSource(sqs)
        await source.create()
        result.sent = 1000
        await source.put(shuffled(result.sent, env.seed))
        await _kill_loop(env, result, source, source.mapping(), source.in_flight_bound())
        await eventually(source.settled, timeout=60)
        result.on_failure = await source.on_failure()
    return result


async def kinesis_sigkill(env: Env, parallelization_factor: int) -> Result:
    result = Result(f"kinesis-sigkill-pf{parallelization_factor}")
    async with aws_client("kinesis", env.moto) as kinesis, aws_client("sqs", env.moto) as sqs:
        source = KinesisSource(kinesis, sqs)
        await source.create()
        result.sent = 3000
        await source.put(range(result.sent))
        mapping = source.mapping(parallelization_factor=parallelization_factor)
        recorder = await _kill_loop(
            env, result, source, mapping, source.replay_bound(parallelization_factor)
        )
        result.on_failure = await source.on_failure()
    in_flight = parallelization_factor * source.batch_size * source.shards
    result.notes.append(
        f"in flight at most {in_flight} (parallelization_factor x batch_size x shards); "
        f"the worst kill replayed {result.duplicates}"
    )
    breaks = recorder.order_breaks()
    result.notes.append(
        f"per-key order broken on first delivery: {breaks}; "
        f"concurrent invocations sharing a key: {recorder.key_overlaps}"
    )
    if breaks:
        result.failures.append(f"per-key order broken {breaks} times on first delivery")
    if recorder.key_overlaps:
        result.failures.append(f"{recorder.key_overlaps} concurrent invocations shared a key")
    return result


async def _kill_loop(
    env: Env,
    result: Result,
    source: SqsSource | KinesisSource,
    mapping: dict[str, Any],
    bound: tuple[int, str],
) -> Recorder:
    """Run one daemon over `source`, SIGKILL it KILLS times at seeded points of the progress
    (restarting it at once), then let it finish; fills in the result's figures."""
    rng = random.Random(env.seed)
    # 50 ms per invocation: long enough that a kill finds batches in flight.
    recorder = Recorder(delay=0.05)
    checkpoints = {"path": str(env.tmp / "state.db")}
    async with function(recorder) as fake, watching() as watch:
        daemons = Daemons(env, watch)
        port = free_port()
        config = config_yaml(
            env.moto,
            [mapping],
            lambda_url=fake.endpoint_url,
            checkpoints=checkpoints,
            port=port,
            tuning={"shard_discovery_interval_seconds": 5},
        )
        daemon = daemons.start(config, port)
        marks: list[float] = []
        step = result.sent // (KILLS + 2)
        try:
            for kill in range(KILLS):
                target = step * (kill + 1) + rng.randrange(step // 2)
                await eventually(lambda t=target: len(recorder.unique()) >= t, timeout=60)
                marks.append(time.monotonic())
                daemons.kill(daemon)
                daemon = daemons.start(config, port)
            await eventually(lambda: len(recorder.unique()) >= result.sent, timeout=90)
            result.recover_s = time.monotonic() - marks[-1]
            await eventually(source.settled, timeout=60)
        finally:
            codes = await daemons.stop_all()
    per_kill, before = recorder.duplicates_by_kill(marks)
    result.unique = len(recorder.unique())
    result.duplicates = max(per_kill)
    result.bound, result.bound_source = bound
    result.bound_source += " (the most any one kill replayed)"
    result.notes.append(f"duplicates per kill {per_kill}, with no kill between {before}")
    if before:
        result.failures.append(f"{before} duplicates with no kill between their deliveries")
    if codes != [0]:
        result.failures.append(f"the last daemon exited {codes} on SIGTERM")
    return recorder


async def leases_sigkill(env: Env) -> Result:
    """Three replicas sharing four shards through the lease table; one of them (seeded) is
    SIGKILLed and restarted three times. A kill may replay, per shard the victim held, its one
    batch in flight (docs/fleet.md)."""
    result = Result("leases-sigkill-3-replicas")
    rng = random.Random(env.seed)
    recorder = Recorder(delay=0.02)
    kills = 3
    async with (
        aws_client("kinesis", env.moto) as kinesis,
        aws_client("sqs", env.moto) as sqs,
        aws_client("dynamodb", env.dynamodb) as dynamodb,
    ):
        source = KinesisSource(kinesis, sqs, shards=4)
        await source.create()
        result.sent = 2000
        await source.put(range(result.sent))
        async with function(recorder) as fake, watching() as watch:
            daemons = Daemons(env, watch)
            ports = [free_port() for _ in range(3)]

            def config(port: int) -> str:
                return config_yaml(
                    env.moto,
                    [source.mapping()],
                    lambda_url=fake.endpoint_url,
                    dynamodb_url=env.dynamodb,
                    checkpoints={
                        "backend": "dynamodb",
                        "table": TABLE,
                        "lease_duration_seconds": 2,
                    },
                    port=port,
                    tuning={"shard_discovery_interval_seconds": 1},
                )

            replicas = [daemons.start(config(port), port) for port in ports]
            marks: list[float] = []
            held: list[int] = []
            step = result.sent // (kills + 2)
            try:
                for kill in range(kills):
                    target = step * (kill + 1) + rng.randrange(step // 2)
                    await eventually(lambda t=target: len(recorder.unique()) >= t, timeout=60)
                    # The victim: the replica holding the most leases (ties drawn by the
                    # seed), so that every kill has batches in flight to lose.
                    leases = await lease_items(dynamodb)
                    counts = [_held(replica, leases) for replica in replicas]
                    most = [n for n, count in enumerate(counts) if count == max(counts)]
                    victim = rng.choice(most)
                    held.append(counts[victim])
                    marks.append(time.monotonic())
                    daemons.kill(replicas[victim])
                    replicas[victim] = daemons.start(config(ports[victim]), ports[victim])
                await eventually(lambda: len(recorder.unique()) >= result.sent, timeout=90)
                result.recover_s = time.monotonic() - marks[-1]
            finally:
                codes = await daemons.stop_all()
        result.on_failure = await source.on_failure()
    per_kill, unexplained = recorder.duplicates_by_kill(marks)
    bounds = [shards * source.batch_size for shards in held]
    result.unique = len(recorder.unique())
    result.duplicates = sum(per_kill)
    result.bound = sum(bounds)
    result.bound_source = (
        f"over the {kills} kills, shards the victim held {held} x 1 batch in flight"
        f" x batch_size {source.batch_size}"
    )
    result.notes.append(
        f"duplicates per kill {per_kill}, their bounds {bounds}, with no kill between {unexplained}"
    )
    if unexplained:
        result.failures.append(f"{unexplained} duplicates with no kill between their deliveries")
    result.failures.extend(
        f"kill {n + 1} replayed {d}, over its bound of {b}"
        for n, (d, b) in enumerate(zip(per_kill, bounds, strict=True))
        if d > b
    )
    if recorder.order_breaks():
        result.failures.append(f"per-key order broken {recorder.order_breaks()} times")
    if any(code != 0 for code in codes):
        result.failures.append(f"replicas exited {codes} on SIGTERM")
    return result


def _held(replica: DaemonProcess, leases: list[dict[str, Any]]) -> int:
    """How many leases a replica holds (none before it said its id in its log)."""
    found = _REPLICA.search(replica.logs())
    return sum(1 for lease in leases if found and lease["owner"] == found.group(1))
