"""Fixed wire inputs for the golden files: the JSON bodies Kinesis, DynamoDB Streams and SQS
answer, as AWS writes them (epoch numbers in scientific notation, blobs in base64).

They go through real aiobotocore clients (a canned HTTP server answers), so a change to how the
clients parse (timestamps, blobs) is covered as well as a change to how poller builds events.
"""

from __future__ import annotations

import base64
from typing import Any


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


KINESIS_GET_RECORDS: dict[str, Any] = {
    "Records": [
        {
            "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "ApproximateArrivalTimestamp": 1.735732800123e9,
            "Data": _b64(b'{"click":"buy","n":1}'),
            "PartitionKey": "user-7",
        },
        {
            # Whole seconds, an int on the wire; binary (not UTF-8) data.
            "SequenceNumber": "49590338271490256608559692538361571095921575989136588899",
            "ApproximateArrivalTimestamp": 1735732801,
            "Data": _b64(bytes(range(256))),
            "PartitionKey": "user-8",
            "EncryptionType": "KMS",
        },
        {
            # Sub-millisecond precision and non-ASCII text in the key and the data.
            "SequenceNumber": "49590338271490256608559692538361571095921575989136588900",
            "ApproximateArrivalTimestamp": 1735732802.4567,
            "Data": _b64('{"name":"Zoë ü \\u2028 😀"}'.encode()),
            "PartitionKey": "clé-ü",
        },
        {
            # Empty data; an AUTO-distributed record may have no key at all.
            "SequenceNumber": "49590338271490256608559692538361571095921575989136588901",
            "ApproximateArrivalTimestamp": 1.7357328039995e9,
            "Data": "",
        },
    ],
    "NextShardIterator": "AAAAAAAAAAGolden2",
    "MillisBehindLatest": 0,
}

_NEW_IMAGE = {
    "order_id": {"S": "o-17"},
    "amount": {"N": "123.4500"},
    "big": {"N": "12345678901234567890123456789012345678"},
    "blob": {"B": _b64(b"\x00\x01\x02\xff")},
    "blobs": {"BS": [_b64(b"\x01"), _b64(b"\x02\xfe")]},
    "numbers": {"NS": ["1", "2.5", "-0.001"]},
    "strings": {"SS": ["a", "ü", "😀"]},
    "nested": {
        "M": {
            "yes": {"BOOL": True},
            "nothing": {"NULL": True},
            "list": {"L": [{"N": "1"}, {"B": _b64(b"foo")}, {"S": "x"}]},
        }
    },
}

DYNAMODB_GET_RECORDS: dict[str, Any] = {
    "Records": [
        {
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1.693997155e9,
                "Keys": {"order_id": {"S": "o-17"}},
                "NewImage": _NEW_IMAGE,
                "SequenceNumber": "100000000000000000001",
                "SizeBytes": 159,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "c81e728d9d4c2f636f067f89cc14862c",
            "eventName": "MODIFY",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                # Fractional: rounded down to the second in the event.
                "ApproximateCreationDateTime": 1693997156.789,
                "Keys": {"order_id": {"S": "o-17"}, "line": {"N": "2"}},
                "OldImage": _NEW_IMAGE,
                "NewImage": {**_NEW_IMAGE, "amount": {"N": "-7E+3"}},
                "SequenceNumber": "100000000000000000002",
                "SizeBytes": 301,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        },
        {
            "eventID": "eccbc87e4b5ce2fe28308fd9f2a7baf3",
            "eventName": "REMOVE",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1693997157,
                "Keys": {"order_id": {"S": "o-17"}},
                "OldImage": {"order_id": {"S": "o-17"}, "k": {"B": _b64(b"\xff")}},
                "SequenceNumber": "100000000000000000003",
                "SizeBytes": 40,
                "StreamViewType": "OLD_IMAGE",
            },
            # A TTL delete: the service is who removed the item.
            "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"},
        },
    ],
    "NextShardIterator": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/golden-2",
}

_ATTRIBUTES = {
    "ApproximateReceiveCount": "1",
    "SentTimestamp": "1735732800123",
    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
    "ApproximateFirstReceiveTimestamp": "1735732800200",
}

SQS_STANDARD: dict[str, Any] = {
    "Messages": [
        {
            "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
            "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": '{"order":"o-17","note":"Zoë \\u00fc 😀\\n\\ttab"}',
            "Attributes": {**_ATTRIBUTES, "AWSTraceHeader": "Root=1-5f2d5c7e-1234567890abcdef"},
            "MD5OfMessageAttributes": "6d1fa6b1b8b8d4e51e1b6b6c5e0b0b0a",
            "MessageAttributes": {
                "kind": {"StringValue": "order", "DataType": "String"},
                "count": {"StringValue": "1.50", "DataType": "Number"},
                "raw": {"BinaryValue": _b64(b"\x00\xff"), "DataType": "Binary"},
                "custom": {"StringValue": "x", "DataType": "String.custom"},
            },
        },
        {
            # No message attributes: no md5OfMessageAttributes, or null behind a window.
            "MessageId": "2e1424d4-f796-459a-8184-9c92662be6da",
            "ReceiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq",
            "MD5OfBody": "098f6bcd4621d373cade4e832627b4f6",
            "Body": "test",
            "Attributes": dict(_ATTRIBUTES),
        },
        {
            "MessageId": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "ReceiptHandle": "AQEBempty",
            "MD5OfBody": "d41d8cd98f00b204e9800998ecf8427e",
            # Characters JSON must escape, raw in the body.
            "Body": 'line1\nline2\t\x01\x1f\x7f "quoted" back\\slash </script>',
            "Attributes": {**_ATTRIBUTES, "ApproximateReceiveCount": "3"},
        },
    ]
}

SQS_FIFO: dict[str, Any] = {
    "Messages": [
        {
            "MessageId": "11d6ee51-4cc7-4302-9e22-7cd8afdaadf5",
            "ReceiptHandle": "AQEBBX8nesZEXmkhsmZeyIE8iQAMig7qw",
            "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
            "Body": "Test message.",
            "Attributes": {
                **_ATTRIBUTES,
                "SequenceNumber": "18849496460467696128",
                "MessageGroupId": "1",
                "MessageDeduplicationId": "1",
            },
        }
    ]
}
