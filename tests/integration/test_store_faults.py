"""The SQLite checkpoint store failing under a running daemon: a write refused by the file
system makes the mapping degraded (counted, retried, nothing read twice), and a store deleted
under it, or missing beside its marker at a restart, fails the mapping naming the files."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.ports import free_port
from tests.support.status import mapping_status, metric_value
from tests.support.streams import make_stream, numbers, put_records, stream_yaml
from tests.support.wait import eventually


class PipedDaemon(DaemonProcess):
    """`poller run` whose output goes through a pipe (copied to the log file by this process):
    a file-size limit put on the daemon then limits its checkpoint file, not its logs."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "run", "-c", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
        DaemonProcess.started.append(self)
        pipe = self.proc.stdout
        assert pipe is not None

        def copy() -> None:
            with self.log_path.open("wb") as log:
                shutil.copyfileobj(pipe, log, 1)  # line by line, so logs() is current

        threading.Thread(target=copy, daemon=True).start()

    def limit_file_size(self, size: int | None) -> None:
        """RLIMIT_FSIZE of the running daemon (None: unlimited). Past it every write fails
        with EFBIG, root's too, as a full disk refuses them with ENOSPC: SQLite's own write
        fails for real (SQLITE_IOERR_WRITE), no wrapper involved."""
        assert self.proc is not None
        limit = resource.RLIM_INFINITY if size is None else size
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def _config(moto: str, fake: FakeLambda, state: Path, stream: str, port: int) -> str:
    mapping = {"source": stream, "starting_position": "TRIM_HORIZON", "batch_size": 5}
    text = stream_yaml(moto, fake, state, [mapping])
    return text.replace('"port": 0', f'"port": {port}')


async def _checkpoint_is(port: int, sequence: str) -> bool:
    status = await mapping_status(port)
    return bool(status and [shard["checkpoint"] for shard in status["shards"]] == [sequence])


async def _state(port: int) -> str | None:
    status = await mapping_status(port)
    return None if status is None else str(status["state"])


async def test_a_refused_checkpoint_write_degrades_retries_and_reads_nothing_twice(
    moto: str, kinesis: Any, tmp_path: Path
) -> None:
    stream = await make_stream(kinesis, "orders")
    port = free_port()
    async with FakeLambda() as fake:
        config = tmp_path / "poller.yaml"
        config.write_text(_config(moto, fake, tmp_path / "state.db", stream, port))
        daemon = PipedDaemon(config, tmp_path / "daemon.log")
        daemon.start()
        try:
            placed = await put_records(kinesis, stream, [("k", {"n": n}) for n in range(5)])
            await eventually(lambda: _checkpoint_is(port, placed[-1][1]), timeout=30)

            daemon.limit_file_size(1)  # every write to the checkpoint file now fails
            placed = await put_records(kinesis, stream, [("k", {"n": n}) for n in range(5, 10)])
            await eventually(lambda: len(event_records(fake)) >= 10, timeout=30)

            async def degraded_and_counted() -> dict[str, Any] | None:
                status = await mapping_status(port)
                errors = await metric_value(
                    port, "poller_source_errors_total", mapping="orders", operation="checkpoint"
                )
                return status if status and status["state"] == "degraded" and errors >= 2 else None

            status = await eventually(degraded_and_counted, timeout=30)
            assert "checkpoint not stored" in status["error"], status
            assert str(tmp_path / "state.db") in status["error"], status

            daemon.limit_file_size(None)  # space again: the next retry stores the position
            await eventually(lambda: _checkpoint_is(port, placed[-1][1]), timeout=60)
            assert await _state(port) == "running"
            # The position was kept in memory: nothing delivered was read again.
            assert sorted(numbers(event_records(fake))) == list(range(10)), daemon.logs()
            assert await daemon.stop() == 0, daemon.logs()
        finally:
            daemon.kill()
    assert "Traceback" not in daemon.logs()


def _remove_store(state: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{state}{suffix}")


def _exists(path: str | Path) -> bool:
    return os.path.exists(path)


async def _is_running(port: int) -> bool:
    return await _state(port) == "running"


async def _failed_with(port: int) -> str | None:
    status = await mapping_status(port)
    return str(status["error"]) if status and status["state"] == "failed" else None


async def test_a_store_deleted_under_the_daemon_fails_the_mapping_and_a_restart_names_both(
    moto: str, kinesis: Any, tmp_path: Path
) -> None:
    stream = await make_stream(kinesis, "orders")
    state, port = tmp_path / "state.db", free_port()
    async with FakeLambda() as fake:
        config = tmp_path / "poller.yaml"
        config.write_text(_config(moto, fake, state, stream, port))
        daemon = PipedDaemon(config, tmp_path / "first.log")
        daemon.start()
        try:
            placed = await put_records(kinesis, stream, [("k", {"n": n}) for n in range(3)])
            await eventually(lambda: _checkpoint_is(port, placed[-1][1]), timeout=30)
            assert _exists(f"{state}.marker")  # written at the first start

            _remove_store(state)
            await put_records(kinesis, stream, [("k", {"n": n}) for n in range(3, 6)])
            error = await eventually(lambda: _failed_with(port), timeout=30)
            assert str(state) in error and "deleted" in error, error
            assert await daemon.stop() == 0, daemon.logs()
        finally:
            daemon.kill()
        assert "Traceback" not in daemon.logs()

        # A restart finds the marker but no store: refused, naming both, rather than a
        # silent first start.
        _remove_store(state)
        restarted = PipedDaemon(config, tmp_path / "second.log")
        restarted.start()
        try:
            error = await eventually(lambda: _failed_with(port), timeout=30)
            assert str(state) in error and f"{state}.marker" in error, error
            assert not _exists(state)
            assert await restarted.stop() == 0, restarted.logs()
        finally:
            restarted.kill()

        # Both deleted: starting over on purpose is a first start, which runs.
        os.unlink(f"{state}.marker")
        fresh = PipedDaemon(config, tmp_path / "third.log")
        fresh.start()
        try:
            await eventually(lambda: _is_running(port), timeout=30)
            assert _exists(state) and _exists(f"{state}.marker")
            assert await fresh.stop() == 0, fresh.logs()
        finally:
            fresh.kill()
