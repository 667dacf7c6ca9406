"""`make chaos`: every chaos scenario in turn against one moto, a summary table at the end;
exit 1 if any scenario failed. `python -m tests.chaos [--seed N] [NAME_PREFIX ...]`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio

from tests.chaos import faults, kills
from tests.chaos.harness import Env, Result, load, moto_process, reset_moto

Scenario = Callable[[Env], Awaitable[Result]]

SCENARIOS: list[tuple[str, Scenario]] = [
    ("sqs-sigkill", kills.sqs_sigkill),
    ("kinesis-sigkill-pf1", partial(kills.kinesis_sigkill, parallelization_factor=1)),
    ("kinesis-sigkill-pf4", partial(kills.kinesis_sigkill, parallelization_factor=4)),
    ("leases-sigkill-3-replicas", kills.leases_sigkill),
    *((name, partial(faults.outage, name=name)) for name in faults.OUTAGES),
    ("store-full", faults.store_full),
    ("throttle-storm", faults.throttle_storm),
    ("poison-record", faults.poison_record),
]

# Each scenario stops by itself well within this; past it, the scenario is failed.
SCENARIO_LIMIT_S = 150


async def run(names: list[str], seed: int) -> list[Result]:
    results: list[Result] = []
    with moto_process() as (moto, dynamodb):
        for name, scenario in SCENARIOS:
            if names and not any(name.startswith(prefix) for prefix in names):
                continue
            reset_moto(moto)
            print(f"\n=== {name} ({load()})", flush=True)
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
                env = Env(moto, dynamodb, Path(tmp), seed)
                try:
                    with anyio.fail_after(SCENARIO_LIMIT_S):
                        result = await scenario(env)
                except (Exception, TimeoutError) as exc:
                    result = Result(name)
                    result.failures.append(f"did not finish: {type(exc).__name__}: {exc}")
                    traceback.print_exception(exc)
                    _show_logs(env.tmp)
            result.seconds = time.monotonic() - started
            result.judge()
            print(result.report(), flush=True)
            results.append(result)
    return results


def _show_logs(tmp: Path) -> None:
    """The tail of each daemon's log of a scenario that broke, to see why."""
    for log in sorted(tmp.glob("poller-*.log")):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        print(f"    {log.name}:", *(f"      {line[:300]}" for line in lines), sep="\n")


def summary(results: list[Result]) -> str:
    header = ("scenario", "sent", "unique", "lost", "dups", "bound", "on-fail", "degraded",
              "recover", "time", "verdict")  # fmt: skip
    rows = [header]
    for r in results:
        degraded = {None: "n/a", True: "yes", False: "NO"}[r.degraded]
        recover = "-" if r.recover_s is None else f"{r.recover_s:.1f}s"
        verdict = "SKIP" if r.skipped else ("PASS" if not r.failures else "FAIL")
        rows.append((r.name, str(r.sent), str(r.unique), str(r.lost), str(r.duplicates),
                     str(r.bound), str(r.on_failure), degraded, recover, f"{r.seconds:.0f}s",
                     verdict))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("names", nargs="*", help="run only the scenarios starting with these")
    args = parser.parse_args()
    # Dummy credentials for moto, never real ones (as the test suite's conftest does).
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    )
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    started = time.monotonic()
    results = anyio.run(run, args.names, args.seed)
    print(f"\n=== chaos summary (seed {args.seed}, {time.monotonic() - started:.0f} s, {load()})")
    print(summary(results))
    failed = [r.name for r in results if r.failures]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    sys.exit(1 if failed or not results else 0)


main()
