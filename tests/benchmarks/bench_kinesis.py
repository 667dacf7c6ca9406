"""Kinesis throughput: the daemon against a plain GetRecords loop over the same shards.

One moto server (its own process) holds one fresh stream of SHARDS shards and RECORDS records
(about 200 bytes of JSON each). moto's GetRecords walks the shard from its start on every call
and each PutRecords entry copies the shard's key list, so MOTO-NOTES.md keeps streams to a few
thousand records. Every run reads the whole stream from TRIM_HORIZON; reading does not consume,
so all runs read the same records.

1. the loop a user would write: one thread per shard, boto3, GetShardIterator(TRIM_HORIZON),
   then GetRecords with the default Limit until every record of the shard was read; its rate in
   records per second. The same loop at Limit=BATCH_SIZE is printed too, for scale: the
   daemon's reads are bounded by its read-ahead cap (10 batches unsettled per shard), so they
   sit between the two.
2. the daemon: a real `poller run` subprocess, `starting_position: TRIM_HORIZON`,
   `batch_size: BATCH_SIZE`, an instant in-process `python` function, checkpoints in a temp
   SQLite file. Timed from `/readyz` (the first ListShards answered) to the moment every
   shard's checkpoint reaches the shard's last sequence number. The checkpoints are read from
   the SQLite file by this process (WAL: a reader elsewhere costs the daemon nothing), so the
   daemon spends nothing on being watched; `/metrics` is read once afterwards to confirm
   `poller_events_total{stage="invoked"}` equals RECORDS. Printed: its rate, the ratio
   daemon / loop (target >= 0.9: reading is the limit, the engine must not be), and its CPU
   seconds (user + system of the whole process, from /proc, between ready and done) per
   10,000 records (target <= 0.5).

Each figure is the median of REPEATS runs (one run takes well under a second, so single runs
are noisy). Run with `make bench` or `python -m tests.benchmarks.bench_kinesis`.
Figures only, no pass/fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import statistics
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.benchmarks.common import cpu_seconds, daemon, start_moto
from tests.support.ports import free_port

RECORDS = int(os.environ.get("BENCH_RECORDS", "4000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
SHARDS = 2
BATCH_SIZE = 100
PAYLOAD = "x" * 160  # with the keys around it, about 200 bytes of JSON per record


class Stream:
    """The benchmark's stream: its ARN and, per shard, how many records and the last one."""

    def __init__(self, arn: str, counts: dict[str, int], last: dict[str, int]) -> None:
        self.arn = arn
        self.counts = counts
        self.last = last


def _kinesis(endpoint: str) -> Any:
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")


