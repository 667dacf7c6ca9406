"""Whether a path can be poller's SQLite checkpoint store, said in words a user can act on:
checked before the daemon starts (`poller validate` too) and when a store will not open."""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from poller.checkpoints import guard

# The schema the store writes; a file with a newer one is refused.
SCHEMA_VERSION = 2


def schema(db: sqlite3.Connection) -> tuple[set[str], int | None]:
    """The file's tables, and its poller schema version (None without a schema_version table)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        return tables, None
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return tables, 0 if row is None else int(row[0])


_SQLITE_HEADER = b"SQLite format 3\x00"
_ANOTHER_FILE = "point checkpoints.path at a new file or at one poller created"
ANOTHER_DIRECTORY = "point checkpoints.path at a file in a directory poller can write"


def path_problem(path_text: str) -> str | None:
    """What keeps `path_text` from holding poller's checkpoints, in words a user can act on;
    None when poller can create the file there, or the file is poller's.

    Nothing is created or changed, but for a probe file made and removed at once in the
    directory (only trying tells whether a directory takes files: root passes every access
    check, and /proc refuses anyway).
    """
    if path_text == ":memory:":
        return None
    path = Path(path_text)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return guard.lost_store_problem(path_text) or _directory_problem(path.parent)
    except OSError as exc:
        return f"cannot be reached ({exc.strerror or exc}); {ANOTHER_DIRECTORY}"
    if stat.S_ISDIR(mode):
        return f"a directory, not a file; name a file in it, e.g. {path / 'poller-state.db'}"
    if not stat.S_ISREG(mode):
        return f"not a regular file; {_ANOTHER_FILE}"
    return _directory_problem(path.parent) or _file_problem(path)


def _directory_problem(directory: Path) -> str | None:
    # A missing directory is created by the store: what matters is the nearest one that exists.
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory; {ANOTHER_DIRECTORY}"
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".poller-probe-")
    except OSError as exc:
        return f"cannot create files in {existing} ({exc.strerror or exc}); {ANOTHER_DIRECTORY}"
    os.close(handle)
    os.unlink(probe)
    return None


def _file_problem(path: Path) -> str | None:
    try:
        with path.open("r+b") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        return f"cannot be opened for writing ({exc.strerror or exc}); {_ANOTHER_FILE}"
    if not header:
        return None  # an empty file: SQLite makes it a database
    if header != _SQLITE_HEADER:
        return f"not a poller checkpoint file (not an SQLite database); {_ANOTHER_FILE}"
    try:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA query_only=1")
            tables, version = schema(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot be read as an SQLite database ({exc}); {_ANOTHER_FILE}"
    return schema_problem(tables, version)


def schema_problem(tables: set[str], version: int | None) -> str | None:
    if version is None and tables:
        names = ", ".join(sorted(tables)[:5])
        return (
            f"an SQLite database of another program (tables {names}), not poller's "
            f"checkpoints; {_ANOTHER_FILE}"
        )
    if version is not None and version > SCHEMA_VERSION:
        return (
            f"written by a newer poller (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade poller or point checkpoints.path at another file"
        )
    return None
