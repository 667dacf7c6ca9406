"""What every chaos scenario shares: moto in its own process, daemons, a recording function,
a /status watcher, and the figures a scenario reports and is judged by."""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from tests.support.daemon import DaemonProcess
from tests.support.fake_lambda import FakeLambda, Invocation, Reply
from tests.support.streams import kinesis_data

REPO = Path(__file__).resolve().parents[2]
# How late after a kill a delivery may still come from the daemon killed (see duplicates_by_kill).
KILL_GRACE_S = 1.0


@dataclass(frozen=True)
class Env:
    """What a scenario runs against: moto's endpoints, a fresh directory, the seed."""

    moto: str
    dynamodb: str
    tmp: Path
    seed: int


@contextmanager
def moto_process() -> Iterator[tuple[str, str]]:
    """moto (and its single-threaded DynamoDB front) in a child process: (moto, dynamodb)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.moto_main"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        yield urls["moto"], urls["dynamodb"]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def reset_moto(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass
class Delivery:
    """One record as the function saw it, in an invocation that succeeded."""

    t: float
    record: str
    key: str | None
    shard: str | None


# What the function does with one invocation's record ids; None: succeed.
Behaviour = Callable[[list[str]], Reply | None]


class Recorder:
    """The function under every scenario: runs `delay` seconds, answers what `behaviour` says,
    records the records of each invocation it runs (a fault answer, 429 or 503, means the
    function never ran; a function error ran it but delivered nothing), and notes every time
    two concurrent invocations share a partition key."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.behaviour: Behaviour = lambda ids: None
        self.deliveries: list[Delivery] = []
        self.key_overlaps = 0
        self.answered = 0
        self._active_keys: dict[str, int] = {}

    async def __call__(self, event: Any, info: Invocation) -> Reply:
        records = event["Records"]
        ids = [record_id(r) for r in records]
        keys = {r["kinesis"]["partitionKey"] for r in records if "kinesis" in r}
        if any(self._active_keys.get(key) for key in keys):
            self.key_overlaps += 1
        for key in keys:
            self._active_keys[key] = self._active_keys.get(key, 0) + 1
        try:
            reply = self.behaviour(ids)
            if reply is None:
                # Delivered when the function gets it, not when it answers: a daemon killed
                # while the function runs has delivered these records once already.
                now = time.monotonic()
                for r, rid in zip(records, ids, strict=True):
                    key = r["kinesis"]["partitionKey"] if "kinesis" in r else None
                    shard = r["eventID"].split(":")[0] if key else None
                    self.deliveries.append(Delivery(now, rid, key, shard))
                self.answered += 1
            await anyio.sleep(self.delay)
            return reply or Reply()
        finally:
            for key in keys:
                self._active_keys[key] -= 1

    def unique(self) -> set[str]:
        return {d.record for d in self.deliveries}

    def duplicates(self) -> int:
        return len(self.deliveries) - len(self.unique())

    def duplicates_by_kill(self, kills: list[float]) -> tuple[list[int], int]:
        """Each duplicate charged to the kill that caused it: the first kill after the
        record's previous delivery (kills come a few seconds apart, less than a visibility
        timeout, so the time a duplicate arrives does not say which kill it came from); and
        how many duplicates had no kill between their two deliveries."""
        last: dict[str, float] = {}
        counts = [0] * len(kills)
        unexplained = 0
        for d in self.deliveries:
            if d.record in last:
                # An invocation the killed daemon sent just before it died can be handled
                # here just after the kill was noted (the suite's loop was busy killing):
                # it still belongs to that kill.
                index = bisect.bisect_left(kills, last[d.record] - KILL_GRACE_S)
                if index < len(kills) and kills[index] < d.t:
                    counts[index] += 1
                else:
                    unexplained += 1
            last[d.record] = d.t
        return counts, unexplained

    def order_breaks(self) -> int:
        """Records whose first delivery came after a later record of the same key's first."""
        last: dict[str, int] = {}
        seen: set[str] = set()
        breaks = 0
        for d in self.deliveries:
            if d.record in seen or d.key is None:
                continue
            seen.add(d.record)
            n = int(d.record)
            if n < last.get(d.key, -1):
                breaks += 1
            last[d.key] = max(n, last.get(d.key, -1))
        return breaks


def record_id(record: dict[str, Any]) -> str:
    """The suite's own id of a record: an SQS body, or the `n` of a Kinesis record's data."""
    if "body" in record:
        return str(record["body"])
    return str(kinesis_data(record)["n"])


@asynccontextmanager
async def function(recorder: Recorder) -> AsyncIterator[FakeLambda]:
    async with FakeLambda(recorder) as fake:
        yield fake