def _fill(endpoint: str, name: str) -> Stream:
    kinesis = _kinesis(endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    counts: dict[str, int] = {}
    last: dict[str, int] = {}
    for start in range(0, RECORDS, 500):
        entries = [
            {
                "PartitionKey": f"customer-{n % 64}",
                "Data": json.dumps({"n": n, "customer": n % 64, "payload": PAYLOAD}).encode(),
            }
            for n in range(start, min(RECORDS, start + 500))
        ]
        answer = kinesis.put_records(StreamARN=arn, Records=entries)
        assert not answer.get("FailedRecordCount"), answer
        for placed in answer["Records"]:
            shard = placed["ShardId"]
            counts[shard] = counts.get(shard, 0) + 1
            last[shard] = max(last.get(shard, 0), int(placed["SequenceNumber"]))
    return Stream(arn, counts, last)


def run_loop(endpoint: str, stream: Stream, limit: int | None) -> float:
    """One thread per shard: GetRecords from TRIM_HORIZON until the shard is read."""
    errors: list[BaseException] = []

    def read(shard: str, expected: int) -> None:
        try:
            kinesis = _kinesis(endpoint)
            iterator = kinesis.get_shard_iterator(
                StreamARN=stream.arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            seen = 0
            extra = {"Limit": limit} if limit else {}
            while seen < expected:
                answer = kinesis.get_records(ShardIterator=iterator, StreamARN=stream.arn, **extra)
                seen += len(answer["Records"])
                iterator = answer["NextShardIterator"]
        except BaseException as exc:
            errors.append(exc)

    # Clients are made inside the timed part, as the daemon's are made before /readyz: but
    # boto3's first client loads its service model, so warm that up here.
    _kinesis(endpoint)
    threads = [
        threading.Thread(target=read, args=(shard, count)) for shard, count in stream.counts.items()
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return RECORDS / elapsed


def _checkpoints(state: Path, arn: str) -> dict[str, int]:
    """Each shard's stored checkpoint, read from the daemon's SQLite file (WAL: a reader in
    another process neither blocks the daemon's writes nor costs it anything)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT shard_id, sequence_number FROM checkpoints WHERE stream_arn = ?", (arn,)
            ).fetchall()
    except sqlite3.OperationalError:  # the daemon has not created the file or its tables yet
        return {}
    return {shard: int(sequence) for shard, sequence in rows if sequence is not None}


def _invoked(port: int, mapping: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = (
        r'^poller_events_total\{(?=[^}]*mapping="' + re.escape(mapping) + r'")'
        r'(?=[^}]*stage="invoked")[^}]*\}\s+(\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def run_daemon(endpoint: str, stream: Stream, name: str) -> tuple[float, float]:
    """Read the whole stream with `poller run`; returns (records per second, CPU seconds)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "checkpoints.db"
        config = (
            f"aws: {{region: us-east-1, endpoint_url: {endpoint}}}\n"
            f"server: {{host: 127.0.0.1, port: {port}}}\n"
            f"checkpoints: {{path: {json.dumps(str(state))}}}\n"
            "mappings:\n"
            f"  - name: {name}\n"
            f"    source: {stream.arn}\n"
            "    target: {type: python, handler: 'tests.benchmarks.handlers:instant'}\n"
            "    starting_position: TRIM_HORIZON\n"
            f"    batch_size: {BATCH_SIZE}\n"
        )
        with daemon(config, port) as proc:
            started, cpu_before = time.perf_counter(), cpu_seconds(proc.pid)
            while _checkpoints(state, stream.arn) != stream.last:
                if proc.poll() is not None:
                    raise RuntimeError(f"poller exited with {proc.returncode}")
                time.sleep(0.02)
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu_before
            invoked = _invoked(port, name)
            if invoked != RECORDS:
                raise RuntimeError(f"{invoked:.0f} of {RECORDS} records invoked")
    return RECORDS / elapsed, cpu


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server, endpoint = start_moto()
    try:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        stream = _fill(endpoint, name)
        per_shard = ", ".join(str(n) for n in stream.counts.values())
        print(
            f"Kinesis benchmark: {RECORDS} records over {SHARDS} shards ({per_shard}),"
            f" moto at {endpoint}; medians of {REPEATS} runs"
        )
        loop_rate = statistics.median(run_loop(endpoint, stream, None) for _ in range(REPEATS))
        batch_loop_rate = statistics.median(
            run_loop(endpoint, stream, BATCH_SIZE) for _ in range(REPEATS)
        )
        daemon_runs = [run_daemon(endpoint, stream, name) for _ in range(REPEATS)]
        daemon_rate = statistics.median(rate for rate, _ in daemon_runs)
        cpu = statistics.median(cpu for _, cpu in daemon_runs)
        print(f"1. throughput (instant function, batch size {BATCH_SIZE}, TRIM_HORIZON)")
        print(f"   GetRecords loop         {loop_rate:8.1f} rec/s   (default Limit)")
        print(f"   GetRecords loop         {batch_loop_rate:8.1f} rec/s   (Limit={BATCH_SIZE})")
        print(f"   poller                  {daemon_rate:8.1f} rec/s")
        print(f"   ratio                   {daemon_rate / loop_rate:8.2f}    (target >= 0.9)")
        print(f"   ratio to Limit={BATCH_SIZE} loop {daemon_rate / batch_loop_rate:6.2f}")
        print(f"2. cost (batch size {BATCH_SIZE})")
        print(
            f"   poller CPU              {cpu / RECORDS * 10_000:8.3f} s per 10,000 records"
            "   (target <= 0.5)"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
