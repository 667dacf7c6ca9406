"""The lines an SQS queue logs name the mapping that uses it, as every mapping's lines do (log
alerts are kept per mapping)."""

from __future__ import annotations

import logging

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from poller.config.arns import parse_source_arn
from poller.sources.sqs.queue import Receipt, SqsQueue
from tests.support.ports import free_port
from tests.support.queues import REGION

ARN = f"arn:aws:sqs:{REGION}:123456789012:orders"


async def test_failed_extensions_and_deletes_name_the_mapping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: every call fails at once
    config = AioConfig(retries={"max_attempts": 1}, connect_timeout=2)
    session = get_session()
    async with session.create_client(
        "sqs", region_name=REGION, endpoint_url=refused, config=config
    ) as client:
        queue = SqsQueue(client, parse_source_arn(ARN), mapping="orders-mapping")
        with caplog.at_level(logging.WARNING, logger="poller.sqs"):
            await queue.extend([Receipt("m1", "handle")], 30)
            # A delete tries a few times over about 3 s before it logs that it gave up.
            assert await queue.delete([Receipt("m1", "handle")]) == 0
    lines = {r.getMessage().split(":")[0]: r for r in caplog.records if r.name == "poller.sqs"}
    assert set(lines) == {
        "could not extend visibility",
        "could not delete 1 message(s) after retries; they will be delivered again",
    }
    for line in lines.values():
        assert (getattr(line, "mapping", None), getattr(line, "queue", None)) == (
            "orders-mapping",
            "orders",
        )
