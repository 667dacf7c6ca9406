"""FilterCriteria on an SQS mapping end to end: the real daemon, moto's server, a fake Invoke API.

Filtered-out messages are deleted and never invoked (ESM-SEMANTICS §1.3); the function gets
the original records, body still the raw string it was sent as; `poller_events_total` counts
them under `stage="filtered_out"`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.support.config import config_yaml
from tests.support.daemon import events_total, running, settings_from
from tests.support.fake_lambda import FakeLambda, event_records
from tests.support.queues import Queue, depth, make_queue, send
from tests.support.wait import eventually


def mapping_yaml(moto: str, fake: FakeLambda, queue: Queue, patterns: list[str]) -> str:
    """A one-mapping config whose filter_criteria holds `patterns`."""
    mapping = {
        "source": queue.arn,
        "function": "orders-fn",
        "filter_criteria": {"filters": [{"pattern": pattern} for pattern in patterns]},
    }
    return config_yaml(moto, [mapping], lambda_url=fake.endpoint_url)


async def run_until_all_deleted(
    moto: str, sqs: Any, queue: Queue, patterns: list[str], total: int
) -> tuple[FakeLambda, dict[str, float]]:
    """Run the daemon until every message is deleted; the fake and the event counts by stage."""
    async with FakeLambda() as fake:
        async with running(settings_from(mapping_yaml(moto, fake, queue, patterns))) as app:
            await eventually(lambda: events_total(app, "deleted") == total, timeout=20)
            assert await depth(sqs, queue.url) == (0, 0)
            stages = ("polled", "filtered_out", "invoked", "deleted")
            counts = {stage: events_total(app, stage) for stage in stages}
        assert app.exit_code == 0  # type: ignore[attr-defined]
    return fake, counts


async def test_non_matching_messages_are_deleted_and_never_invoked(moto: str, sqs: Any) -> None:
    # Visibility 1 s: a filtered-out message that was not deleted would come back and be seen
    # again (polled would grow past the number sent) instead of the queue draining to (0, 0).
    queue = await make_queue(sqs, "orders", visibility_timeout=1)
    patterns = [
        '{"body": {"kind": ["refund"], "amount": [{"numeric": [">", 100]}]}}',
        '{"body": {"code": [300]}}',
    ]
    matching = [
        '{"kind": "refund",   "amount": 150.50}',  # odd spacing and 150.50 must survive
        '{"kind":"refund","amount":1e3,"note":"ünïcode ✓"}',
        '{"code": 300}',
    ]
    not_matching = [
        '{"kind": "order", "amount": 150}',
        '{"kind": "refund", "amount": 100}',  # numeric > 100 is strict
        '{"kind": "refund"}',  # every named field must be present
        "refund 150",  # a JSON pattern never matches a plain body
        '{"code": 300.0}',  # without numeric, numbers compare by their text
        '{"code": 3.0e2}',
        '{"code": "300"}',  # a string is not a number
    ]
    sent = matching + not_matching
    ids = dict(zip(await send(sqs, queue.url, sent), sent, strict=True))

    fake, counts = await run_until_all_deleted(moto, sqs, queue, patterns, len(sent))

    delivered = event_records(fake)
    assert Counter(r["body"] for r in delivered) == Counter(matching)
    for record in delivered:
        # The original record: the body is the raw string as sent, never the parsed copy.
        assert isinstance(record["body"], str)
        assert record["body"] == ids[record["messageId"]]
        assert record["eventSource"] == "aws:sqs"
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert counts == {
        "polled": len(sent),
        "filtered_out": len(not_matching),
        "invoked": len(matching),
        "deleted": len(sent),
    }


async def test_plain_string_pattern_matches_plain_bodies_only(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=1)
    patterns = ['{"body": [{"wildcard": "*ERROR*"}, "ping"]}']
    matching = ["disk ERROR on sda", "ERROR", "ping"]
    not_matching = [
        '{"level": "ERROR"}',  # JSON: a plain pattern never matches it, though the text would
        '["ERROR"]',
        "all good",
        "PING",
    ]
    sent = matching + not_matching
    await send(sqs, queue.url, sent)

    fake, counts = await run_until_all_deleted(moto, sqs, queue, patterns, len(sent))

    assert Counter(r["body"] for r in event_records(fake)) == Counter(matching)
    assert counts["filtered_out"] == len(not_matching)
    assert counts["invoked"] == len(matching)


async def test_a_batch_of_only_filtered_out_messages_invokes_nothing(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=1)
    sent = [json.dumps({"kind": "order", "n": i}) for i in range(15)]
    await send(sqs, queue.url, sent)

    fake, counts = await run_until_all_deleted(
        moto, sqs, queue, ['{"body": {"kind": ["refund"]}}'], len(sent)
    )

    assert fake.invocations == []
    assert counts["filtered_out"] == len(sent)
    assert counts["invoked"] == 0
