"""Running in production: outages survived, logs that never leak payloads or secrets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess, events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply
from tests.support.proxy import Proxy
from tests.support.queues import depth, make_queue, send
from tests.support.wait import eventually


async def test_a_network_outage_to_aws_is_survived_without_losing_records(
    moto: str, sqs: Any
) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=5)
    upstream = urlparse(moto)
    seen_states: set[str] = set()
    async with FakeLambda() as fake, Proxy(upstream.hostname or "", upstream.port or 0) as proxy:
        config = config_yaml(
            proxy.url,
            [{"source": queue.arn, "function": "orders-fn"}],
            lambda_url=fake.endpoint_url,
            shutdown_timeout=30,  # the daemon's default
        )
        async with running(settings_from(config)) as app:
            status = app.mappings[0].status
            await send(sqs, queue.url, [f"before-{i}" for i in range(5)])
            await eventually(lambda: status.state.value == "running")
            await fake.wait_for(1)
            await proxy.cut()

            def degraded() -> bool:
                seen_states.add(status.state.value)
                return status.state.value == "degraded"

            await eventually(degraded, timeout=30)
            assert "orders" in (status.error or "")
            await send(sqs, queue.url, [f"during-{i}" for i in range(5)])
            await proxy.restore()
            await eventually(lambda: status.state.value == "running", timeout=30)
            await eventually(
                lambda: events_total(app, "deleted") >= 10,
                timeout=30,
            )

            async def drained() -> bool:
                return await depth(sqs, queue.url) == (0, 0)

            await eventually(drained, timeout=30)
    delivered = {r["body"] for inv in fake.invocations for r in inv.event["Records"]}
    assert delivered == {f"before-{i}" for i in range(5)} | {f"during-{i}" for i in range(5)}


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY-zz9"
PAYLOAD = "CARDNUMBER-4111-1111-1111-1111"


async def test_logs_never_carry_payloads_or_credentials(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    calls = 0

    def misbehave(event: Any, info: Invocation) -> Any:
        nonlocal calls
        calls += 1
        # A function error whose message echoes the payload, a malformed partial response,
        # and a throttle: every error path the daemon logs.
        return [
            Reply.error(f"cannot handle {PAYLOAD}"),
            Reply.result({"batchItemFailures": [{"itemIdentifier": PAYLOAD}]}),
            Reply.throttled(),
            Reply.result(PAYLOAD),
        ][min(calls - 1, 3)]

    async with FakeLambda(misbehave) as fake:
        queue = await make_queue(sqs, "orders", visibility_timeout=1)
        await send(sqs, queue.url, [f'{{"card": "{PAYLOAD}"}}', "not json " + PAYLOAD])
        config = tmp_path / "poller.yaml"
        mapping = {
            "source": queue.arn,
            "function": "orders-fn",
            "function_response_types": ["ReportBatchItemFailures"],
        }
        config.write_text(
            config_yaml(moto, [mapping], lambda_url=fake.endpoint_url, shutdown_timeout=30)
        )
        os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET
        try:
            daemon = DaemonProcess(config, tmp_path / "out.log", log_level="INFO")
            daemon.start()
        finally:
            os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
        try:
            await fake.wait_for(4, timeout=40)
            await daemon.stop(timeout=30)
        finally:
            daemon.kill()
    logs = daemon.logs()
    assert "function error" in logs or "failed" in logs  # the error paths did log
    assert PAYLOAD not in logs
    assert SECRET not in logs


async def test_ops_endpoints_report_health_readiness_status_and_metrics(
    moto: str, sqs: Any
) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, ["a", "b"])
    async with FakeLambda() as fake:
        mappings = [
            {"source": queue.arn, "function": "orders-fn"},
            {"name": "paused", "source": queue.arn, "function": "other", "enabled": False},
        ]
        config = config_yaml(moto, mappings, lambda_url=fake.endpoint_url)
        async with running(settings_from(config)) as app, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{app.server.port}"

            async def get(path: str) -> tuple[int, str]:
                async with http.get(base + path) as response:
                    return response.status, await response.text()

            assert (await get("/healthz"))[0] == 200

            async def ready() -> bool:
                return (await get("/readyz"))[0] == 200

            await eventually(ready)
            await eventually(lambda: events_total(app, "deleted") == 2)
            status, body = await get("/status")
            assert status == 200
            mappings = {m["name"]: m for m in json.loads(body)["mappings"]}
            assert mappings["orders"]["state"] == "running"
            assert mappings["orders"]["source"] == queue.arn
            assert mappings["orders"]["target"] == "lambda:orders-fn"
            assert mappings["orders"]["error"] is None
            assert mappings["orders"]["shards"] == []
            assert len(mappings["orders"]["uuid"]) == 36
            assert mappings["paused"]["state"] == "disabled"
            status, text = await get("/metrics")
            assert status == 200
            assert 'poller_events_total{mapping="orders",stage="deleted"} 2.0' in text
            assert 'poller_mapping_up{mapping="orders"} 1.0' in text
            assert 'poller_mapping_up{mapping="paused"} 0.0' in text
            app.stop()
            code, reason = await get("/readyz")
            assert code == 503 and "shutting down" in reason
