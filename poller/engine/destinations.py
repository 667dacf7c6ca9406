"""On-failure destinations for stream mappings, as Lambda has them: SQS, SNS and S3.

When a stream batch is given up, Lambda sends an *invocation record* describing it (which
shard, which sequence range, why, how often it was invoked); SQS and SNS get that metadata
only, S3 gets it plus the event payload. `poller.events.invocation` builds the record;
`build_destination` returns the sender for a destination ARN.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe, error_code
from poller.config.arns import DestinationArn, parse_destination_arn
from poller.config.settings import MappingSettings
from poller.events.envelope import dumps
from poller.retry import RetriableError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

# SNS's message limit; SQS's default maximum message size is the same.
SNS_MAX_MESSAGE_BYTES = 256 * 1024

# Codes that mean the destination itself is missing, beyond what poller.aws.errors knows.
_MISSING = {"NotFound", "NotFoundException", "NoSuchBucket", "QueueDoesNotExist"}


class DeliveryError(RetriableError):
    """A delivery to the on-failure destination failed; the message says what to fix."""


class OnFailureDestination(Protocol):
    """Where a given-up stream batch's invocation record goes."""

    @property
    def arn(self) -> str:
        """The destination ARN, for logs."""
        ...

    async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
        """Send one invocation record (S3 adds `payload`, the event); raise DeliveryError."""
        ...


def with_payload(record: dict[str, Any], payload: bytes | None) -> bytes:
    """The record serialized with `"payload": <event>` appended (the S3 object body).

    The event is spliced in as the bytes it was invoked with, not parsed and re-serialized.
    """
    body = dumps(record)
    if payload is None:
        return body
    return body[:-1] + b',"payload":' + payload + b"}"


class _Destination:
    """What the three destinations share: the parsed ARN, the clients, errors."""

    permission = ""

    def __init__(self, target: DestinationArn, clients: AwsClients) -> None:
        self.target = target
        self._clients = clients

    @property
    def arn(self) -> str:
        return self.target.arn

    def _error(self, exc: BaseException) -> DeliveryError:
        what = f"on-failure destination {self.target.arn}"
        if error_code(exc) in _MISSING:
            return DeliveryError(
                f"{what}: it does not exist ({error_code(exc)}); create it or fix "
                "destination_config.on_failure.destination (and the region/endpoint)"
            )
        return DeliveryError(describe(exc, what=what, permission=self.permission).message)


class SqsDestination(_Destination):
    """SendMessage of the invocation record to a standard queue (URL from GetQueueUrl)."""

    permission = "sqs:GetQueueUrl and sqs:SendMessage"

    def __init__(self, target: DestinationArn, clients: AwsClients) -> None:
        super().__init__(target, clients)
        self._url: str | None = None

    async def _client(self) -> SQSClient:
        return await self._clients.client("sqs", region=self.target.region)

    async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
        """Send the metadata; SQS never gets the payload, as with Lambda."""
        try:
            sqs = await self._client()
            if self._url is None:
                answer = await sqs.get_queue_url(
                    QueueName=self.target.name, QueueOwnerAWSAccountId=self.target.account
                )
                self._url = str(answer["QueueUrl"])
            await sqs.send_message(QueueUrl=self._url, MessageBody=dumps(record).decode())
        except AWS_ERRORS as exc:
            # A queue deleted and recreated gets a new URL only in theory; asking again is cheap.
            self._url = None
            raise self._error(exc) from exc


class SnsDestination(_Destination):
    """Publish of the invocation record to a standard topic."""

    permission = "sns:Publish"

    async def _client(self) -> SNSClient:
        return await self._clients.client("sns", region=self.target.region)

    async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
        """Publish the metadata; SNS never gets the payload (as with Lambda): 256 KB fits."""
        message = dumps(record)
        if len(message) > SNS_MAX_MESSAGE_BYTES:  # not reachable with metadata alone
            raise DeliveryError(
                f"on-failure destination {self.target.arn}: invocation record of "
                f"{len(message)} bytes exceeds SNS's 256 KB limit"
            )
        try:
            sns = await self._client()
            await sns.publish(TopicArn=self.target.arn, Message=message.decode())
        except AWS_ERRORS as exc:
            raise self._error(exc) from exc


class S3Destination(_Destination):
    """PutObject of the invocation record plus the event payload, under Lambda's key scheme."""

    permission = "s3:PutObject (and s3:ListBucket)"

    def __init__(
        self, target: DestinationArn, clients: AwsClients, esm_uuid: str | None = None
    ) -> None:
        super().__init__(target, clients)
        # The mapping's UUID names the object keys; StreamBatchProcessor fills it in when the
        # destination was built without one.
        self.esm_uuid = esm_uuid

    async def _client(self) -> S3Client:
        # A bucket ARN names no region: the default one (botocore follows S3's redirects).
        return await self._clients.client("s3")

    def object_key(self, record: dict[str, Any]) -> str:
        """Lambda's key layout:
        `aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid4>`."""
        info = record.get("KinesisBatchInfo") or record.get("DDBStreamBatchInfo") or {}
        shard_id = info.get("shardId", "unknown-shard")
        stamp = record.get("timestamp")
        when = (
            datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if isinstance(stamp, str)
            else datetime.now(tz=UTC)
        )
        return (
            f"aws/lambda/{self.esm_uuid}/{shard_id}/{when:%Y/%m/%d}/"
            f"{when:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
        )

    async def deliver(self, record: dict[str, Any], payload: bytes | None) -> None:
        """Put the record with `"payload"` (the event) as one JSON object."""
        try:
            s3 = await self._client()
            await s3.put_object(
                Bucket=self.target.name,
                Key=self.object_key(record),
                Body=with_payload(record, payload),
                ContentType="application/json",
            )
        except AWS_ERRORS as exc:
            raise self._error(exc) from exc


def build_destination(
    arn: str, clients: AwsClients, *, esm_uuid: str | None = None
) -> OnFailureDestination:
    """The sender for an on-failure destination ARN (already validated by the config).

    `esm_uuid` (the mapping's UUID) names S3 object keys; when omitted, the
    StreamBatchProcessor that is given the destination supplies its mapping's.
    """
    target = parse_destination_arn(arn)
    if target.kind == "sqs":
        return SqsDestination(target, clients)
    if target.kind == "sns":
        return SnsDestination(target, clients)
    return S3Destination(target, clients, esm_uuid)


def destination_for(mapping: MappingSettings, clients: AwsClients) -> OnFailureDestination | None:
    """The mapping's on-failure destination, or None when it has none configured."""
    config = mapping.destination_config
    if config is None or config.on_failure is None:
        return None
    return build_destination(config.on_failure.destination, clients, esm_uuid=mapping.uuid)
