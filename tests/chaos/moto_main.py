"""moto for the chaos suite, in its own process: `python -m tests.chaos.moto_main`.

Its own process, so moto's threads do not share a GIL with the suite's proxies and fake
functions on a 2-core machine. The test patches apply (tests/support/moto_patches.py: receives
serialized, the cheap clock), and deletes are serialized (tests/benchmarks/fast_moto.py): a
suite counting duplicates must measure poller, not moto's races. Beside the threaded server, a
one-request-at-a-time DynamoDB front on the same state serves the lease table
(tests/support/leases.py says why). Prints one JSON line with both URLs, then serves until its
stdin closes (the suite ended, however it ended).
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    from moto.server import ThreadedMotoServer

    from tests.benchmarks.fast_moto import serial_deletes
    from tests.support import moto_patches
    from tests.support.leases import single_threaded_dynamodb

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_patches.apply()
    serial_deletes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with single_threaded_dynamodb() as dynamodb:
        print(json.dumps({"moto": f"http://{host}:{port}", "dynamodb": dynamodb}), flush=True)
        sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
