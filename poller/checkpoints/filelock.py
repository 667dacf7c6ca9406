"""One daemon per SQLite checkpoint file: an exclusive flock on a file beside it.

The kernel drops a flock when its process ends, however it ends (SIGKILL included), so a
crashed daemon never leaves the file locked; the lock file itself stays, and means nothing
unless a live process holds its lock. The holder's pid is written in it for the message of
whoever finds it taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from poller.checkpoints.base import StoreHeld


def lock_path(path: str) -> str:
    """The lock file of the checkpoint file at `path`."""
    return f"{path}.lock"


class FileLock:
    """An exclusive, non-blocking flock on `lock_path(path)`, held until `release()`."""

    def __init__(self, path: str) -> None:
        self.path = lock_path(path)
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Take the lock; StoreHeld, naming the holder's pid, when a live process has it."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self._created = True
        except FileExistsError:
            fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StoreHeld(f"in use by a running poller ({who}, lock {self.path})") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self, *, discard: bool = False) -> None:
        """Let the lock go (closing the file releases it). The file stays (removing it while
        another process opens it could let two hold the lock), but with `discard`, for a store
        that turned out unusable: a lock file this one created is removed, leaving the
        directory as it was."""
        if self._fd is not None:
            if discard and self._created:
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    return ""
