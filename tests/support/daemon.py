"""Run the real daemon in the test's event loop, or as a `poller run` subprocess."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from poller.app import App
from poller.config.settings import Settings, parse_config


def settings_from(yaml_text: str) -> Settings:
    """Settings from an inline YAML document (dedented), as a user would write it."""
    return parse_config(textwrap.dedent(yaml_text), "test.yaml", environ=dict(os.environ))


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[App]:
    """The daemon running in this loop; on exit it gets a graceful stop and must finish."""
    app = App(settings)
    app.build_targets()
    codes: list[int] = []

    async def _run() -> None:
        codes.append(await app.run(handle_signals=False))

    async with anyio.create_task_group() as tg:
        tg.start_soon(_run)
        await app.started.wait()
        try:
            yield app
        finally:
            app.stop()
    app.exit_code = codes[0] if codes else None  # type: ignore[attr-defined]


async def eventually(
    condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Wait until `condition()` (sync or async) is truthy; fail with a clear message if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(interval)


def metric(app: App, name: str, **labels: str) -> float:
    """A sample's value from the app's registry (0 when absent)."""
    value = app.metrics.registry.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


class DaemonProcess:
    """`poller run -c FILE` in a subprocess, logs captured to a file."""

    def __init__(self, config_path: Path, log_path: Path, *, log_level: str = "DEBUG") -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "poller",
                "run",
                "-c",
                str(self.config_path),
                "--log-format",
                "json",
                "--log-level",
                "DEBUG",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"daemon did not exit within {timeout}s:\n{self.logs()}")
            await anyio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


Condition = Callable[[], Awaitable[bool]]


def sqs_mapping_yaml(moto: str, lambda_url: str, queue_arn: str, mapping: str = "") -> str:
    """A config with one SQS mapping `orders` → the fake function `orders-fn`; `mapping` is
    more YAML indented under the mapping."""
    return (
        f"aws: {{region: us-east-1, endpoint_url: {moto},"
        f" endpoints: {{lambda: {lambda_url}}}}}\n"
        "server: {host: 127.0.0.1, port: 0}\n"
        "shutdown_timeout_seconds: 10\n"
        "mappings:\n"
        "  - name: orders\n"
        f"    source: {queue_arn}\n"
        "    target: {type: lambda, function: orders-fn}\n" + mapping
    )
