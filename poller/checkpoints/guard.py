"""What guards a SQLite checkpoint file: its marker, its identity while open, and the words
for a call that failed on it.

The marker is a small file beside the store saying poller once ran on that path. Without
it a lost store looks like a first start: a stream mapping would begin again at its
`starting_position` (LATEST skips whatever arrived in between) and nobody would know. With
it, a missing store beside its marker is an error naming both; deleting both starts over on
purpose.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from poller.checkpoints.base import StoreUnusable

Identity = tuple[int, int]  # (st_dev, st_ino): which file a path names


def marker_path(path: str) -> str:
    """The marker of the checkpoint file at `path`."""
    return f"{path}.marker"


def lost_store_problem(path: str) -> str | None:
    """What is wrong when the store at `path` is missing but its marker is there; None when
    the store exists, or neither does (a first start)."""
    marker = marker_path(path)
    if os.path.lexists(path) or not os.path.lexists(marker):
        return None
    return (
        f"the file is missing, but its marker {marker!r} says poller stored checkpoints there "
        f"before (the file was deleted or moved, or the volume holding it is not mounted); "
        f"restore the file, or, to start over on purpose, delete {marker!r} too"
    )


def write_marker(path: str) -> None:
    """Write the marker of the store at `path` if it has none yet, durably (file and directory
    synced, so a power cut cannot leave a store without its marker)."""
    marker = Path(marker_path(path))
    if marker.exists():
        return
    text = (
        f"poller keeps stream checkpoints in {Path(path).name} beside this file (first opened "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}).\n"
        "If that file goes missing while this marker stays, poller refuses to start rather "
        "than begin again from starting_position. To start over on purpose, delete both.\n"
    )
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    directory = os.open(marker.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def identity(path: str) -> Identity | None:
    """Which file `path` names now; None when nothing is there."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def swapped_problem(path: str, opened: Identity) -> str | None:
    """What is wrong when `path` no longer names the file opened as `opened` (deleted, or
    replaced by another file); None while it still does.

    SQLite keeps writing to the file it opened even once its name is gone, so without this
    check positions would go on "being stored" where no restart can find them.
    """
    now = identity(path)
    if now == opened:
        return None
    what = "was deleted" if now is None else "was replaced by another file"
    return (
        f"the file {what} while poller was running, so checkpoints stored since it was "
        f"opened are lost to a restart; stop poller, then restore the file, or, to start over "
        f"on purpose, delete {marker_path(path)!r} too"
    )


# What to do about a failed call, by SQLite's primary error name.
_REMEDIES = {
    "SQLITE_FULL": "free space on its file system",
    "SQLITE_READONLY": "make its file system writable again",
    "SQLITE_IOERR": "check the disk and the file system holding it",
    "SQLITE_CANTOPEN": "check the directory holding it",
    "SQLITE_BUSY": "another process is using it",
    "SQLITE_LOCKED": "another process is using it",
}


def failed_call(exc: sqlite3.Error) -> str:
    """A failed call on an open store, in words: the reason and what would mend it."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    remedy = next((r for k, r in _REMEDIES.items() if name == k or name.startswith(f"{k}_")), "")
    reason = f"{exc} ({name})" if name else str(exc)
    advice = f"{remedy}; " if remedy else ""
    return f"{reason}; {advice}positions are kept in memory and the write is retried"


def check_not_lost(path: str) -> None:
    """Before opening: StoreUnusable when the store is missing beside its marker."""
    problem = None if path == ":memory:" else lost_store_problem(path)
    if problem:
        raise StoreUnusable(problem)


def opened(db: sqlite3.Connection, path: str, *, mark: bool) -> Identity | None:
    """Just opened: the file's identity (to notice it swapped later), and with `mark` (the
    daemon's way) its marker written if it has none; `db` is closed if that fails."""
    if path == ":memory:":
        return None
    try:
        if mark:
            write_marker(path)
    except OSError:
        db.close()
        raise
    return identity(path)


def check_same_file(path: str, opened: Identity | None) -> None:
    """While open: StoreUnusable, naming the path, when the file was deleted or replaced."""
    problem = None if opened is None else swapped_problem(path, opened)
    if problem:
        raise StoreUnusable(f"checkpoints.path {path!r}: {problem}")
