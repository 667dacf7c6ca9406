"""Daemon configs for tests, written as YAML text the way a user would give it to `poller run`.

Values are written in JSON, which YAML reads as flow style, so a test passes plain Python
values (dicts, lists, numbers, strings) and never has to quote or indent YAML itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support.queues import REGION


def config_yaml(
    endpoint: str,
    mappings: Sequence[Mapping[str, Any]],
    *,
    lambda_url: str | None = None,
    dynamodb_url: str | None = None,
    checkpoints: Mapping[str, Any] | None = None,
    shutdown_timeout: float = 10,
    tuning: Mapping[str, Any] | None = None,
    aws: Mapping[str, Any] | None = None,
    port: int = 0,
) -> str:
    """A config whose AWS calls go to `endpoint` (moto, or a proxy in front of it), Lambda's to
    `lambda_url` and DynamoDB's to `dynamodb_url` when given, with the ops server on a free
    port unless `port` names one. Each mapping is a dict of mapping keys; `name` defaults to
    "orders", and `function` stands for `target: {type: lambda, function: ...}`. `aws` adds
    keys to the `aws` section."""
    endpoints = {
        service: url
        for service, url in (("lambda", lambda_url), ("dynamodb", dynamodb_url))
        if url is not None
    }
    section: dict[str, Any] = {"region": REGION, "endpoint_url": endpoint, **(aws or {})}
    if endpoints:
        section["endpoints"] = endpoints
    lines = [f"aws: {json.dumps(section)}"]
    if checkpoints is not None:
        lines.append(f"checkpoints: {json.dumps(checkpoints)}")
    lines.append(f'server: {{"host": "127.0.0.1", "port": {port}}}')
    lines.append(f"shutdown_timeout_seconds: {shutdown_timeout}")
    if tuning is not None:
        lines.append(f"tuning: {json.dumps(tuning)}")
    lines.append("mappings:")
    for mapping in mappings:
        keys = dict(mapping)
        lines.append(f"  - name: {json.dumps(keys.pop('name', 'orders'))}")
        if "function" in keys:
            keys["target"] = {"type": "lambda", "function": keys.pop("function")}
        lines.extend(f"    {key}: {json.dumps(value)}" for key, value in keys.items())
    return "\n".join(lines) + "\n"
