"""The function behind `poller demo`: a Lambda-style handler using partial batch responses.

It "processes" each order after a short pause and reports the ones marked as poison as failed,
so the demo shows retries and the queue's redrive policy at work.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


async def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        try:
            order = json.loads(record["body"])
        except ValueError:
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        if order.get("poison"):
            failures.append({"itemIdentifier": record["messageId"]})
    await asyncio.sleep(0.05)  # the work a real function would do
    return {"batchItemFailures": failures}
