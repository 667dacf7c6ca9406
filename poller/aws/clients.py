"""One aiobotocore session and a cache of clients per (service, region, options), closed together.

What has an ARN (a source, a destination, a function given by ARN) is reached in its ARN's
region, through `client(service, region=...)`; `aws.region` is the default for the rest.
"""

from __future__ import annotations

import os
import platform
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Literal, get_args, overload

import aiobotocore
import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from poller import __version__
from poller.aws import calls
from poller.aws.parsing import StreamParserFactory
from poller.config.settings import AwsSettings

if TYPE_CHECKING:
    # types-aiobotocore is a dev extra, for mypy only: the runtime never imports it.
    from aiobotocore.client import AioBaseClient
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient
    from types_aiobotocore_kinesis import KinesisClient
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sts import STSClient

Service = Literal["sqs", "kinesis", "dynamodbstreams", "dynamodb", "lambda", "sns", "s3", "sts"]

# Services whose endpoint may be overridden per service in `aws.endpoints`.
SERVICES: tuple[Service, ...] = get_args(Service)

# A fixed User-Agent: botocore otherwise rebuilds its own (OS, architecture, features) twice
# per request, 64 µs each time, about 5 % of the CPU of a busy SQS mapping. (botocore adds
# its own name and version after it.)
USER_AGENT = (
    f"poller/{__version__} aiobotocore/{aiobotocore.__version__}"
    f" lang/python#{platform.python_version()}"
)

# Clients whose GetRecords answers are parsed the cheap way (`aws.parsing` says why): their
# timestamps come as epoch seconds and their blobs as base64 text, not datetimes and bytes.
STREAM_SERVICES: frozenset[Service] = frozenset({"kinesis", "dynamodbstreams"})


class AwsClients:
    """Creates aiobotocore clients on first use and closes all of them on exit.

    `client("lambda", retries=False, read_timeout=900)` gives a client whose SDK retries are off,
    so every attempt is poller's to count and classify; `region="eu-west-1"` one of that region
    rather than the default (`region`). Every client reports its failed source
    and checkpoint calls to the mapping that made them (`calls.watch`).
    """

    def __init__(self, settings: AwsSettings) -> None:
        self._settings = settings
        self._session = get_session()
        # A session of their own: the parser factory is a session-wide component.
        self._stream_session = get_session()
        self._stream_session.register_component("response_parser_factory", StreamParserFactory())
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[Service, str, bool, float | None], AioBaseClient] = {}
        # Creating a client awaits; without the lock, two first callers of one key (mappings
        # starting together) would each create one, and one of the two would never be used.
        self._creating = anyio.Lock()

    @property
    def region(self) -> str:
        """The default region: `aws.region`, else AWS_REGION or AWS_DEFAULT_REGION."""
        return (
            self._settings.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )

    def endpoint_for(self, service: str) -> str | None:
        return self._settings.endpoints.get(service) or self._settings.endpoint_url

    # One overload per service, so each call site gets its service's typed client.
    @overload
    async def client(
        self,
        service: Literal["sqs"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> SQSClient: ...
    @overload
    async def client(
        self,
        service: Literal["kinesis"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> KinesisClient: ...
    @overload
    async def client(
        self,
        service: Literal["dynamodbstreams"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> DynamoDBStreamsClient: ...
    @overload
    async def client(
        self,
        service: Literal["dynamodb"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> DynamoDBClient: ...
    @overload
    async def client(
        self,
        service: Literal["lambda"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> LambdaClient: ...
    @overload
    async def client(
        self,
        service: Literal["sns"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> SNSClient: ...
    @overload
    async def client(
        self,
        service: Literal["s3"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> S3Client: ...
    @overload
    async def client(
        self,
        service: Literal["sts"],
        *,
        region: str | None = ...,
        retries: bool = ...,
        read_timeout: float | None = ...,
    ) -> STSClient: ...
    async def client(
        self,
        service: Service,
        *,
        region: str | None = None,
        retries: bool = True,
        read_timeout: float | None = None,
    ) -> AioBaseClient:
        region = region or self.region
        key = (service, region, retries, read_timeout)
        existing = self._clients.get(key)
        if existing is not None:
            return existing
        async with self._creating:
            existing = self._clients.get(key)
            if existing is not None:
                return existing
            return await self._create(service, region, retries, read_timeout)

    async def _create(
        self, service: Service, region: str, retries: bool, read_timeout: float | None
    ) -> AioBaseClient:
        key = (service, region, retries, read_timeout)
        # total_max_attempts counts the first try: 1 means exactly one request, so every
        # throttle of an Invoke is seen (and counted) by poller itself.
        config = AioConfig(
            retries={"total_max_attempts": 4 if retries else 1, "mode": "standard"},
            read_timeout=read_timeout if read_timeout is not None else 60,
            connect_timeout=10,
            max_pool_connections=100,
            user_agent=USER_AGENT,
        )
        session = self._stream_session if service in STREAM_SERVICES else self._session
        created = await self._stack.enter_async_context(
            session.create_client(
                service,
                region_name=region,
                endpoint_url=self.endpoint_for(service),
                config=config,
            )
        )
        calls.watch(created, service)
        self._clients[key] = created
        return created

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        self._clients.clear()
