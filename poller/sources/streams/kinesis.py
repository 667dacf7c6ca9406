"""The Kinesis Data Streams side of a stream mapping: ListShards, iterators, GetRecords.

Only the API differences live here; lineage, batching and checkpoints are shared
(`streams.shards`, `streams.source`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from poller.aws import calls
from poller.checkpoints.lineage import ShardInfo
from poller.config.arns import SourceArn
from poller.engine.records import StreamRecord
from poller.events.streams import KinesisRecords, kinesis_record
from poller.filtering.filter_set import FilterSet
from poller.sources.streams.shards import ReadResult, StartAt

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient
    from types_aiobotocore_kinesis.type_defs import (
        GetShardIteratorInputTypeDef,
        ListShardsInputTypeDef,
    )

# GetRecords returns at most 10,000 records per call.
KINESIS_MAX_RECORDS = 10_000


def shard_info(shard: Mapping[str, Any]) -> ShardInfo:
    """A ListShards entry as lineage sees it (a merge has an adjacent second parent)."""
    parents = tuple(
        shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key)
    )
    ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    return ShardInfo(shard["ShardId"], parents, int(ending) if ending is not None else None)


class KinesisShards:
    """ShardApi for one Kinesis stream, over an aiobotocore `kinesis` client."""

    kind: Literal["kinesis"] = "kinesis"
    max_records = KINESIS_MAX_RECORDS
    # About one GetRecords per second per shard while idle, as Lambda polls; the shard's
    # 5 reads/s budget is shared with every other consumer of the stream.
    idle_poll_seconds = 1.0
    supports_at_timestamp = True
    list_permission = "kinesis:ListShards"
    read_permission = "kinesis:GetShardIterator and kinesis:GetRecords"

    def __init__(
        self, client: KinesisClient, source: SourceArn, *, invoke_identity_arn: str
    ) -> None:
        self._client = client
        self.stream_arn = source.arn
        self._region = source.region
        self._identity = invoke_identity_arn
        self._records = KinesisRecords(
            stream_arn=source.arn, region=source.region, invoke_identity_arn=invoke_identity_arn
        )

    async def list_shards(self) -> list[ShardInfo]:
        """Every shard, following ListShards's pagination."""
        shards: list[ShardInfo] = []
        token: str | None = None
        while True:
            # NextToken identifies the stream on its own; the API refuses both together.
            request: ListShardsInputTypeDef = (
                {"NextToken": token} if token else {"StreamARN": self.stream_arn}
            )
            page = await calls.bounded("ListShards", self._client.list_shards(**request))
            shards.extend(shard_info(shard) for shard in page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                return shards

    async def iterator(self, shard_id: str, start: StartAt) -> str:
        """GetShardIterator at `start`."""
        request: GetShardIteratorInputTypeDef = {
            "StreamARN": self.stream_arn,
            "ShardId": shard_id,
            "ShardIteratorType": start.type,
        }
        if start.sequence_number is not None:
            request["StartingSequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            request["Timestamp"] = datetime.fromtimestamp(start.timestamp, tz=UTC)
        answer = await calls.bounded("GetShardIterator", self._client.get_shard_iterator(**request))
        return str(answer["ShardIterator"])

    async def read(self, iterator: str, limit: int) -> ReadResult:
        """One GetRecords call."""
        answer = await calls.bounded(
            "GetRecords",
            self._client.get_records(
                ShardIterator=iterator, Limit=limit, StreamARN=self.stream_arn
            ),
        )
        behind = answer.get("MillisBehindLatest")
        return ReadResult(
            records=answer.get("Records", []),
            next_iterator=answer.get("NextShardIterator"),
            caught_up=behind == 0,
            behind_latest=behind / 1000 if behind is not None else None,
        )

    def event_record(self, raw: Mapping[str, Any], shard_id: str) -> dict[str, Any]:
        """The Lambda event record for one GetRecords record."""
        return kinesis_record(
            raw,
            shard_id=shard_id,
            stream_arn=self.stream_arn,
            region=self._region,
            invoke_identity_arn=self._identity,
        )

    def stream_record(self, raw: Mapping[str, Any], shard_id: str) -> StreamRecord:
        """The engine record for one GetRecords record, serialized without the dict."""
        return self._records.record(raw, shard_id)

    def matches(self, filters: FilterSet, record: Mapping[str, Any]) -> bool:
        """Whether the record passes the mapping's filters."""
        return filters.matches_kinesis(record)
