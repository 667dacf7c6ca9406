"""Lease-table test helpers: a single-threaded DynamoDB front on moto, fleet configs, probes.

moto's backends hold no locks and its ThreadedMotoServer serves requests on threads, so two
conditional writes racing each other are not atomic there (MOTO-NOTES "DynamoDB tables"). The
lease table is therefore served from a second front on the same (process-global) moto state
that handles one request at a time; replicas reach it through `aws.endpoints.dynamodb`.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess
from tests.support.fake_lambda import FakeLambda

TABLE = "poller-leases"
_PORT = re.compile(r"on port (\d+)")
_REPLICA = re.compile(r"as replica (\S+) ")


@contextmanager
def single_threaded_dynamodb() -> Iterator[str]:
    """moto's DynamoDB on 127.0.0.1 (a free port), one request at a time; its URL."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, name="dynamodb-front", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def fleet_yaml(
    moto: str,
    dynamodb: str,
    fake: FakeLambda,
    source: str,
    *,
    lease_duration: float = 2,
    shutdown_timeout: float = 10,
    **mapping: Any,
) -> str:
    """A config for one replica of a fleet: a lease table on `dynamodb`, one stream mapping
    `orders` of `source` (TRIM_HORIZON, batches of 10, unless `mapping` says otherwise) → the
    fake function `stream-fn`."""
    keys = {"source": source, "starting_position": "TRIM_HORIZON", "batch_size": 10, **mapping}
    return config_yaml(
        moto,
        [{"function": "stream-fn", **keys}],
        lambda_url=fake.endpoint_url,
        dynamodb_url=dynamodb,
        checkpoints={
            "backend": "dynamodb",
            "table": TABLE,
            "lease_duration_seconds": lease_duration,
        },
        shutdown_timeout=shutdown_timeout,
        tuning={"shard_discovery_interval_seconds": 1},
    )


def start_fleet(tmp_path: Path, config: str, count: int) -> list[DaemonProcess]:
    """`count` more replicas of `poller run` on one config, each logging to its own file."""
    path = tmp_path / "fleet.yaml"
    path.write_text(config)
    first = len(list(tmp_path.glob("replica-*.log")))
    replicas = [
        DaemonProcess(path, tmp_path / f"replica-{n}.log") for n in range(first, first + count)
    ]
    for replica in replicas:
        replica.start()
    return replicas


async def stop_fleet(replicas: Sequence[DaemonProcess]) -> list[int]:
    """SIGTERM every replica still running, all at once; their exit codes, in order. Any
    replica still there afterwards (its wait failed) is killed."""
    running = [r for r in replicas if r.proc is not None and r.proc.poll() is None]
    try:
        for replica in running:
            replica.terminate()
        return [await replica.wait(timeout=30) for replica in running]
    finally:
        for replica in replicas:
            replica.kill()


def ops_port(replica: DaemonProcess) -> int | None:
    """The port a replica's ops server listens on, from its startup log line."""
    for line in replica.logs().splitlines():
        if "serving /metrics" in line:
            found = _PORT.search(line)
            if found:
                return int(found.group(1))
    return None


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def get_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def metric_value(text: str, name: str) -> float | None:
    """One unlabelled-but-mapping sample of a Prometheus exposition (mapping="orders")."""
    for line in text.splitlines():
        if line.startswith(f'{name}{{mapping="orders"}} '):
            return float(line.split()[-1])
    return None


async def lease_items(dynamodb: Any) -> list[dict[str, Any]]:
    """Every shard lease item of the table, as plain dicts (owner None when free)."""
    return [
        {
            "shard": item["sk"]["S"].removeprefix("shard|"),
            "owner": item.get("owner", {}).get("S"),
            "state": item.get("state", {}).get("S"),
            "checkpoint": item.get("checkpoint", {}).get("S"),
        }
        for item in await _shard_items(dynamodb)
    ]


async def lease_counters(dynamodb: Any) -> dict[str, int]:
    """Each shard lease's counter, which its owner moves at every renewal."""
    return {
        item["sk"]["S"].removeprefix("shard|"): int(item.get("counter", {}).get("N", "0"))
        for item in await _shard_items(dynamodb)
    }


async def _shard_items(dynamodb: Any) -> list[dict[str, Any]]:
    return [item for item in await table_items(dynamodb) if item["sk"]["S"].startswith("shard|")]


async def table_items(dynamodb: Any) -> list[dict[str, Any]]:
    """Every item of the lease table (every page: window chunks fill pages fast), in key order
    within each partition; none when the table does not exist."""
    if TABLE not in (await dynamodb.list_tables())["TableNames"]:
        return []
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": TABLE, "ConsistentRead": True}
    while True:
        answer = await dynamodb.scan(**request)
        items.extend(answer["Items"])
        if not answer.get("LastEvaluatedKey"):
            return items
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


async def owners(dynamodb: Any, shards: Sequence[str] | None = None) -> Counter[str | None]:
    """How many open leases (of `shards`, if given) each owner holds; None counts free ones."""
    return Counter(
        item["owner"]
        for item in await lease_items(dynamodb)
        if item["state"] == "open" and (shards is None or item["shard"] in shards)
    )


def replica_id(replica: DaemonProcess) -> str:
    """The id a replica keeps its leases as, from its startup log line."""
    found = _REPLICA.search(replica.logs())
    assert found, replica.logs()
    return found.group(1)
