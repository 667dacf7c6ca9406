"""Tumbling windows: state a function keeps across the invocations of one time window.

A stream mapping with `tumbling_window_in_seconds` cuts each shard's records into epoch-aligned
windows by arrival time. Every invocation of a window carries the window's bounds and the state
the previous one returned; the function must answer with a new `state` (a JSON object). When
the window closes, a final invocation with no records hands the function the aggregate. A state
over 1 MB ends the window early: one invocation with that state and no records, then the window
goes on with `{}`.

`OpenWindow` is one shard's current window. The shard reader decides when a window closes (it
sees the records and the clock); the settler builds the events and reads the answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

# A window's state is capped at 1 MB of compact JSON; past that the window ends early.
MAX_STATE_BYTES = 1024 * 1024
# A caught-up shard closes its window once the clock is this far past the window's end, so a
# record that arrived just before the end has had time to be read.
CLOSE_AFTER_END_SECONDS = 2.0
EMPTY_STATE = b"{}"


@dataclass(frozen=True, slots=True)
class WindowMark:
    """What a checkpoint keeps of an open window: its start and the state handed on so far."""

    start: int
    state: bytes


def window_start(arrival: float, seconds: int) -> int:
    """The start (epoch seconds) of the window of `seconds` that holds `arrival`."""
    return int(arrival // seconds) * seconds


def iso_second(epoch: int) -> str:
    """Epoch seconds as ISO 8601 UTC to the second, as Lambda writes window bounds."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compact(value: object) -> bytes:
    """A JSON value as the compact text a state is kept, sized and sent in."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def read_state(payload: bytes | None) -> tuple[bytes | None, str]:
    """The `state` object of a function's answer as compact JSON, or (None, what is wrong)."""
    try:
        answer = json.loads(payload) if payload else None
    except (ValueError, UnicodeDecodeError):
        return None, "the answer is not JSON, so it has no state"
    if not isinstance(answer, dict) or "state" not in answer:
        return None, "the answer has no state (a windowed function must return one)"
    if not isinstance(answer["state"], dict):
        return None, "the answer's state is not a JSON object"
    return compact(answer["state"]), ""


class OpenWindow:
    """One shard's current tumbling window: its bounds, its state, whether it reached the
    function (a window no record reached gets no final invocation)."""

    __slots__ = ("delivered", "end", "shard_id", "source_arn", "start", "state")

    def __init__(
        self,
        start: int,
        seconds: int,
        *,
        shard_id: str,
        source_arn: str,
        state: bytes = EMPTY_STATE,
        delivered: bool = False,
    ) -> None:
        self.start = start
        self.end = start + seconds
        self.shard_id = shard_id
        self.source_arn = source_arn
        self.state = state
        self.delivered = delivered

    def holds(self, arrival: float) -> bool:
        """Whether a record that arrived at `arrival` belongs to this window."""
        return self.start <= arrival < self.end

    @property
    def mark(self) -> WindowMark | None:
        """What a checkpoint keeps of this window; None until a record reached the function."""
        return WindowMark(self.start, self.state) if self.delivered else None

    @property
    def state_too_large(self) -> bool:
        """Whether the state outgrew the 1 MB cap, which ends the window early."""
        return len(self.state) > MAX_STATE_BYTES

    def event(
        self, serialized_records: Iterable[bytes], *, final: bool = False, early: bool = False
    ) -> bytes:
        """The event of one invocation of this window: the records, then the window's fields
        in the order Lambda writes them."""
        window = compact({"start": iso_second(self.start), "end": iso_second(self.end)})
        return b"".join(
            (
                b'{"Records":[',
                b",".join(serialized_records),
                b'],"window":',
                window,
                b',"state":',
                self.state,
                b',"shardId":',
                compact(self.shard_id),
                b',"eventSourceARN":',
                compact(self.source_arn),
                b',"isFinalInvokeForWindow":',
                b"true" if final else b"false",
                b',"isWindowTerminatedEarly":',
                b"true" if early else b"false",
                b"}",
            )
        )
