"""`python` handlers the end-to-end tests point a daemon at, as `tests.support.handlers:NAME`
(`poller run` imports them from the directory it runs in: the repository's root)."""

from __future__ import annotations

import logging
import sys
from typing import Any


def rejects(event: dict[str, Any], context: Any) -> None:
    """Fails every batch, as a handler with a bug does."""
    raise LookupError(f"no customer for the {len(event['Records'])} record(s)")


def reports(event: dict[str, Any], context: Any) -> None:
    """Says what it does on each stream and logger a handler has, naming the request it serves."""
    request = context.aws_request_id
    print(f"stdout {request}")
    print(f"stderr {request}", file=sys.stderr)
    logging.info("root info %s", request)
    logging.getLogger("orders.app").warning("app warning %s", request)
    logging.debug("root debug %s", request)
