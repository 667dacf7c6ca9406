"""ARN parsing for mapping sources (SQS, Kinesis, DynamoDB Streams) and on-failure destinations.

Every rejection is a `ValueError` whose message says what was expected and, where the input is a
recognisable near miss (a queue URL, a table ARN, a fan-out consumer ARN), what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

SourceKind = Literal["sqs", "kinesis", "dynamodb"]
DestinationKind = Literal["sqs", "sns", "s3"]

SOURCE_FORMS = (
    "arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:kinesis:REGION:ACCOUNT:stream/NAME "
    "or arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL"
)
DESTINATION_FORMS = (
    "arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:sns:REGION:ACCOUNT:TOPIC or arn:aws:s3:::BUCKET"
)

# Any partition: aws, aws-cn, aws-us-gov, and the isolated ones (aws-iso, aws-iso-b, ...).
_PARTITION = re.compile(r"aws(-[a-z]+)*")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_ACCOUNT = re.compile(r"\d{12}")
# Names as the services constrain them; a FIFO queue's ".fifo" suffix counts towards its 80.
_QUEUE = re.compile(r"[A-Za-z0-9_-]{1,75}(\.fifo)?|[A-Za-z0-9_-]{1,80}")
_STREAM = re.compile(r"stream/([A-Za-z0-9_.-]{1,128})")
_TABLE_STREAM = re.compile(r"table/([^/]+)/stream/([^/\s]+)")
_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,256}(\.fifo)?")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class SourceArn:
    """A parsed mapping source: an SQS queue, a Kinesis stream or a DynamoDB stream."""

    arn: str
    kind: SourceKind
    partition: str
    region: str
    account: str
    name: str  # queue name, stream name, or table name
    stream_label: str | None = None  # DynamoDB only

    @property
    def is_fifo(self) -> bool:
        """True for an SQS FIFO queue (its name ends in `.fifo`)."""
        return self.kind == "sqs" and self.name.endswith(".fifo")

    @property
    def is_stream(self) -> bool:
        """True for Kinesis and DynamoDB Streams sources."""
        return self.kind != "sqs"

    @property
    def description(self) -> str:
        """How messages name this kind of source, e.g. `a FIFO SQS queue`."""
        if self.kind == "sqs":
            return "a FIFO SQS queue" if self.is_fifo else "an SQS queue"
        return "a Kinesis stream" if self.kind == "kinesis" else "a DynamoDB stream"


@dataclass(frozen=True, slots=True)
class DestinationArn:
    """A parsed on-failure destination: an SQS queue, an SNS topic or an S3 bucket."""

    arn: str
    kind: DestinationKind
    region: str  # empty for S3
    account: str  # empty for S3
    name: str  # queue, topic or bucket name

    @property
    def is_fifo(self) -> bool:
        """True for a FIFO queue or topic."""
        return self.kind != "s3" and self.name.endswith(".fifo")


def parse_source_arn(text: str) -> SourceArn:
    """Parse a mapping's `source`; raise ValueError saying which forms are accepted."""
    text = text.strip()
    if not text.startswith("arn:"):
        hint = queue_url_hint(text)
        if hint:
            raise ValueError(hint)
        raise ValueError(f"not an ARN; expected {SOURCE_FORMS}")
    partition, service, region, account, resource = _split(text, SOURCE_FORMS)
    if service not in ("sqs", "kinesis", "dynamodb"):
        raise ValueError(f"{service!r} is not a supported source service; expected {SOURCE_FORMS}")
    _check_region_account(region, account)
    if service == "sqs":
        if not _QUEUE.fullmatch(resource):
            raise ValueError(
                f"invalid queue name {resource!r} (letters, digits, '-' and '_', "
                "at most 80 characters including a '.fifo' suffix)"
            )
        return SourceArn(text, "sqs", partition, region, account, resource)
    if service == "kinesis":
        match = _STREAM.fullmatch(resource)
        if match:
            return SourceArn(text, "kinesis", partition, region, account, match.group(1))
        if "/consumer/" in resource:
            raise ValueError(
                "enhanced fan-out consumer ARNs are not supported; use the stream ARN "
                f"(arn:{partition}:kinesis:{region}:{account}:{resource.split('/consumer/')[0]})"
            )
        expected = f"arn:{partition}:kinesis:REGION:ACCOUNT:stream/NAME"
        raise ValueError(f"invalid Kinesis stream ARN; expected {expected}")
    match = _TABLE_STREAM.fullmatch(resource)
    if match:
        table, label = match.group(1), match.group(2)
        if not _TABLE.fullmatch(table):
            raise ValueError(
                f"invalid table name {table!r} (3 to 255 letters, digits, '_', '-' or '.')"
            )
        return SourceArn(text, "dynamodb", partition, region, account, table, label)
    if re.fullmatch(r"table/[^/]+", resource):
        raise ValueError(
            "this is a table ARN; use the table's stream ARN (…/stream/LABEL, the "
            "LatestStreamArn that DescribeTable returns once streams are enabled)"
        )
    raise ValueError(
        "invalid DynamoDB stream ARN; expected "
        f"arn:{partition}:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL"
    )


