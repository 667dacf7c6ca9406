"""`python` handlers the end-to-end tests point a daemon at, as `tests.support.handlers:NAME`
(`poller run` imports them from the directory it runs in: the repository's root)."""

from __future__ import annotations

import logging
import sys
from typing import Any


def rejects(event: dict[str, Any], context: Any) -> None:
    """Fails every batch, as a handler with a bug does."""
    raise LookupError(f"no customer for the {len(event['Records'])} record(s)")


# A logger set to INFO at import, as Lambda functions set theirs (the root stays at WARNING).
_orders_log = logging.getLogger("orders.audit")
_orders_log.setLevel(logging.INFO)


def reports(event: dict[str, Any], context: Any) -> None:
    """Says what it does on each stream and logger a handler has, naming the request it serves."""
    request = context.aws_request_id
    print(f"stdout {request}")
    print(f"stderr {request}", file=sys.stderr)
    logging.info("root info %s", request)  # under the WARNING root: not shown, as in Lambda
    _orders_log.info("audit info %s", request)
    logging.getLogger("orders.app").warning("app warning %s", request)
    logging.debug("root debug %s", request)