class StatusWatch:
    """Polls each daemon's /status every 0.2 s, keeping (time, mapping state) per answer."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.seen: list[tuple[float, str, str | None]] = []

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                for port in list(self.ports):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/status") as response:
                            body = await response.json()
                    except (aiohttp.ClientError, TimeoutError, ValueError):
                        continue
                    for mapping in body.get("mappings", []):
                        self.seen.append((time.monotonic(), mapping["state"], mapping["error"]))
                await anyio.sleep(0.2)

    def states(self, start: float, end: float) -> set[str]:
        return {state for t, state, _ in self.seen if start <= t <= end}

    def errors(self, start: float, end: float) -> list[str]:
        return sorted({e for t, _, e in self.seen if start <= t <= end and e})

    def running_again(self, after: float) -> float | None:
        """When a mapping was first seen `running` at or after `after`."""
        return next((t for t, state, _ in self.seen if t >= after and state == "running"), None)


async def source_errors(port: int) -> dict[str, float]:
    """`poller_source_errors_total` by operation, from a daemon's /metrics (none: unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    return {
        sample.labels["operation"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "poller_source_errors_total" and sample.value
    }


@asynccontextmanager
async def watching() -> AsyncIterator[StatusWatch]:
    watch = StatusWatch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        try:
            yield watch
        finally:
            tg.cancel_scope.cancel()


class Daemons:
    """`poller run` processes of one scenario, each on its own ops port, INFO logs to files."""

    def __init__(self, env: Env, watch: StatusWatch) -> None:
        self.env = env
        self.watch = watch
        self.count = 0
        self.running: list[DaemonProcess] = []

    def start(self, config: str, port: int) -> DaemonProcess:
        self.count += 1
        path = self.env.tmp / f"poller-{self.count}.yaml"
        path.write_text(config)
        daemon = DaemonProcess(path, self.env.tmp / f"poller-{self.count}.log", log_level="INFO")
        daemon.port = port  # type: ignore[attr-defined]
        daemon.start()
        self.running.append(daemon)
        if port not in self.watch.ports:
            self.watch.ports.append(port)
        return daemon

    def kill(self, daemon: DaemonProcess) -> None:
        daemon.kill()
        self.running.remove(daemon)

    async def stop_all(self) -> list[int]:
        """SIGTERM every daemon still running; their exit codes."""
        codes = []
        for daemon in list(self.running):
            try:
                codes.append(await daemon.stop(timeout=40))
            finally:
                daemon.kill()
        self.running.clear()
        return codes

    def first_crash(self) -> str | None:
        """Where the first logged traceback ended, and its exception: to report, not judge."""
        for log in sorted(self.env.tmp.glob("poller-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                try:
                    text = str(json.loads(line).get("exc") or "")
                except ValueError:
                    continue
                # An exception group's traceback indents its members behind "|" and boxes them
                # in "+---" lines: the innermost frame and exception are the last ones.
                lines = [x.strip(" |") for x in text.splitlines()]
                lines = [x for x in lines if x and not x.startswith(("+", "^", "~"))]
                places = [x for x in lines if x.startswith('File "')]
                if places:
                    return f"{places[-1]}: {lines[-1]}"
        return None

    def crashes(self) -> int:
        """Tracebacks of mappings that crashed and were restarted, over every daemon's log."""
        total = 0
        for log in self.env.tmp.glob("poller-*.log"):
            total += log.read_text(errors="replace").count("Traceback")
        return total


@dataclass
class Result:
    """A scenario's figures and the checks they failed (none: it passed)."""

    name: str
    sent: int = 0
    unique: int = 0
    duplicates: int = 0
    bound: int = 0
    bound_source: str = ""
    on_failure: int = 0
    on_failure_expected: int = 0
    recover_s: float | None = None
    degraded: bool | None = None  # None: not a fault this scenario must show as degraded
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def lost(self) -> int:
        return self.sent - self.unique

    def judge(self) -> None:
        """Add the checks every scenario shares to `failures`."""
        if self.skipped:
            return
        if self.lost:
            self.failures.append(f"{self.lost} lost")
        if self.duplicates > self.bound:
            self.failures.append(f"{self.duplicates} duplicates over the bound of {self.bound}")
        if self.on_failure != self.on_failure_expected:
            self.failures.append(
                f"{self.on_failure} sent to on-failure, expected {self.on_failure_expected}"
            )
        if self.degraded is False:
            self.failures.append("never degraded during the fault")

    def report(self) -> str:
        if self.skipped:
            return f"--- {self.name}: SKIPPED ({self.skipped})"
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f} s"
        degraded = {None: "n/a", True: "yes", False: "NO"}[self.degraded]
        lines = [
            f"--- {self.name}: {'PASS' if not self.failures else 'FAIL'} ({self.seconds:.0f} s)",
            f"    sent {self.sent}, delivered unique {self.unique}, lost {self.lost}",
            f"    duplicates {self.duplicates} (bound {self.bound}: {self.bound_source})",
            f"    on-failure {self.on_failure} (expected {self.on_failure_expected}),"
            f" degraded during the fault: {degraded}, time to recover {recover}",
        ]
        lines.extend(f"    note: {note}" for note in self.notes)
        lines.extend(f"    FAILED: {failure}" for failure in self.failures)
        return "\n".join(lines)


def load() -> str:
    """The machine's load averages, to print beside the figures."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
