"""What every benchmark needs: moto in its own process, the daemon as a subprocess, its CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's server in its own process, so its GIL is not shared with the loops measured,
    with its clock made cheap (tests/benchmarks/fast_moto.py says why)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.fast_moto", "-H", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)
    return proc, endpoint


@contextmanager
def daemon(config: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`poller run` on `config` (whose server.port is `port`), yielded once /readyz answers;
    stopped with SIGTERM on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(config)
        proc = subprocess.Popen(
            [sys.executable, "-m", "poller", "run", "-c", str(path), "--log-level", "WARNING"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"poller exited with {proc.returncode}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                        break
                except OSError:
                    time.sleep(0.01)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
