"""SQS throughput: the daemon against the loops a user would otherwise write, side by side.

One moto server (its own process) serves every run; each run drains a fresh queue of
MESSAGES messages (moto's cost per call grows with queue depth: MOTO-NOTES.md keeps backlogs
to a few hundred). The daemon runs as a real `poller run` subprocess; its CPU time is read
from /proc between the moment it is ready and the moment the queue is empty.

1. concurrency: the daemon (maximum_concurrency 10, a 500 ms function behind the Invoke API)
   against a sequential boto3 loop (receive 10 → call the 500 ms function → delete).
2. overhead: the daemon with an instant in-process function against a bare receive+delete
   loop running at the same concurrency (10 loops) and calling no function (median of three
   alternated runs).
3. cost: the daemon's CPU seconds per 1,000 messages at batch size 10 (from run 2).
4. floor: the daemon with the Lambda target (an instant function behind the Invoke API)
   against the floor loop (tests/benchmarks/floor_sqs.py: receive → invoke → delete in
   aiobotocore, the same concurrency, its own process, the same Invoke server): throughput and
   CPU seconds per 1,000 messages, each the median of three alternated runs.
5. memory: the daemon's RSS when it is ready and when a DRAIN-message backlog is drained.

moto answers every call with `Connection: close`, so each call costs a TCP connection on both
sides of every comparison (the daemon and the loops make the same calls per batch): the ratios
compare like with like, the absolute CPU figures include that set-up, which AWS's keep-alive
would not cost.

Run with `make bench` or `python -m tests.benchmarks.bench_sqs`. Figures only, no pass/fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from tests.benchmarks.common import REPO, cpu_seconds, daemon, start_moto
from tests.support.fake_lambda import FakeLambda, Invocation
from tests.support.ports import free_port

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "300"))
DRAIN = int(os.environ.get("BENCH_DRAIN", "5000"))
RUNS = 3
CONCURRENCY = 10
FUNCTION_SECONDS = 0.5


def _sqs(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def _fill(endpoint: str, name: str, messages: int = MESSAGES) -> tuple[str, str]:
    sqs = _sqs(endpoint)
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    for start in range(0, messages, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f'{{"n": {start + i}}}'} for i in range(10)],
        )
    return url, f"arn:aws:sqs:us-east-1:123456789012:{name}"


def _empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(v == "0" for v in attributes.values())


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_daemon(
    endpoint: str,
    name: str,
    target: str,
    lambda_url: str | None,
    messages: int = MESSAGES,
    rss: list[float] | None = None,
) -> tuple[float, float]:
    """Drain a full queue with `poller run`; returns (messages per second, CPU seconds), and
    appends the RSS at the start and the end to `rss`."""
    url, arn = _fill(endpoint, name, messages)
    port = free_port()
    endpoints = f", endpoints: {{lambda: {lambda_url}}}" if lambda_url else ""
    config = (
        f"aws: {{region: us-east-1, endpoint_url: {endpoint}{endpoints}}}\n"
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "mappings:\n"
        f"  - name: {name}\n"
        f"    source: {arn}\n"
        f"    target: {target}\n"
        f"    scaling_config: {{maximum_concurrency: {CONCURRENCY}}}\n"
    )
    with daemon(config, port) as proc:
        started, cpu_before = time.perf_counter(), cpu_seconds(proc.pid)
        if rss is not None:
            rss.append(rss_mb(proc.pid))
        sqs = _sqs(endpoint)
        while not _empty(sqs, url):
            time.sleep(0.02)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu_before
        if rss is not None:
            rss.append(rss_mb(proc.pid))
    return messages / elapsed, cpu


def run_floor(endpoint: str, name: str, lambda_url: str) -> tuple[float, float]:
    """The floor loop (its own process) over a full queue; (messages per second, CPU s)."""
    url, _ = _fill(endpoint, name)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    command = [sys.executable, "-m", "tests.benchmarks.floor_sqs", endpoint, url, lambda_url]
    command += ["fast", str(MESSAGES), str(CONCURRENCY)]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=True, text=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return MESSAGES / figures["seconds"], figures["cpu"]


def run_sequential_loop(endpoint: str, name: str) -> float:
    """receive 10 → call the function (500 ms) → delete, one batch at a time."""
    url, _ = _fill(endpoint, name)
    sqs = _sqs(endpoint)
    started = time.perf_counter()
    done = 0
    while done < MESSAGES:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        time.sleep(FUNCTION_SECONDS)  # the function
        if messages:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            done += len(messages)
    return MESSAGES / (time.perf_counter() - started)


def run_bare_loops(endpoint: str, name: str) -> float:
    """CONCURRENCY threads of receive 10 + delete, calling nothing: the API calls alone."""
    url, _ = _fill(endpoint, name)
    done = [0]
    lock = threading.Lock()

    def loop() -> None:
        sqs = _sqs(endpoint)
        while True:
            with lock:
                if done[0] >= MESSAGES:
                    return
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if messages:
                sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                with lock:
                    done[0] += len(messages)

    started = time.perf_counter()
    threads = [threading.Thread(target=loop) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return MESSAGES / (time.perf_counter() - started)


def _function_thread(seconds: float = FUNCTION_SECONDS) -> tuple[str, threading.Event]:
    """A function taking `seconds` behind the Invoke API, in its own event loop thread."""
    ready: list[str] = []
    stop = threading.Event()
    started = threading.Event()

    async def serve() -> None:
        async def slow(event: Any, info: Invocation) -> Any:
            if seconds:
                await asyncio.sleep(seconds)
            return None

        async with FakeLambda(slow) as fake:
            ready.append(fake.endpoint_url)
            started.set()
            await asyncio.to_thread(stop.wait)

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    started.wait()
    return ready[0], stop


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server, endpoint = start_moto()
    lambda_url, stop_function = _function_thread()
    instant_url, stop_instant = _function_thread(0.0)
    try:
        print(f"SQS benchmark: {MESSAGES} messages per run, moto at {endpoint}")
        loop_rate = run_sequential_loop(endpoint, "seq-loop")
        daemon_slow, _ = run_daemon(
            endpoint, "daemon-slow", "{type: lambda, function: slow}", lambda_url
        )
        print("1. concurrency (500 ms function, batch 10, maximum_concurrency 10)")
        print(f"   sequential boto3 loop   {loop_rate:8.1f} msg/s")
        print(f"   poller                  {daemon_slow:8.1f} msg/s")
        print(f"   ratio                   {daemon_slow / loop_rate:8.2f}x   (target >= 6x)")

        # Alternated and the median of RUNS, as the floor comparison below: one run of a few
        # hundred messages moved the CPU figure by a third between runs.
        bare_rates: list[float] = []
        fast_runs: list[tuple[float, float]] = []
        for run in range(RUNS):
            bare_rates.append(run_bare_loops(endpoint, f"bare-loops-{run}"))
            fast_runs.append(
                run_daemon(
                    endpoint,
                    f"daemon-fast-{run}",
                    "{type: python, handler: 'tests.benchmarks.handlers:instant'}",
                    None,
                )
            )
        bare_rate = statistics.median(bare_rates)
        daemon_fast = statistics.median(rate for rate, _ in fast_runs)
        cpu = statistics.median(cpu for _, cpu in fast_runs)
        print(f"2. overhead (instant function, {CONCURRENCY} concurrent, median of {RUNS})")
        print(f"   bare receive+delete     {bare_rate:8.1f} msg/s")
        print(f"   poller                  {daemon_fast:8.1f} msg/s")
        print(f"   ratio                   {daemon_fast / bare_rate:8.2f}    (target >= 0.8)")
        print("3. cost (batch size 10)")
        print(
            f"   poller CPU              {cpu / MESSAGES * 1000:8.3f} s per 1,000 messages"
            "   (target <= 1)"
        )

        daemon_runs: list[tuple[float, float]] = []
        floor_runs: list[tuple[float, float]] = []
        for run in range(RUNS):  # alternated, so both see the same machine
            floor_runs.append(run_floor(endpoint, f"floor-{run}", instant_url))
            daemon_runs.append(
                run_daemon(
                    endpoint, f"daemon-invoke-{run}", "{type: lambda, function: fast}", instant_url
                )
            )
        floor_rate = statistics.median(r for r, _ in floor_runs)
        poller_rate = statistics.median(r for r, _ in daemon_runs)
        floor_cpu = statistics.median(c for _, c in floor_runs) / MESSAGES * 1000
        poller_cpu = statistics.median(c for _, c in daemon_runs) / MESSAGES * 1000
        print(
            f"4. floor (Invoke API, instant function, {CONCURRENCY} concurrent, median of {RUNS})"
        )
        print(f"   floor loop              {floor_rate:8.1f} msg/s   {floor_cpu:6.3f} CPU-s/1,000")
        print(
            f"   poller                  {poller_rate:8.1f} msg/s   {poller_cpu:6.3f} CPU-s/1,000"
        )
        print(
            f"   throughput ratio        {poller_rate / floor_rate:8.2f}    (target >= 0.9)\n"
            f"   CPU ratio               {poller_cpu / floor_cpu:8.2f}    (target <= 1.2)"
        )

        rss: list[float] = []
        drain_rate, drain_cpu = run_daemon(
            endpoint,
            "daemon-drain",
            "{type: python, handler: 'tests.benchmarks.handlers:instant'}",
            None,
            messages=DRAIN,
            rss=rss,
        )
        print(f"5. memory ({DRAIN}-message backlog, python target)")
        print(
            f"   RSS                     {rss[0]:8.1f} MB at the start, {rss[1]:.1f} MB drained"
            f"   ({(rss[1] - rss[0]) / rss[0]:+.1%}; target within ±10 %)"
        )
        print(
            f"   drain                   {drain_rate:8.1f} msg/s   "
            f"{drain_cpu / DRAIN * 1000:6.3f} CPU-s/1,000"
        )
    finally:
        stop_instant.set()
        stop_function.set()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
