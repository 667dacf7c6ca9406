"""A Lambda handler for the `python` target in conformance tests: it remembers what it saw."""

from __future__ import annotations

import os
from typing import Any

seen: list[dict[str, Any]] = []


def remember(event: dict[str, Any], context: Any) -> None:
    """Keep the invocation's trace id and the event's size. In-process handlers share one
    environment, so the `python` target hands the trace id over on the context (`trace_id`)
    rather than in _X_AMZN_TRACE_ID; a `runtime` target's process gets the variable."""
    trace = os.environ.get("_X_AMZN_TRACE_ID") or getattr(context, "trace_id", None)
    seen.append({"trace": trace, "records": len(event["Records"])})
