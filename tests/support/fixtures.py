"""Fixtures the integration and conformance tests share (a pytest plugin, loaded by the root
conftest): aiobotocore clients on the freshly reset moto server, a place for a daemon's SQLite
checkpoints, and no daemon outliving its test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.queues import aws_client


@pytest.fixture(autouse=True)
def no_daemon_outlives_its_test() -> Iterator[None]:
    """Kill what a test left running, when it was cut short before its own clean-up."""
    yield
    DaemonProcess.kill_leftovers()


@pytest.fixture
async def sqs(moto: str) -> AsyncIterator[Any]:
    async with aws_client("sqs", moto) as client:
        yield client


@pytest.fixture
async def kinesis(moto: str) -> AsyncIterator[Any]:
    async with aws_client("kinesis", moto) as client:
        yield client


@pytest.fixture
async def dynamodb(moto: str) -> AsyncIterator[Any]:
    async with aws_client("dynamodb", moto) as client:
        yield client


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """The SQLite checkpoint file of a daemon under test."""
    return tmp_path / "state.db"
