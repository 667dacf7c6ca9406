"""The `runtime` target's own cost: warm invocation overhead and cold start.

Invokes the target directly (no source, no engine) with an empty handler, so what is measured is
poller's Runtime API round trip plus the runtime's loop:

1. warm: median and p99 per invocation over INVOCATIONS sequential calls of one warm
   environment, for `runtime: python` (awslambdaric) and `runtime: provided` (the bash
   bootstrap of the test fixtures, which starts processes per call and so shows a ceiling);
   the in-process `python` target beside them for scale.
2. cold: median of COLD_STARTS first invocations, each on a fresh target (unpacking the small
   fixture package, starting the process, init, the invocation itself).

Run with `make bench` or `python -m tests.benchmarks.bench_runtime`. Figures only, no pass/fail
(the issue's target: median warm overhead <= 2 ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from poller.config.settings import PythonTargetSettings, RuntimeTargetSettings
from poller.targets import InvocationRequest, Outcome, PythonTarget, RuntimeTarget
from poller.targets.base import Target

INVOCATIONS = int(os.environ.get("BENCH_RUNTIME_INVOCATIONS", "500"))
COLD_STARTS = int(os.environ.get("BENCH_RUNTIME_COLD_STARTS", "7"))
FUNCTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "functions"
EVENT = json.dumps({"Records": [{"messageId": "m1", "body": "x" * 200}]}).encode()
TRACE = "Root=1-5f3a8b2c-0123456789abcdef01234567;Sampled=0"


def _runtime(runtime: str) -> RuntimeTarget:
    if runtime == "python":
        code, handler = FUNCTIONS / "python_app", "app.empty"
    else:
        code, handler = FUNCTIONS / "provided_app", "function.handler"
    settings = RuntimeTargetSettings(
        type="runtime", code=str(code), handler=handler, runtime=runtime, concurrency=1
    )
    return RuntimeTarget(
        settings,
        mapping_name="bench",
        region="us-east-1",
        account="123456789012",
        default_concurrency=1,
        init_timeout=10,
        on_output=lambda *line: None,
    )


def _in_process() -> PythonTarget:
    settings = PythonTargetSettings(type="python", handler="tests.benchmarks.handlers:instant")
    return PythonTarget(settings, mapping_name="bench", region="us-east-1", account="123456789012")


async def _invoke(target: Target, number: int) -> float:
    started = time.perf_counter()
    result = await target.invoke(InvocationRequest(EVENT, f"req-{number}", TRACE))
    took = time.perf_counter() - started
    if result.outcome is not Outcome.SUCCESS:
        raise RuntimeError(f"benchmark invocation failed: {result}")
    return took


async def _warm(target: Target, count: int) -> list[float]:
    async with target:
        for number in range(20):  # start the environment and let it settle
            await _invoke(target, number)
        return [await _invoke(target, number) for number in range(count)]


async def _cold(runtime: str) -> list[float]:
    times = []
    for number in range(COLD_STARTS):
        async with _runtime(runtime) as target:
            times.append(await _invoke(target, number))
    return times


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def _run() -> None:
    print(f"warm: {INVOCATIONS} sequential invocations, empty handler, one environment")
    baseline = await _warm(_in_process(), INVOCATIONS)
    print(f"  python target (in process)  median {_ms(statistics.median(baseline))}")
    for runtime in ("python", "provided"):
        times = await _warm(_runtime(runtime), INVOCATIONS if runtime == "python" else 100)
        median, p99 = statistics.median(times), _p99(times)
        ratio = median / statistics.median(baseline)
        print(
            f"  runtime: {runtime:<8}           median {_ms(median)}   p99 {_ms(p99)}"
            f"   ({ratio:.0f}x the in-process call)"
        )
    print(f"cold: first invocation of a fresh target, median of {COLD_STARTS}")
    for runtime in ("python", "provided"):
        times = await _cold(runtime)
        print(
            f"  runtime: {runtime:<8}           median {_ms(statistics.median(times))}"
            f"   min {_ms(min(times))}   max {_ms(max(times))}"
        )


def main() -> None:
    """Print the runtime target's warm overhead and cold start figures."""
    asyncio.run(_run())


if __name__ == "__main__":
    main()
