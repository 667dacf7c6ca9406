"""The unit every mapping moves through the engine: one record, serialized once.

`Record` is what the engine needs of any source's record; `StreamRecord` is the Kinesis and
DynamoDB Streams one, and `sources.sqs.source.SqsMessage` the SQS one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Record(Protocol):
    """What batching, invoking and settling need of a record, whatever its source."""

    @property
    def id(self) -> str:
        """What a partial batch response names it by: messageId, or sequence number."""
        ...

    @property
    def ordering_key(self) -> str | None:
        """Records of one key keep their order (FIFO group, partition key); None: unordered."""
        ...

    @property
    def arrival(self) -> float:
        """When the source received it, epoch seconds (record age)."""
        ...

    @property
    def serialized(self) -> bytes:
        """The Lambda event record, ready to be joined into `{"Records": [...]}`."""
        ...

    @property
    def trace_header(self) -> str | None:
        """An X-Ray trace header the record carries (SQS AWSTraceHeader), if any."""
        ...


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Kinesis or DynamoDB Streams record as read from a shard.

    `sequence` is `int(sequence_number)`: sequence numbers are decimal strings of up to ~56
    digits and moto's are short ("9" < "10" as strings), so every comparison uses the integer.
    `key` routes the record to a virtual shard when `parallelization_factor` > 1 (Kinesis
    partition key, DynamoDB item keys as canonical JSON). `arrival` is epoch seconds.
    `serialized` is the Lambda event record, ready to be joined into `{"Records": [...]}`.
    """

    sequence_number: str
    sequence: int
    key: str
    arrival: float
    serialized: bytes

    @property
    def id(self) -> str:
        """The sequence number: what a stream's batchItemFailures names."""
        return self.sequence_number

    @property
    def ordering_key(self) -> str:
        """The partition key (Kinesis) or item key (DynamoDB)."""
        return self.key

    @property
    def trace_header(self) -> None:
        """Stream records carry no trace header."""
        return None
