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
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess
from tests.support.fake_lambda import FakeLambda
from tests.support.queues import REGION

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
    mapping: dict[str, Any],
    *,
    lease_duration: float = 2,
    shutdown_timeout: float = 10,
) -> str:
    """A config for one replica of a fleet: a lease table on `dynamodb`, one stream mapping
    `orders` (keys of `mapping` as YAML values) → the fake function `stream-fn`."""
    endpoints = f"{{lambda: {fake.endpoint_url}, dynamodb: {dynamodb}}}"
    lines = [
        f"aws: {{region: {REGION}, endpoint_url: {moto}, endpoints: {endpoints}}}",
        "checkpoints: {backend: dynamodb, table: "
        + TABLE
        + f", lease_duration_seconds: {lease_duration}}}",
        "server: {host: 127.0.0.1, port: 0}",
        f"shutdown_timeout_seconds: {shutdown_timeout}",
        "tuning: {shard_discovery_interval_seconds: 1}",
        "mappings:",
        "  - name: orders",
        "    target: {type: lambda, function: stream-fn}",
    ]
    lines.extend(f"    {key}: {json.dumps(value)}" for key, value in mapping.items())
    return "\n".join(lines) + "\n"


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
    if TABLE not in (await dynamodb.list_tables())["TableNames"]:
        return []
    items = (await dynamodb.scan(TableName=TABLE, ConsistentRead=True))["Items"]
    return [
        {
            "shard": item["sk"]["S"].removeprefix("shard|"),
            "owner": item.get("owner", {}).get("S"),
            "state": item.get("state", {}).get("S"),
            "checkpoint": item.get("checkpoint", {}).get("S"),
        }
        for item in items
        if item["sk"]["S"].startswith("shard|")
    ]


async def owners(dynamodb: Any, shards: Sequence[str] | None = None) -> Counter[str | None]:
    """How many open leases (of `shards`, if given) each owner holds; None counts free ones."""
    return Counter(
        item["owner"]
        for item in await lease_items(dynamodb)
        if item["state"] == "open" and (shards is None or item["shard"] in shards)
    )


def replica_id(replica: DaemonProcess) -> str | None:
    """The id a replica keeps its leases as, from its startup log line."""
    found = _REPLICA.search(replica.logs())
    return found.group(1) if found else None


def elapsed(since: float) -> float:
    return time.monotonic() - since
