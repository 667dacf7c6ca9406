"""moto's server with one cost removed, for benchmarks: `python -m tests.benchmarks.fast_moto`.

moto 5.2.5 asks "is this message visible?" of every message in a queue, about 30 times per
ReceiveMessage, and each answer builds two datetimes to compute the current epoch time: at a
depth of 300 a receive costs 100-300 ms, so the emulator, not the client, sets every rate.
This launcher gives moto's SQS models the same clock (epoch milliseconds) from time.time(),
which is what moto computes the slow way, and then runs moto's own server unchanged. Every
side of a benchmark runs against the same patched server.

It also serializes deletes: moto's `Queue.delete_message` rebuilds the queue's message list
without a lock, so two concurrent deletes can undo each other and a deleted message comes back
after its visibility timeout, a 30 s stall that real SQS never has. A benchmark with concurrent
deleters would otherwise now and then measure that stall instead of the client.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any


def _fast_clock() -> None:
    from moto.core import utils
    from moto.sqs import models

    original = utils.unix_time_millis

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(original(dt))

    models.unix_time_millis = unix_time_millis


def serial_deletes() -> None:
    """A lock around moto's `Queue.delete_message` (the module docstring says why); the chaos
    suite's moto applies it too."""
    from moto.sqs import models

    lock = threading.Lock()
    original = models.Queue.delete_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with lock:
            original(self, receipt_handle)

    models.Queue.delete_message = delete_message  # type: ignore[method-assign]


def main() -> None:
    import logging

    from moto.server import main as moto_main

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _fast_clock()
    serial_deletes()
    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
