"""`python` handlers the end-to-end tests point a daemon at, as `tests.support.handlers:NAME`
(`poller run` imports them from the directory it runs in: the repository's root)."""

from __future__ import annotations

from typing import Any


def rejects(event: dict[str, Any], context: Any) -> None:
    """Fails every batch, as a handler with a bug does."""
    raise LookupError(f"no customer for the {len(event['Records'])} record(s)")
