"""When a command's reads of a shard have reached what the shard held: its tip.

Kinesis says so itself (`MillisBehindLatest` 0). DynamoDB Streams does not, and an empty page
is no proof: its GetRecords may answer empty pages for a part of an open shard holding no
records before the part that does ("it might take multiple calls to get to a portion of the
shard that contains stream records"). Stopping at the first empty page could silently leave a
range's records unread, so there only a run of empty pages in a row says the tip was reached.
"""

from __future__ import annotations

from poller.sources.streams.shards import ReadResult, ShardApi

# Empty pages in a row that say a DynamoDB shard's tip was reached, read `GAP_PAUSE` apart:
# about two seconds of reading nothing, far past a gap's few empty pages, and a bounded wait at
# the end of an open shard (a closed one ends at once, with its iterator).
DYNAMODB_EMPTY_READS = 10
# The pause after an empty read (5 reads a second, within a shard's GetRecords rate).
GAP_PAUSE = 0.2


class Tip:
    """Whether one shard's reads, in order, have reached its tip."""

    def __init__(self, api: ShardApi) -> None:
        self._counts_empty_pages = api.kind == "dynamodb"
        self._empty = 0

    def reached(self, result: ReadResult) -> bool:
        """Whether, after `result`, nothing newer is waiting in the shard."""
        if not self._counts_empty_pages:
            return result.caught_up
        self._empty = 0 if result.records else self._empty + 1
        return self._empty >= DYNAMODB_EMPTY_READS
