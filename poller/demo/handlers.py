"""The function behind `poller demo`: a Lambda-style handler using partial batch responses.

It "processes" each order after a short pause and reports the ones marked as poison as failed,
so the demo shows retries and the queue's redrive policy at work.
"""

from __future__ import annotations

import asyncio
import base64
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


def handle_clicks(event: dict[str, Any], context: Any) -> None:
    """Kinesis: each record's `data` is base64 of the JSON the producer put."""
    for record in event["Records"]:
        json.loads(base64.b64decode(record["kinesis"]["data"]))


def handle_accounts(event: dict[str, Any], context: Any) -> None:
    """DynamoDB Streams: new images arrive in DynamoDB JSON, as Lambda delivers them."""
    for record in event["Records"]:
        record["dynamodb"].get("NewImage", {})
