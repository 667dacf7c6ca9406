"""Run the real daemon in the test's event loop, or as a `poller run` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from poller.app import App
from poller.config.settings import Settings
from poller.wiring import parse_settings
from tests.support.wait import eventually


def settings_from(yaml_text: str) -> Settings:
    """Settings from an inline YAML document (dedented), as a user would write it."""
    return parse_settings(textwrap.dedent(yaml_text), "test.yaml", environ=dict(os.environ))


@asynccontextmanager
async def running(settings: Settings, *, config_path: Path | None = None) -> AsyncIterator[App]:
    """The daemon running in this loop; on exit it gets a graceful stop and must finish.
    `config_path` is the file a reload reads."""
    app = App(settings, config_path=config_path)
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


def metric(app: App, name: str, **labels: str) -> float:
    """A sample's value from the app's registry (0 when absent)."""
    value = app.metrics.registry.get_sample_value(name, labels)
    return float(value) if value is not None else 0.0


def events_total(app: App, stage: str, mapping: str = "orders") -> float:
    """`poller_events_total` of one mapping at one stage (polled, deleted, filtered_out…)."""
    return metric(app, "poller_events_total", mapping=mapping, stage=stage)


def invocations_total(app: App, outcome: str, mapping: str = "orders") -> float:
    """`poller_invocations_total` of one mapping with one outcome (success, throttled…)."""
    return metric(app, "poller_invocations_total", mapping=mapping, outcome=outcome)


class DaemonProcess:
    """`poller run -c FILE` in a subprocess, logs captured to a file."""

    # Every one started, so that a test cut short leaves no daemon running (a per-test
    # timeout raises wherever the test is; its `finally` may not get to its clean-up).
    started: list[DaemonProcess] = []  # noqa: RUF012 - shared on purpose

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
                self.log_level,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        DaemonProcess.started.append(self)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait(self, timeout: float = 60.0) -> int:
        """Its exit code; killed, and the test failed with its logs, if it runs on."""
        proc = self.proc
        assert proc is not None
        try:
            await eventually(lambda: proc.poll() is not None, timeout=timeout)
        except AssertionError:
            proc.kill()
            raise AssertionError(f"daemon did not exit within {timeout}s:\n{self.logs()}") from None
        return proc.returncode

    def terminate(self) -> None:
        """SIGTERM, the graceful stop, if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then its exit code (see `wait`)."""
        self.terminate()
        return await self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @classmethod
    def kill_leftovers(cls) -> None:
        """Kill every daemon a test started and left running."""
        while cls.started:
            cls.started.pop().kill()
