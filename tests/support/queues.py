"""Test-side SQS helpers over real aiobotocore clients against moto's server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiobotocore.session import get_session

ACCOUNT = "123456789012"
REGION = "us-east-1"


@asynccontextmanager
async def aws_client(service: str, endpoint: str, region: str = REGION) -> AsyncIterator[Any]:
    """A client of `service` in `region` (moto serves every region on its one endpoint)."""
    session = get_session()
    async with session.create_client(service, region_name=region, endpoint_url=endpoint) as client:
        yield client


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str
    dlq_url: str | None = None


async def make_queue(
    sqs: Any,
    name: str,
    *,
    visibility_timeout: int = 30,
    max_receive_count: int | None = None,
) -> Queue:
    """A queue (FIFO when the name ends in .fifo), optionally with a DLQ after N receives."""
    fifo = name.endswith(".fifo")
    attributes: dict[str, str] = {"VisibilityTimeout": str(visibility_timeout)}
    if fifo:
        attributes["FifoQueue"] = "true"
        attributes["ContentBasedDeduplication"] = "true"
    dlq_url = None
    if max_receive_count is not None:
        dlq_name = name.removesuffix(".fifo") + "-dlq" + (".fifo" if fifo else "")
        dlq_attributes = {"FifoQueue": "true"} if fifo else {}
        dlq_url = (await sqs.create_queue(QueueName=dlq_name, Attributes=dlq_attributes))[
            "QueueUrl"
        ]
        dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        )
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    return Queue(url, arn, dlq_url)


async def send(
    sqs: Any, url: str, bodies: Sequence[str], *, group: str | None = None, **extra: Any
) -> list[str]:
    """Send bodies in order (batches of 10); returns the message ids in send order."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries = []
        for offset, body in enumerate(bodies[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(offset), "MessageBody": body, **extra}
            if group is not None:
                entry["MessageGroupId"] = group
            entries.append(entry)
        answer = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer.get("Failed")
        by_id = {e["Id"]: e["MessageId"] for e in answer["Successful"]}
        ids.extend(by_id[str(i)] for i in range(len(entries)))
    return ids


async def depth(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) as the queue reports them."""
    attributes = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Everything visible now (short polls until empty); leaves it in flight."""
    found: list[dict[str, Any]] = []
    while True:
        answer = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60
        )
        messages = answer.get("Messages", [])
        if not messages:
            return found
        found.extend(messages)
