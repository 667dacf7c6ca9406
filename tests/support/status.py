"""A `poller run` subprocess's /status and /metrics, read over HTTP, for tests that cannot run
the daemon in their own process."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def mapping_status(port: int, name: str = "orders") -> dict[str, Any] | None:
    """One mapping's entry of GET /status; None while the server does not answer."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/status") as response,
        ):
            body = await response.json()
    except (aiohttp.ClientError, OSError):
        return None
    for mapping in body["mappings"]:
        if mapping["name"] == name:
            return dict(mapping)
    return None


async def metric_value(port: int, name: str, **labels: str) -> float:
    """A sample of GET /metrics (0 when absent or the server does not answer)."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, OSError):
        return 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
