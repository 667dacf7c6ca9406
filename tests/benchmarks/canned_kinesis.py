"""A Kinesis endpoint with one shard whose first GetRecords returns every record at once, for
the loop-lag benchmark: `python -m tests.benchmarks.canned_kinesis <port> <records>`.

In its own process, so building and sending the 10 MB answer shares no GIL with the loop being
measured. The records are those of `bench_loop_lag.make_records`, as the wire carries them
(Data in base64, the arrival in epoch seconds). Prints "ready" once it listens.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

from aiohttp import web

from tests.benchmarks.bench_loop_lag import SHARD, make_records

JSON = "application/x-amz-json-1.1"


def _wire(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "SequenceNumber": r["SequenceNumber"],
            "ApproximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
            "Data": base64.b64encode(r["Data"]).decode(),
            "PartitionKey": r["PartitionKey"],
        }
        for r in records
    ]


def main() -> None:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    records = _wire(make_records(count))
    first = records[0]["SequenceNumber"]
    full = json.dumps(
        {"Records": records, "NextShardIterator": "end", "MillisBehindLatest": 0}
    ).encode()
    empty = json.dumps({"Records": [], "NextShardIterator": "end", "MillisBehindLatest": 0})
    shards = json.dumps(
        {
            "Shards": [
                {
                    "ShardId": SHARD,
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
                    "SequenceNumberRange": {"StartingSequenceNumber": first},
                }
            ]
        }
    )

    async def handle(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        body = await request.json()
        if target == "ListShards":
            return web.Response(text=shards, content_type=JSON)
        if target == "GetShardIterator":
            return web.Response(text='{"ShardIterator": "start"}', content_type=JSON)
        if target == "GetRecords":
            if body["ShardIterator"] == "start":
                return web.Response(body=full, content_type=JSON)
            return web.Response(text=empty, content_type=JSON)
        return web.Response(status=400, text=f"not canned: {target}")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/{tail:.*}", handle)
    print("ready", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
