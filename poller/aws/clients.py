"""One aiobotocore session and a cache of clients per (service, options), closed together."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from poller.config.settings import AwsSettings

# Services whose endpoint may be overridden per service in `aws.endpoints`.
SERVICES = ("sqs", "kinesis", "dynamodbstreams", "dynamodb", "lambda", "sns", "s3", "sts")


class AwsClients:
    """Creates aiobotocore clients on first use and closes all of them on exit.

    `client("lambda", retries=False, read_timeout=900)` gives a client whose SDK retries are off,
    so every attempt is poller's to count and classify.
    """

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._session = get_session()
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, bool, float | None], Any] = {}

    @property
    def region(self) -> str:
        return (
            self._settings.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )

    def endpoint_for(self, service: str) -> str | None:
        return self._settings.endpoints.get(service) or self._settings.endpoint_url

    async def client(
        self, service: str, *, retries: bool = True, read_timeout: float | None = None
    ) -> Any:
        key = (service, retries, read_timeout)
        existing = self._clients.get(key)
        if existing is not None:
            return existing
        # total_max_attempts counts the first try: 1 means exactly one request, so every
        # throttle of an Invoke is seen (and counted) by poller itself.
        config = AioConfig(
            retries={"total_max_attempts": 4 if retries else 1, "mode": "standard"},
            read_timeout=read_timeout if read_timeout is not None else 60,
            connect_timeout=10,
            max_pool_connections=100,
        )
        created = await self._stack.enter_async_context(
            self._session.create_client(
                service,
                region_name=self.region,
                endpoint_url=self.endpoint_for(service),
                config=config,
            )
        )
        self._clients[key] = created
        return created

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self._clients.clear()
