"""The DynamoDB Streams side of a stream mapping: DescribeStream, iterators, GetRecords.

Only the API differences live here; lineage, batching and checkpoints are shared
(`streams.shards`, `streams.source`). DynamoDB Streams has no AT_TIMESTAMP iterator,
so the shared code starts such a shard at TRIM_HORIZON and skips the older records itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from poller.aws import calls
from poller.checkpoints.lineage import ShardInfo
from poller.config.arns import SourceArn
from poller.engine.records import StreamRecord
from poller.events.streams import dynamodb_record, stream_record
from poller.filtering.filter_set import FilterSet
from poller.sources.streams.shards import ReadResult, StartAt

if TYPE_CHECKING:
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient
    from types_aiobotocore_dynamodbstreams.type_defs import (
        DescribeStreamInputTypeDef,
        GetShardIteratorInputTypeDef,
    )

# GetRecords returns at most 1,000 records (or 1 MB) per call.
DYNAMODB_MAX_RECORDS = 1_000


def shard_info(shard: Mapping[str, Any]) -> ShardInfo:
    """A DescribeStream shard as lineage sees it (DynamoDB shards have at most one parent)."""
    parent = shard.get("ParentShardId")
    ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    return ShardInfo(
        shard["ShardId"],
        (parent,) if parent else (),
        int(ending) if ending is not None else None,
    )


class DynamoDBShards:
    """ShardApi for one DynamoDB stream, over an aiobotocore `dynamodbstreams` client."""

    kind: Literal["dynamodb"] = "dynamodb"
    max_records = DYNAMODB_MAX_RECORDS
    # Lambda polls DynamoDB shards about four times a second.
    idle_poll_seconds = 0.25
    supports_at_timestamp = False
    list_permission = "dynamodb:DescribeStream"
    read_permission = "dynamodb:GetShardIterator and dynamodb:GetRecords"

    def __init__(self, client: DynamoDBStreamsClient, source: SourceArn) -> None:
        self._client = client
        self.stream_arn = source.arn
        self._region = source.region

    async def list_shards(self) -> list[ShardInfo]:
        """Every shard, following DescribeStream's pagination."""
        shards: list[ShardInfo] = []
        last: str | None = None
        while True:
            request: DescribeStreamInputTypeDef = {"StreamArn": self.stream_arn}
            if last:
                request["ExclusiveStartShardId"] = last
            answer = await calls.bounded("DescribeStream", self._client.describe_stream(**request))
            description = answer["StreamDescription"]
            shards.extend(shard_info(shard) for shard in description.get("Shards", []))
            following = description.get("LastEvaluatedShardId")
            # An emulator that ignores ExclusiveStartShardId would page forever otherwise.
            if not following or following == last:
                return shards
            last = following

    async def iterator(self, shard_id: str, start: StartAt) -> str:
        """GetShardIterator at `start`."""
        request: GetShardIteratorInputTypeDef = {
            "StreamArn": self.stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": start.type,
        }
        if start.sequence_number is not None:
            request["SequenceNumber"] = start.sequence_number
        answer = await calls.bounded("GetShardIterator", self._client.get_shard_iterator(**request))
        return str(answer["ShardIterator"])

    async def read(self, iterator: str, limit: int) -> ReadResult:
        """One GetRecords call."""
        answer = await calls.bounded(
            "GetRecords", self._client.get_records(ShardIterator=iterator, Limit=limit)
        )
        records = answer.get("Records", [])
        # No MillisBehindLatest here: an empty read is the only sign of being caught up.
        return ReadResult(
            records=records,
            next_iterator=answer.get("NextShardIterator"),
            caught_up=not records,
        )

    def event_record(self, raw: Mapping[str, Any], shard_id: str) -> dict[str, Any]:
        """The Lambda event record for one GetRecords record."""
        return dynamodb_record(raw, stream_arn=self.stream_arn, region=self._region)

    def stream_record(self, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        """The engine record for one GetRecords record."""
        return stream_record(self.event_record(raw, shard_id), kind="dynamodb")

    def matches(self, filters: FilterSet, record: Mapping[str, Any]) -> bool:
        """Whether the record passes the mapping's filters."""
        return filters.matches_dynamodb(record)
