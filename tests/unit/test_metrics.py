"""What a Prometheus scrape of /metrics returns: poller's series, and nothing else per child."""

from __future__ import annotations

import aiohttp

from poller.ops.metrics import Metrics
from poller.ops.server import OpsServer
from poller.targets.base import Outcome


async def _scrape(metrics: Metrics) -> str:
    server = OpsServer("127.0.0.1", 0, metrics.registry, lambda: [], lambda: False)
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as response,
        ):
            assert response.status == 200
            return await response.text()
    finally:
        await server.stop()


async def test_a_scrape_has_no_created_series() -> None:
    metrics = Metrics()
    mapping = metrics.for_mapping("orders")
    mapping.invocation(Outcome.SUCCESS)
    mapping.count("polled", 3)
    mapping.duration.observe(0.2)
    mapping.batch_size.observe(3)
    mapping.lease_takeovers.inc()

    text = await _scrape(metrics)

    assert 'poller_invocations_total{mapping="orders",outcome="success"} 1.0' in text
    assert 'poller_invocation_duration_seconds_count{mapping="orders"} 1.0' in text
    assert "_created" not in text


async def test_a_forgotten_mapping_leaves_the_scrape_and_the_others_stay() -> None:
    metrics = Metrics()
    for name in ("orders", "audit"):
        mapping = metrics.for_mapping(name, ["ReceiveMessage"])
        mapping.invocation(Outcome.SUCCESS)
        mapping.iterator_age("shardId-0", 1.5)
        mapping.state("running").set(1)
    metrics.forget("audit")
    text = await _scrape(metrics)
    assert 'mapping="audit"' not in text
    for family in (
        "poller_invocations_total",
        "poller_iterator_age_seconds",
        "poller_mapping_state",
        "poller_source_errors_total",
    ):
        assert f'{family}{{mapping="orders"' in text, family
