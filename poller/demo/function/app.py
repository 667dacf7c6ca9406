"""A Lambda deployment package that `poller demo` runs through the `runtime` target.

It is an ordinary Lambda Python handler: the same file, zipped, would run in AWS Lambda.
"""

import json
import os
from typing import Any

# Module-level state survives between invocations of a warm execution environment.
WARM_INVOCATIONS = 0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global WARM_INVOCATIONS
    WARM_INVOCATIONS += 1
    total = 0
    for record in event["Records"]:
        total += json.loads(record["body"]).get("amount", 0)
    if WARM_INVOCATIONS % 50 == 1:
        print(
            f"pid {os.getpid()}: warm invocation {WARM_INVOCATIONS}, "
            f"{len(event['Records'])} records, {context.get_remaining_time_in_millis()} ms left"
        )
    return {"batchItemFailures": []}