def parse_destination_arn(text: str) -> DestinationArn:
    """Parse an on-failure destination; raise ValueError saying which forms are accepted."""
    text = text.strip()
    if not text.startswith("arn:"):
        hint = queue_url_hint(text)
        raise ValueError(hint or f"not an ARN; expected {DESTINATION_FORMS}")
    _partition, service, region, account, resource = _split(text, DESTINATION_FORMS)
    if service == "s3":
        if region or account or not _BUCKET.fullmatch(resource):
            raise ValueError(f"invalid S3 bucket ARN; expected arn:aws:s3:::BUCKET (got {text!r})")
        return DestinationArn(text, "s3", "", "", resource)
    if service not in ("sqs", "sns"):
        raise ValueError(
            f"{service!r} is not a supported destination service; expected {DESTINATION_FORMS}"
        )
    _check_region_account(region, account)
    pattern = _QUEUE if service == "sqs" else _TOPIC
    if not pattern.fullmatch(resource):
        noun = "queue" if service == "sqs" else "topic"
        raise ValueError(f"invalid {noun} name {resource!r}")
    return DestinationArn(text, "sqs" if service == "sqs" else "sns", region, account, resource)


def queue_url_hint(text: str) -> str | None:
    """If `text` looks like an SQS queue URL, say to use the queue ARN and show it."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) != 2 or not _ACCOUNT.fullmatch(segments[0]):
        return None
    account, queue = segments
    host = parts.hostname
    # sqs.REGION.amazonaws.com[.cn] (current) and REGION.queue.amazonaws.com (legacy).
    match = re.fullmatch(r"(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(\.cn)?", host)
    region = (match.group(1) or match.group(2)) if match else "REGION"
    partition = "aws-cn" if match and match.group(3) else "aws"
    if region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return (
        "this is an SQS queue URL; use the queue ARN instead: "
        f"arn:{partition}:sqs:{region}:{account}:{queue}"
    )


def _split(text: str, forms: str) -> tuple[str, str, str, str, str]:
    parts = text.split(":", 5)
    if len(parts) != 6 or not parts[5]:
        raise ValueError(f"malformed ARN; expected {forms}")
    _, partition, service, region, account, resource = parts
    if not _PARTITION.fullmatch(partition):
        raise ValueError(f"unknown partition {partition!r} (aws, aws-cn, aws-us-gov, ...)")
    return partition, service, region, account, resource


def _check_region_account(region: str, account: str) -> None:
    if not _REGION.fullmatch(region):
        raise ValueError(f"invalid region {region!r} in ARN (like us-east-1)")
    if not _ACCOUNT.fullmatch(account):
        raise ValueError(f"invalid account {account!r} in ARN (12 digits)")
