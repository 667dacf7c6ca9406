"""The unit a stream mapping moves through the engine: one record, serialized once."""

from __future__ import annotations

from dataclasses import dataclass


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
