"""The event envelope every source shares: `{"Records": [...]}`, its size, compact JSON, and
fresh trace headers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import orjson

# Lambda's synchronous invoke limit; a batch closes before its serialized event passes it.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# b'{"Records":[' + b']}': what the envelope adds around the records.
_ENVELOPE_BYTES = len(b'{"Records":[]}')


def dumps(value: Any) -> bytes:
    """Compact JSON, as Lambda sends it: UTF-8, nothing but quotes, backslashes and control
    characters escaped. orjson writes the same bytes `json.dumps(separators=(",", ":"),
    ensure_ascii=False)` did (tests/conformance/golden holds them) in about a third of the time."""
    return orjson.dumps(value)


def event_payload(serialized_records: Iterable[bytes]) -> bytes:
    """Join records that were serialized once each into `{"Records": [...]}` bytes."""
    return b'{"Records":[' + b",".join(serialized_records) + b"]}"


def payload_size(record_sizes: int, count: int) -> int:
    """Size of the event holding `count` records whose serialized sizes add up to record_sizes."""
    return _ENVELOPE_BYTES + record_sizes + max(count - 1, 0)


def new_trace_header(now: float | None = None) -> str:
    """A fresh X-Ray trace header, as Lambda's look: Root=1-<epoch hex>-<96 random bits>,
    Parent=<64 random bits>, not sampled."""
    epoch = int(now if now is not None else time.time())
    return f"Root=1-{epoch:08x}-{os.urandom(12).hex()};Parent={os.urandom(8).hex()};Sampled=0"
