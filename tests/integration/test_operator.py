"""What an operator meets running `poller run`: a daemon that keeps serving whatever its mappings
do, handler errors in the logs, and start-up problems that name the setting and what to do."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess
from tests.support.leases import get_json, ops_port
from tests.support.queues import make_queue, send
from tests.support.streams import make_stream
from tests.support.wait import eventually

FUNCTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "functions"
PAUSED = "arn:aws:sqs:us-east-1:123456789012:paused"


def start(tmp_path: Path, config: str) -> DaemonProcess:
    path = tmp_path / "poller.yaml"
    path.write_text(config)
    daemon = DaemonProcess(path, tmp_path / "daemon.log")
    daemon.start()
    return daemon


def log_lines(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]


async def serves_until_sigterm(daemon: DaemonProcess, port: int) -> None:
    """The daemon answers probe after probe, then exits 0 on SIGTERM, having said so."""
    for _ in range(5):
        assert get_json(port, "/healthz") == {"status": "ok"}
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.logs()
    assert await daemon.stop() == 0, daemon.logs()
    assert "shutting down" in daemon.logs()


async def test_a_daemon_whose_mappings_are_all_disabled_serves_until_sigterm(
    moto: str, tmp_path: Path
) -> None:
    mappings = [{"source": PAUSED, "function": "orders-fn", "enabled": False}]
    daemon = start(tmp_path, config_yaml(moto, mappings))
    try:
        port = await eventually(lambda: ops_port(daemon))
        status = get_json(port, "/status")
        assert [(m["name"], m["state"]) for m in status["mappings"]] == [("orders", "disabled")]
        assert get_json(port, "/readyz")["ready"] is True
        await serves_until_sigterm(daemon, port)
    finally:
        daemon.kill()


async def test_an_unusable_checkpoint_path_fails_its_mapping_by_name_without_a_traceback(
    moto: str, kinesis: Any, tmp_path: Path
) -> None:
    arn = await make_stream(kinesis, "orders")
    mappings = [{"source": arn, "function": "orders-fn", "starting_position": "LATEST"}]
    checkpoints = {"path": "/proc/poller/state.db"}
    daemon = start(tmp_path, config_yaml(moto, mappings, checkpoints=checkpoints))
    try:
        port = await eventually(lambda: ops_port(daemon))

        def failed() -> Any:
            (mapping,) = get_json(port, "/status")["mappings"]
            return mapping if mapping["state"] == "failed" else None

        error = (await eventually(failed))["error"]
        assert error == (
            "mapping orders: checkpoints.path '/proc/poller/state.db': cannot create files in "
            "/proc (No such file or directory); point checkpoints.path at a file in a "
            "directory poller can write"
        )

        # Logged as it is, at ERROR; every one of its mappings failed, and the daemon stays up.
        def logged() -> bool:
            return any(
                line["level"] == "ERROR"
                and line.get("mapping") == "orders"
                and error in line["msg"]
                for line in log_lines(daemon)
            )

        await eventually(logged)
        await serves_until_sigterm(daemon, port)
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.logs()
    assert "internal error" not in daemon.logs()


async def test_a_raised_handler_error_is_logged_at_error_for_python_and_runtime_targets(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    python = await make_queue(sqs, "python-orders")
    runtime = await make_queue(sqs, "runtime-orders")
    mappings = [
        {
            "name": "python-orders",
            "source": python.arn,
            "target": {"type": "python", "handler": "tests.support.handlers:rejects"},
        },
        {
            "name": "runtime-orders",
            "source": runtime.arn,
            "target": {
                "type": "runtime",
                "code": str(FUNCTIONS / "python_app"),
                "handler": "app.fail",
            },
        },
    ]
    daemon = start(tmp_path, config_yaml(moto, mappings))
    try:
        await send(sqs, python.url, ["one"])
        await send(sqs, runtime.url, ["two"])

        def errors() -> dict[str, dict[str, Any]]:
            found = {line["function"]: line for line in log_lines(daemon) if "errorType" in line}
            return found if len(found) == 2 else {}

        logged = await eventually(errors, timeout=30)
    finally:
        await daemon.stop()
    assert logged["python-orders"]["level"] == logged["runtime-orders"]["level"] == "ERROR"
    assert logged["python-orders"]["errorType"] == "LookupError"
    assert logged["python-orders"]["errorMessage"] == "no customer for the 1 record(s)"
    assert "in rejects" in "".join(logged["python-orders"]["stackTrace"])
    assert logged["runtime-orders"]["errorType"] == "ValueError"
    assert logged["runtime-orders"]["errorMessage"] == "cannot process this batch"
    assert "in fail" in "".join(logged["runtime-orders"]["stackTrace"])
    for line in logged.values():
        assert line["request_id"]


async def test_a_python_handlers_stderr_and_log_records_are_its_function_lines(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "orders")
    payments = await make_queue(sqs, "payments")
    target = {"type": "python", "handler": "tests.support.handlers:reports"}
    powertools = {"type": "python", "handler": "tests.support.powertools_handlers:handler"}
    mappings = [
        {"name": "orders", "source": queue.arn, "target": target, "batch_size": 1},
        {"name": "payments", "source": payments.arn, "target": powertools},
    ]
    daemon = start(tmp_path, config_yaml(moto, mappings))
    try:
        await send(sqs, queue.url, ["one", "two"])
        await send(sqs, payments.url, ["three"])

        def function_lines(function: str) -> list[dict[str, Any]]:
            return [line for line in log_lines(daemon) if line.get("function") == function]

        await eventually(lambda: len(function_lines("orders")) >= 8, timeout=30)
        await eventually(lambda: function_lines("payments"), timeout=30)
    finally:
        await daemon.stop()
    # Powertools' Logger, set up at import, writes its own JSON to stdout: once, as a printed
    # line of the request (its record is not passed on a second time).
    (printed,) = function_lines("payments")
    assert printed["level"] == "INFO"
    written = json.loads(printed["output"])
    assert written["message"] == f"powertools info {printed['request_id']}"
    assert written["service"] == "payments"
    lines = function_lines("orders")
    requests = {line["request_id"] for line in lines}
    assert len(requests) == 2, lines
    for request in requests:
        mine = {(line["level"], line["output"]) for line in lines if line["request_id"] == request}
        # stderr at INFO, as stdout; each record at its own level, the root's INFO and DEBUG
        # under its WARNING level, a logger set to INFO passing its INFO.
        assert mine == {
            ("INFO", f"stdout {request}"),
            ("INFO", f"stderr {request}"),
            ("INFO", f"audit info {request}"),
            ("WARNING", f"app warning {request}"),
        }
    for line in [*lines, printed]:
        assert set(line) == {"ts", "level", "function", "request_id", "output"}
    logs = daemon.logs()
    assert "root debug" not in logs and "root info" not in logs
    # Nothing of the handler's went out raw or as one of the daemon's own lines, which still
    # carry their message and logger.
    assert [line for line in logs.splitlines() if line.startswith(("stderr ", '{"level"'))] == []
    daemon_lines = [line for line in log_lines(daemon) if "output" not in line]
    assert any(line["logger"].startswith("poller.") for line in daemon_lines)
    assert all({"msg", "logger"} <= set(line) for line in daemon_lines)
    handlers = ("root", "orders.app", "orders.audit", "payments")
    assert [line for line in daemon_lines if line["logger"] in handlers] == []


async def test_a_port_in_use_names_server_port_and_the_port(moto: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mappings = [{"source": PAUSED, "function": "orders-fn", "enabled": False}]
        daemon = start(tmp_path, config_yaml(moto, mappings, port=port))
        assert await daemon.wait(timeout=30) == 1
    (line,) = [line for line in log_lines(daemon) if line["level"] == "ERROR"]
    assert line["msg"] == (
        f"cannot start: server.port {port} is already in use on 127.0.0.1 (another poller or "
        "another program listens there); stop it, or set server.port to a free port (0 picks "
        "one)"
    )
    assert "Traceback" not in daemon.logs()
