"""ARN parsing for mapping sources and on-failure destinations (poller.arns)."""

from __future__ import annotations

import re

import pytest

from poller.config.arns import parse_destination_arn, parse_source_arn, queue_url_hint


def test_sqs_standard_queue() -> None:
    arn = parse_source_arn("arn:aws:sqs:us-east-1:123456789012:refunds")
    assert (arn.kind, arn.partition, arn.region, arn.account, arn.name) == (
        "sqs",
        "aws",
        "us-east-1",
        "123456789012",
        "refunds",
    )
    assert arn.stream_label is None
    assert not arn.is_fifo
    assert not arn.is_stream


def test_sqs_fifo_queue() -> None:
    arn = parse_source_arn("arn:aws:sqs:eu-west-1:123456789012:orders.fifo")
    assert arn.is_fifo
    assert arn.name == "orders.fifo"
    assert arn.description == "a FIFO SQS queue"


def test_kinesis_stream() -> None:
    arn = parse_source_arn("arn:aws:kinesis:us-west-2:123456789012:stream/orders-v2")
    assert (arn.kind, arn.name, arn.region) == ("kinesis", "orders-v2", "us-west-2")
    assert arn.is_stream
    assert not arn.is_fifo


def test_dynamodb_stream_keeps_table_and_label() -> None:
    text = "arn:aws:dynamodb:us-east-1:123456789012:table/customers/stream/2025-01-01T00:00:00.000"
    arn = parse_source_arn(text)
    assert (arn.kind, arn.name, arn.stream_label) == (
        "dynamodb",
        "customers",
        "2025-01-01T00:00:00.000",
    )
    assert arn.arn == text


@pytest.mark.parametrize(
    ("text", "partition", "region"),
    [
        ("arn:aws-cn:sqs:cn-north-1:123456789012:q", "aws-cn", "cn-north-1"),
        (
            "arn:aws-us-gov:kinesis:us-gov-west-1:123456789012:stream/s",
            "aws-us-gov",
            "us-gov-west-1",
        ),
        ("arn:aws-iso-b:sqs:us-isob-east-1:123456789012:q", "aws-iso-b", "us-isob-east-1"),
    ],
)
def test_partitions(text: str, partition: str, region: str) -> None:
    arn = parse_source_arn(text)
    assert (arn.partition, arn.region) == (partition, region)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("orders", "not an ARN; expected arn:aws:sqs:REGION:ACCOUNT:QUEUE"),
        ("arn:aws:sqs:us-east-1:123456789012", "malformed ARN"),
        ("arn:aws:lambda:us-east-1:123456789012:function:f", "'lambda' is not a supported source"),
        ("arn:azure:sqs:us-east-1:123456789012:q", "unknown partition 'azure'"),
        ("arn:aws:sqs:useast1:123456789012:q", "invalid region 'useast1'"),
        ("arn:aws:sqs:us-east-1:1234:q", "invalid account '1234'"),
        ("arn:aws:sqs:us-east-1:123456789012:bad name", "invalid queue name"),
        ("arn:aws:sqs:us-east-1:123456789012:" + "q" * 81, "invalid queue name"),
        ("arn:aws:kinesis:us-east-1:123456789012:orders", "invalid Kinesis stream ARN"),
        (
            "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
            "use the stream ARN (arn:aws:kinesis:us-east-1:123456789012:stream/s)",
        ),
        ("arn:aws:dynamodb:us-east-1:123456789012:table/customers", "this is a table ARN"),
        ("arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x", "invalid table name 't'"),
        ("arn:aws:dynamodb:us-east-1:123456789012:stream/x", "invalid DynamoDB stream ARN"),
        (
            "https://sqs.eu-west-1.amazonaws.com/123456789012/refunds",
            "use the queue ARN instead: arn:aws:sqs:eu-west-1:123456789012:refunds",
        ),
    ],
)
def test_source_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_source_arn(text)


@pytest.mark.parametrize(
    ("url", "arn"),
    [
        (
            "https://sqs.us-east-1.amazonaws.com/123456789012/q.fifo",
            "arn:aws:sqs:us-east-1:123456789012:q.fifo",
        ),
        (
            "https://us-west-2.queue.amazonaws.com/123456789012/q",
            "arn:aws:sqs:us-west-2:123456789012:q",
        ),
        (
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
            "arn:aws-cn:sqs:cn-north-1:123456789012:q",
        ),
        (
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
            "arn:aws-us-gov:sqs:us-gov-west-1:123456789012:q",
        ),
        ("http://localhost:4566/000000000000/q", "arn:aws:sqs:REGION:000000000000:q"),
    ],
)
def test_queue_url_hint_shows_the_arn(url: str, arn: str) -> None:
    hint = queue_url_hint(url)
    assert hint is not None
    assert hint.endswith(arn)


@pytest.mark.parametrize("text", ["https://example.com/", "https://example.com/a/b", "queue"])
def test_queue_url_hint_ignores_other_text(text: str) -> None:
    assert queue_url_hint(text) is None


def test_destinations() -> None:
    sqs = parse_destination_arn("arn:aws:sqs:us-east-1:123456789012:failed")
    assert (sqs.kind, sqs.region, sqs.account, sqs.name) == (
        "sqs",
        "us-east-1",
        "123456789012",
        "failed",
    )
    sns = parse_destination_arn("arn:aws:sns:us-east-1:123456789012:alerts")
    assert (sns.kind, sns.name, sns.is_fifo) == ("sns", "alerts", False)
    s3 = parse_destination_arn("arn:aws:s3:::failed-batches")
    assert (s3.kind, s3.region, s3.account, s3.name) == ("s3", "", "", "failed-batches")
    assert parse_destination_arn("arn:aws:sqs:us-east-1:123456789012:f.fifo").is_fifo


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("arn:aws:lambda:us-east-1:123456789012:function:f", "'lambda' is not a supported"),
        ("arn:aws:s3:us-east-1:123456789012:bucket", "invalid S3 bucket ARN"),
        ("arn:aws:s3:::B", "invalid S3 bucket ARN"),
        ("arn:aws:sns:us-east-1:123456789012:bad topic", "invalid topic name"),
        ("failed-queue", "not an ARN; expected arn:aws:sqs:REGION:ACCOUNT:QUEUE"),
        ("https://sqs.us-east-1.amazonaws.com/123456789012/dlq", "use the queue ARN instead"),
    ],
)
def test_destination_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_destination_arn(text)
