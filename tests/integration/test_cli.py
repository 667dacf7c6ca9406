"""The command line as a user meets it: exit codes, messages, and the two end-to-end signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess
from tests.support.fake_lambda import FakeLambda, Invocation, SlowFunction
from tests.support.queues import depth, make_queue, send
from tests.support.wait import eventually

REPO = Path(__file__).resolve().parents[2]


def poller(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "poller", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=str(REPO),
    )


def test_validate_accepts_the_shipped_configs() -> None:
    for name in ("example.yaml", "demo.yaml"):
        result = poller("validate", "-c", str(REPO / "config" / name))
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"ok: \d+ mappings?\n", result.stdout)


def test_validate_reports_each_problem_with_file_line_and_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "mappings:\n"
        "  - name: orders\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:orders\n"
        "    target: {type: lambda, function: f}\n"
        "    batch_sise: 5\n"
        "    starting_position: LATEST\n"
    )
    result = poller("validate", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{config}:5: mappings[0].batch_sise:") for line in lines), lines
    assert any(line.startswith(f"{config}:6: mappings[0].starting_position:") for line in lines)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["run"], {"POLLER_CONFIG": ""}),
        (["run", "-c", "/nonexistent/poller.yaml"], {}),
        (["validate", "-c", "/nonexistent/poller.yaml"], {}),
        (["frobnicate"], {}),
        (["run", "--log-level", "LOUD", "-c", "x.yaml"], {}),
    ],
)
def test_usage_and_config_errors_exit_2_without_a_traceback(
    args: list[str], env: dict[str, str]
) -> None:
    result = poller(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_validate_refuses_the_targets_run_refuses(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "bootstrap").write_text("#!/bin/sh\n")  # not executable
    config = tmp_path / "c.yaml"
    config.write_text(
        "mappings:\n"
        "  - name: orders\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:orders\n"
        "    target: {type: python, handler: 'no_such_module_xyz:handle'}\n"
        "  - name: refunds\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:refunds\n"
        "    target: {type: python, handler: 'tests.support.handlers:no_such_function'}\n"
        "  - name: invoices\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:invoices\n"
        "    target:\n"
        "      type: runtime\n"
        f"      code: {plain}\n"
        "      handler: function.handler\n"
        "      runtime: provided\n"
        "  - name: missing\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:missing\n"
        f"    target: {{type: runtime, code: {tmp_path / 'nowhere'}, handler: app.handler}}\n"
        "  - name: paused\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:paused\n"
        "    target: {type: python, handler: 'no_such_module_xyz:handle'}\n"
        "    enabled: false\n"
    )
    result = poller("validate", "-c", str(config))
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{config}:4: mappings[0].target.handler: mapping orders: handler "
        "'no_such_module_xyz:handle': module 'no_such_module_xyz' not found; install it or add "
        "the directory holding it to PYTHONPATH",
        f"{config}:7: mappings[1].target.handler: mapping refunds: handler "
        "'tests.support.handlers:no_such_function': 'tests.support.handlers' has no attribute "
        "'no_such_function'; check the name after the colon",
        f"{config}:12: mappings[2].target.code: mapping invoices: bootstrap in {plain} is not "
        "executable; make it so (chmod +x bootstrap, and zip the package with its permissions)",
        f"{config}:17: mappings[3].target.code: mapping missing: code "
        f"'{tmp_path / 'nowhere'}' does not exist (resolved to {tmp_path / 'nowhere'}); "
        "relative paths are taken from the directory poller runs in",
    ]
    # run refuses the same, stopping at the first.
    run = poller("run", "-c", str(config))
    assert run.returncode == 2
    assert run.stderr.startswith(f"{config}: mapping orders: target: handler 'no_such_module_xyz")
    assert "Traceback" not in run.stderr


def stream_config(tmp_path: Path, checkpoint_path: Path, source: str) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"checkpoints: {{path: {checkpoint_path}}}\n"
        "mappings:\n"
        "  - name: orders\n"
        f"    source: {source}\n"
        "    target: {type: lambda, function: f}\n"
        + ("    starting_position: LATEST\n" if ":kinesis:" in source else "")
    )
    return config


STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def test_validate_checks_the_checkpoint_file_a_stream_mapping_needs(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    result = poller("validate", "-c", str(stream_config(tmp_path, notes, STREAM)))
    assert result.returncode == 2
    assert result.stderr == (
        f"{tmp_path / 'c.yaml'}:1: checkpoints.path: '{notes}': not a poller checkpoint file "
        "(not an SQLite database); point checkpoints.path at a new file or at one poller "
        "created\n"
    )
    proc = Path("/proc/poller/state.db")
    result = poller("validate", "-c", str(stream_config(tmp_path, proc, STREAM)))
    assert result.returncode == 2
    assert "checkpoints.path: '/proc/poller/state.db': cannot create files in /proc" in (
        result.stderr
    )
    # A new file in a directory still to be made is fine, and validate makes neither.
    fresh = tmp_path / "state" / "poller.db"
    assert poller("validate", "-c", str(stream_config(tmp_path, fresh, STREAM))).returncode == 0
    assert not fresh.parent.exists()
    # Only a stream mapping needs the store.
    queue = "arn:aws:sqs:us-east-1:123456789012:orders"
    assert poller("validate", "-c", str(stream_config(tmp_path, notes, queue))).returncode == 0


def test_demo_runs_and_moves_messages() -> None:
    result = poller("demo", "--duration", "6", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    processed = re.search(r"stopped; (\d+) messages processed", result.stdout)
    assert processed and int(processed.group(1)) > 0, result.stdout


def daemon_config(tmp_path: Path, moto: str, fake: FakeLambda, queue_arn: str) -> Path:
    path = tmp_path / "poller.yaml"
    mappings = [{"source": queue_arn, "function": "orders-fn"}]
    path.write_text(config_yaml(moto, mappings, lambda_url=fake.endpoint_url, shutdown_timeout=15))
    return path


async def test_sigterm_drains_the_in_flight_batch_and_deletes_it(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    async with FakeLambda(SlowFunction(2)) as fake:
        queue = await make_queue(sqs, "orders", visibility_timeout=30)
        await send(sqs, queue.url, ["one", "two", "three"])
        daemon = DaemonProcess(daemon_config(tmp_path, moto, fake, queue.arn), tmp_path / "log")
        daemon.start()
        try:
            await fake.wait_for(1, timeout=30)
            assert await daemon.stop(timeout=30) == 0, daemon.logs()
        finally:
            daemon.kill()
        # The batch in flight at SIGTERM finished and was deleted, not abandoned.
        assert await depth(sqs, queue.url) == (0, 0), daemon.logs()
        assert len(fake.invocations) == 1
        assert "shutting down" in daemon.logs()


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
async def test_a_second_signal_during_the_drain_exits_at_once_with_128_plus_n(
    moto: str, sqs: Any, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    release = anyio.Event()

    async def stuck_until_released(event: Any, info: Invocation) -> Any:
        await release.wait()
        return None

    async with FakeLambda(stuck_until_released) as fake:
        queue = await make_queue(sqs, "orders", visibility_timeout=30)
        await send(sqs, queue.url, ["one"])
        config = tmp_path / "poller.yaml"
        mappings = [{"source": queue.arn, "function": "orders-fn"}]
        # A drain far longer than the test may take: only the second signal can end it soon.
        config.write_text(
            config_yaml(moto, mappings, lambda_url=fake.endpoint_url, shutdown_timeout=120)
        )
        daemon = DaemonProcess(config, tmp_path / "log")
        daemon.start()
        proc = daemon.proc
        assert proc is not None
        try:
            await fake.wait_for(1, timeout=30)  # the batch is in flight, and stays there
            proc.send_signal(signum)
            await eventually(lambda: "shutting down" in daemon.logs(), timeout=15)
            assert proc.poll() is None, daemon.logs()  # still draining the held batch
            second = time.monotonic()
            proc.send_signal(signum)
            assert await daemon.wait(timeout=10) == code, daemon.logs()
            print(f"\nexit {code} {time.monotonic() - second:.2f}s after the second signal")
        finally:
            release.set()
            daemon.kill()
        assert "second signal" in daemon.logs()


async def test_sigkill_loses_nothing(moto: str, sqs: Any, tmp_path: Path) -> None:
    release = anyio.Event()

    async def stuck_until_released(event: Any, info: Invocation) -> Any:
        await release.wait()
        return None

    async with FakeLambda(stuck_until_released) as fake:
        queue = await make_queue(sqs, "orders", visibility_timeout=2)
        await send(sqs, queue.url, [f"m{i}" for i in range(5)])
        config = daemon_config(tmp_path, moto, fake, queue.arn)
        first = DaemonProcess(config, tmp_path / "first.log")
        first.start()
        try:
            await fake.wait_for(1, timeout=30)
        finally:
            first.kill()  # SIGKILL with the batch in flight
        # Nothing was deleted; the messages reappear within one visibility timeout.
        await eventually(lambda: _visible(sqs, queue.url, 5), timeout=15)
        release.set()
        fake.reset()
        second = DaemonProcess(config, tmp_path / "second.log")
        second.start()
        try:
            # Delivered again, then deleted. (Waiting for the queue alone is not enough: moto
            # can report a depth of 0 while a receive is moving the messages in flight.)
            await eventually(lambda: len(_bodies(fake)) >= 5, timeout=30)
            await eventually(lambda: _empty(sqs, queue.url), timeout=30)
        finally:
            await second.stop(timeout=30)
        assert sorted(_bodies(fake)) == [f"m{i}" for i in range(5)]


def _bodies(fake: FakeLambda) -> list[str]:
    return [r["body"] for inv in fake.invocations for r in inv.event["Records"]]


async def _visible(sqs: Any, url: str, count: int) -> bool:
    return (await depth(sqs, url))[0] == count


async def _empty(sqs: Any, url: str) -> bool:
    return await depth(sqs, url) == (0, 0)
