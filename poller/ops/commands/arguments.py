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


REPLAY_DESCRIPTION = (
    "Deliver again the records a stream mapping's stream received in a time range (by arrival "
    "time), to the mapping's target with its filters, batch size, retries, bisect and "
    "on-failure destination, but without maximum_record_age_in_seconds and without tumbling "
    "windows. The mapping's checkpoints are neither read nor moved: it runs beside the daemon. "
    "Exit 0 when every record was delivered, filtered out or sent on failure, 1 when some were "
    "dropped (no on-failure destination)."
)
REDRIVE_DESCRIPTION = (
    "Read the invocation records in a stream mapping's on-failure SQS queue, fetch the records "
    "each one names from the stream and invoke the target with them; an invocation record is "
    "deleted once its records were delivered (or sent on failure again, as a new one). Records "
    "the stream no longer holds are reported and their invocation record is left in the queue; "
    "so are the records of other mappings. Exit 1 when some were left."
)


def stream_commands_parsers(
    commands: Any, config_option: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add `replay` and `redrive` to the command parsers `commands`."""
    replay = commands.add_parser(
        "replay",
        help="deliver a time range of a stream mapping's stream again",
        description=REPLAY_DESCRIPTION,
    )
    config_option(replay)
    replay.add_argument("--mapping", metavar="M", required=True, help="the stream mapping")
    replay.add_argument(
        "--from",
        dest="from_",
        metavar="T",
        required=True,
        type=parse_time,
        help="the first arrival time, inclusive: ISO 8601 (no offset: UTC) or epoch seconds",
    )
    replay.add_argument(
        "--to",
        metavar="T",
        type=parse_time,
        help="the end of the range, exclusive (default: when the command started)",
    )
    replay.add_argument(
        "--shard", metavar="S", help="only this shard (default: every shard of the stream)"
    )
    redrive = commands.add_parser(
        "redrive",
        help="deliver again the records a stream mapping sent on failure",
        description=REDRIVE_DESCRIPTION,
    )
    config_option(redrive)
    redrive.add_argument("--mapping", metavar="M", required=True, help="the stream mapping")
    redrive.add_argument(
        "--limit",
        metavar="N",
        type=_positive,
        help="redrive at most N invocation records (default: every one in the queue)",
    )
    redrive.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be redriven and leave every invocation record in the queue",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)
