"""The options of `poller checkpoints list` and `poller checkpoints set`."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

SET_DESCRIPTION = (
    "Move the stored position of one shard (--shard) or of every shard of a stream mapping, "
    "for the next `poller run`. Refused while a live instance holds the position: a running "
    "daemon on the SQLite file, or an unexpired lease in the lease table. A moved shard "
    "drops the tumbling window that was open at its old position."
)


def parse_time(text: str) -> float:
    """ISO 8601 (no offset: UTC) or epoch seconds, as epoch seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def checkpoints_parser(
    commands: Any, config_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add `checkpoints list` and `checkpoints set` to the command parsers `commands`."""
    checkpoints = commands.add_parser(
        "checkpoints", help="list or move the stored stream positions of the configuration"
    )
    actions = checkpoints.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list",
        help="print every stored stream position",
        description="Print every stored stream position: mapping, shard, the sequence number "
        "of the last record handled, finished, the lease's owner and expiry (lease table) and "
        "the size of the open tumbling window's state.",
    )
    config_option(listing)
    listing.add_argument("--mapping", metavar="M", help="only this mapping's positions")
    moving = actions.add_parser(
        "set", help="move a mapping's stored positions", description=SET_DESCRIPTION
    )
    config_option(moving)
    moving.add_argument("--mapping", metavar="M", required=True, help="the stream mapping")
    moving.add_argument(
        "--shard", metavar="S", help="only this shard (default: every shard of the stream)"
    )
    to = moving.add_mutually_exclusive_group(required=True)
    to.add_argument(
        "--sequence",
        metavar="N",
        help="the next record to deliver: the mapping resumes with record N itself "
        "(needs --shard when the stream has several shards)",
    )
    to.add_argument(
        "--timestamp",
        metavar="T",
        type=parse_time,
        help="ISO 8601 (no offset: UTC) or epoch seconds: each shard resumes with its first "
        "record that arrived at or after T",
    )
    to.add_argument(
        "--trim-horizon",
        action="store_true",
        help="no position: each shard is read from its oldest record kept (TRIM_HORIZON)",
    )
    to.add_argument(
        "--latest",
        action="store_true",
        help="now, as a LATEST start: only records arriving from this moment on are delivered",
    )
