"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.queues import aws_client


@pytest.fixture
async def sqs(moto: str) -> AsyncIterator[Any]:
    """An aiobotocore SQS client on the freshly reset moto server."""
    async with aws_client("sqs", moto) as client:
        yield client
