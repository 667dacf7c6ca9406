"""The pure parts of `poller status` and `poller checkpoints`: the table, times, the file lock."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from poller.checkpoints.base import StoreHeld
from poller.checkpoints.filelock import FileLock
from poller.ops.commands.arguments import parse_time
from poller.ops.commands.status import render


def test_status_table_shows_owner_age_and_the_open_window() -> None:
    window = {"start": "2024-05-01T12:00:00Z", "end": "2024-05-01T12:15:00Z", "state_bytes": 42}
    document = {
        "mappings": [
            {
                "name": "orders",
                "state": "degraded",
                "error": "throttled",
                "shards": [
                    {
                        "id": "shard-1",
                        "owner": "host-1-ab",
                        "checkpoint": "495",
                        "iterator_age_seconds": 1.25,
                        "window": window,
                    },
                    {
                        "id": "shard-22",
                        "owner": None,
                        "checkpoint": None,
                        "iterator_age_seconds": None,
                        "window": None,
                    },
                ],
            },
            {"name": "refunds", "state": "running", "error": None, "shards": []},
        ]
    }
    lines = render(document).splitlines()
    assert lines[1].split() == ["orders", "degraded", "throttled"]
    assert lines[3].split() == [
        "shard-1",
        "host-1-ab",
        "495",
        "1.2s",
        "2024-05-01T12:00:00Z–2024-05-01T12:15:00Z",
        "(42",
        "B",
        "state)",
    ]
    assert lines[4].split() == ["shard-22", "-", "-", "-", "-"]
    assert lines[3].index("host-1-ab") == lines[4].index(" - ") + 1  # columns line up
    assert lines[7].split() == ["refunds", "running", "-"]
    assert render({"mappings": []}) == "no mappings\n"


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("1714564800", 1714564800.0),
        ("1714564800.5", 1714564800.5),
        ("2024-05-01T12:00:00", 1714564800.0),
        ("2024-05-01T12:00:00Z", 1714564800.0),
        ("2024-05-01T14:00:00+02:00", 1714564800.0),
    ],
)
def test_times_are_iso_8601_in_utc_without_offset_or_epoch_seconds(text: str, epoch: float) -> None:
    assert parse_time(text) == epoch


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither ISO 8601"):
        parse_time("yesterday")


def test_the_file_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from poller.checkpoints.filelock import FileLock; "
            f"FileLock({path!r}).acquire(); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(StoreHeld, match=f"pid {holder.pid}"):
            FileLock(path).acquire()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    lock = FileLock(path)
    lock.acquire()
    with pytest.raises(StoreHeld):
        FileLock(path).acquire()
    lock.release()
    FileLock(path).acquire()
