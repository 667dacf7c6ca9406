"""`poller status`: GET /status of a running daemon and show it as a table (or as JSON)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from poller.ops.commands.text import cell, table


class Unreachable(Exception):
    """The daemon did not answer; the message names the URL and why."""


def fetch(base_url: str, timeout: float) -> dict[str, Any]:
    """The daemon's /status document; Unreachable when it does not answer with JSON."""
    url = base_url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise Unreachable(f"{url}: no answer ({reason}); is `poller run` running there?") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise Unreachable(f"{url}: the answer is not JSON; is that a poller daemon?") from None
    if not isinstance(document, dict) or not isinstance(document.get("mappings"), list):
        raise Unreachable(f"{url}: the answer has no mappings; is that a poller daemon?")
    return document


def render(document: Mapping[str, Any]) -> str:
    """One block per mapping: its state and error, then a row per shard."""
    mappings: Sequence[Mapping[str, Any]] = document.get("mappings", [])
    if not mappings:
        return "no mappings\n"
    lines: list[str] = []
    for mapping in mappings:
        lines += table(
            ["MAPPING", "STATE", "ERROR"],
            [[cell(mapping.get("name")), cell(mapping.get("state")), cell(mapping.get("error"))]],
        )
        shards = mapping.get("shards") or []
        if shards:
            lines += table(
                ["SHARD", "OWNER", "CHECKPOINT", "ITERATOR AGE", "WINDOW"],
                [_shard_row(shard) for shard in shards],
                indent="  ",
            )
        lines.append("")
    return "\n".join(lines)


def _shard_row(shard: Mapping[str, Any]) -> list[str]:
    age = shard.get("iterator_age_seconds")
    return [
        cell(shard.get("id")),
        cell(shard.get("owner")),
        cell(shard.get("checkpoint")),
        cell(None if age is None else f"{float(age):.1f}s"),
        _window(shard.get("window")),
    ]


def _window(window: Mapping[str, Any] | None) -> str:
    if not window:
        return cell(None)
    return f"{window.get('start')}–{window.get('end')} ({window.get('state_bytes')} B state)"
