"""A shard reader's tumbling windows: which window is open, and when it must close.

A window closes when the reader takes a record at or past its end, when the shard is caught up
and the clock is `CLOSE_AFTER_END_SECONDS` past its end, or when the shard ends. Closing waits
for every batch of the window to settle, then makes the window's final invocation; only then
does a record of the next window enter a lane or the watermark, so a batch never spans two
windows and the checkpoint never passes a window before its final invocation succeeded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from poller.checkpoints.base import Checkpoint
from poller.engine.windows import (
    CLOSE_AFTER_END_SECONDS,
    OpenWindow,
    WindowMark,
    iso_second,
    window_start,
)


class ShardWindows:
    """The tumbling windows of one shard, `seconds` long, epoch-aligned."""

    __slots__ = ("_seconds", "_shard_id", "_source_arn", "open")

    def __init__(
        self, seconds: int, *, shard_id: str, source_arn: str, restored: WindowMark | None
    ) -> None:
        self._seconds = seconds
        self._shard_id = shard_id
        self._source_arn = source_arn
        # A window a checkpoint kept is resumed with its state; a record reached it already.
        self.open: OpenWindow | None = (
            None if restored is None else self._window(restored.start, restored.state, True)
        )

    def _window(
        self, start: int, state: bytes | None = None, delivered: bool = False
    ) -> OpenWindow:
        window = OpenWindow(
            start, self._seconds, shard_id=self._shard_id, source_arn=self._source_arn
        )
        if state is not None:
            window.state = state
        window.delivered = delivered
        return window

    def must_close_before(self, arrival: float) -> bool:
        """Whether the open window ends before a record that arrived at `arrival`."""
        return self.open is not None and arrival >= self.open.end

    def past_end(self, now: float) -> bool:
        """Whether a caught-up shard should close its open window at `now` (epoch seconds)."""
        return self.open is not None and now >= self.open.end + CLOSE_AFTER_END_SECONDS

    def take(self, arrival: float) -> None:
        """Open the window of a record entering the shard's lane, unless one is open (a record
        that arrived before the open window began is counted in it: windows never reopen)."""
        if self.open is None:
            self.open = self._window(window_start(arrival, self._seconds))

    async def close(
        self, drain: Callable[[], Awaitable[None]], final: Callable[[OpenWindow], Awaitable[None]]
    ) -> None:
        """Settle the open window's batches (`drain`), make its final invocation (`final`),
        and forget it. Raises what they raise (`Stopped` at shutdown: the window stays open,
        and its state in the last checkpoint)."""
        window = self.open
        if window is None:
            return
        await drain()
        await final(window)
        self.open = None

    def checkpoint(self, sequence_number: str | None, finished: bool) -> Checkpoint:
        """A checkpoint of the position with the open window's start and state."""
        mark = None if self.open is None else self.open.mark
        if mark is None:
            return Checkpoint(sequence_number, finished)
        return Checkpoint(sequence_number, finished, mark.start, mark.state)

    def status(self) -> dict[str, object] | None:
        """The open window for `/status`: start, end (epoch seconds) and the state's size."""
        window = self.open
        if window is None:
            return None
        return {
            "start": iso_second(window.start),
            "end": iso_second(window.end),
            "state_bytes": len(window.state),
        }
