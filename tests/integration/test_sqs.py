"""SQS mappings end to end: the real daemon, moto's server, aiobotocore, a fake Invoke API."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio

from tests.support.config import config_yaml
from tests.support.daemon import events_total, invocations_total, metric, running, settings_from
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, SlowFunction
from tests.support.queues import Queue, depth, make_queue, receive_all, send
from tests.support.wait import eventually


def mapping_yaml(
    moto: str, fake: FakeLambda, queue: Queue, *more: dict[str, Any], **keys: Any
) -> str:
    """A config with the mapping `orders` of `queue` → the fake function `orders-fn` (`keys`
    become its mapping keys), then the mappings in `more`."""
    orders = {"source": queue.arn, "function": "orders-fn", **keys}
    return config_yaml(moto, [orders, *more], lambda_url=fake.endpoint_url)


def bodies(invocation: Invocation) -> list[str]:
    return [record["body"] for record in invocation.event["Records"]]


async def test_every_message_delivered_once_with_lambdas_event_shape(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    sent = [json.dumps({"order": i}) for i in range(25)]
    await send(
        sqs,
        queue.url,
        sent,
        MessageAttributes={
            "tenant": {"DataType": "String", "StringValue": "acme"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    async with FakeLambda() as fake:
        async with running(settings_from(mapping_yaml(moto, fake, queue))) as app:
            await eventually(lambda: events_total(app, "deleted") == 25)
            assert await depth(sqs, queue.url) == (0, 0)
        delivered = Counter(body for inv in fake.invocations for body in bodies(inv))
        assert delivered == Counter(sent)
        assert all(count == 1 for count in delivered.values())
        assert all(len(inv.event["Records"]) <= 10 for inv in fake.invocations)
        first = fake.invocations[0]
        record = first.event["Records"][0]
        assert set(record) == {
            "messageId",
            "receiptHandle",
            "body",
            "attributes",
            "messageAttributes",
            "md5OfBody",
            "md5OfMessageAttributes",
            "eventSource",
            "eventSourceARN",
            "awsRegion",
        }
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"] == queue.arn
        assert record["awsRegion"] == "us-east-1"
        attributes = record["attributes"]
        for key in (
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        ):
            assert isinstance(attributes[key], str)
        assert attributes["ApproximateReceiveCount"] == "1"
        assert attributes["SentTimestamp"].isdigit()
        assert record["messageAttributes"]["tenant"] == {
            "stringValue": "acme",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
        assert first.headers["X-Amzn-Trace-Id"].startswith("Root=1-")
        assert events_total(app, "polled") == 25
        assert invocations_total(app, "success") == len(fake.invocations)
        assert app.exit_code == 0  # type: ignore[attr-defined]


async def test_partial_batch_response_returns_only_reported_messages_then_dlq(
    moto: str, sqs: Any
) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=1, max_receive_count=2)
    sent = [f"good-{i}" for i in range(8)] + [f"bad-{i}" for i in range(3)]
    await send(sqs, queue.url, sent)

    def report_bad(event: Any, info: Invocation) -> Any:
        failures = [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if r["body"].startswith("bad")
        ]
        return {"batchItemFailures": failures}

    async with FakeLambda(report_bad) as fake:
        config = mapping_yaml(
            moto, fake, queue, function_response_types=["ReportBatchItemFailures"]
        )
        async with running(settings_from(config)) as app:
            # maxReceiveCount 2: each bad message is seen twice, then SQS moves it to the DLQ.
            async def in_dlq() -> bool:
                return (await depth(sqs, queue.dlq_url or ""))[0] == 3

            await eventually(in_dlq, timeout=30)
            await eventually(lambda: depth(sqs, queue.url), timeout=1)  # queue still answers
        delivered = Counter(body for inv in fake.invocations for body in bodies(inv))
        assert {b: delivered[b] for b in sent if b.startswith("good")} == {
            f"good-{i}": 1 for i in range(8)
        }
        assert all(delivered[f"bad-{i}"] == 2 for i in range(3))
        # FailedInvokeEventCount: records listed in batchItemFailures count as failed.
        assert events_total(app, "failed") == 6
        dead = sorted(m["Body"] for m in await receive_all(sqs, queue.dlq_url or ""))
        assert dead == ["bad-0", "bad-1", "bad-2"]
        assert await depth(sqs, queue.url) == (0, 0)


async def test_function_error_leaves_the_whole_batch_for_redelivery(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=1)
    sent = [f"m{i}" for i in range(5)]
    await send(sqs, queue.url, sent)
    seen: set[str] = set()

    def fail_first_time(event: Any, info: Invocation) -> Any:
        ids = {r["messageId"] for r in event["Records"]}
        if ids - seen:
            seen.update(ids)
            return Reply.error("first attempt fails")
        return None

    async with FakeLambda(fail_first_time) as fake:
        async with running(settings_from(mapping_yaml(moto, fake, queue))) as app:
            await eventually(
                lambda: events_total(app, "deleted") == 5,
                timeout=20,
            )
            errors = invocations_total(app, "function_error")
        assert errors >= 1
        delivered = Counter(body for inv in fake.invocations for body in bodies(inv))
        # Nothing was deleted after the error: every message, even ones the function may
        # have finished, came back once more.
        assert delivered == Counter({body: 2 for body in sent})
        counts = [
            r["attributes"]["ApproximateReceiveCount"]
            for inv in fake.invocations[-1:]
            for r in inv.event["Records"]
        ]
        assert set(counts) == {"2"}


async def test_concurrency_reaches_maximum_and_never_exceeds_it(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, [f"m{i}" for i in range(24)])
    slow = SlowFunction(0.3)

    async with FakeLambda(slow) as fake:
        config = mapping_yaml(
            moto, fake, queue, batch_size=1, scaling_config={"maximum_concurrency": 4}
        )
        async with running(settings_from(config)) as app:
            await eventually(
                lambda: events_total(app, "deleted") == 24,
                timeout=30,
            )
    assert slow.peak == 4
    assert len(fake.invocations) == 24


async def test_fifo_keeps_group_order_and_one_batch_per_group(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders.fifo", visibility_timeout=1)
    for group in "ABC":
        await send(sqs, queue.url, [f"{group}-{i}" for i in range(6)], group=group)
    in_flight: Counter[str] = Counter()
    overlaps: list[str] = []
    outcomes: list[tuple[list[str], bool]] = []
    failed_once = False

    async def handler(event: Any, info: Invocation) -> Any:
        nonlocal failed_once
        batch = [r["body"] for r in event["Records"]]
        groups = {r["attributes"]["MessageGroupId"] for r in event["Records"]}
        for group in groups:
            if in_flight[group]:
                overlaps.append(group)
            in_flight[group] += 1
        await anyio.sleep(0.05)
        for group in groups:
            in_flight[group] -= 1
        if "A-2" in batch and not failed_once:
            failed_once = True
            outcomes.append((batch, False))
            return Reply.error("A-2 fails once")
        outcomes.append((batch, True))
        return None

    async with FakeLambda(handler) as fake:
        config = mapping_yaml(moto, fake, queue, batch_size=2)
        async with running(settings_from(config)) as app:
            await eventually(
                lambda: events_total(app, "deleted") == 18,
                timeout=30,
            )
    assert failed_once
    assert overlaps == []
    for group in "ABC":
        done = [b for batch, ok in outcomes if ok for b in batch if b.startswith(group)]
        assert done == [f"{group}-{i}" for i in range(6)], (
            group,
            [o for o in outcomes if o[0][0].startswith(group)],
        )


async def test_batching_window_gathers_more_than_ten(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, [f"m{i}" for i in range(40)])
    async with FakeLambda() as fake:
        # Two receivers: each gathers its batch over several receives of at most 10.
        config = mapping_yaml(
            moto,
            fake,
            queue,
            batch_size=30,
            maximum_batching_window_in_seconds=2,
            scaling_config={"maximum_concurrency": 2},
        )
        async with running(settings_from(config)) as app:
            await eventually(
                lambda: events_total(app, "deleted") == 40,
                timeout=30,
            )
    assert max(len(inv.event["Records"]) for inv in fake.invocations) > 10


async def test_throttling_holds_the_batch_and_loses_nothing(moto: str, sqs: Any) -> None:
    # maxReceiveCount 1: a message that became visible and was received again would go straight
    # to the DLQ, so an empty DLQ proves the hold kept every message hidden (VT 2 s < the hold).
    queue = await make_queue(sqs, "orders", visibility_timeout=2, max_receive_count=1)
    sent = [f"m{i}" for i in range(10)]
    await send(sqs, queue.url, sent)
    answers = [Reply.throttled(), Reply.not_found(), Reply.throttled()]
    states: list[str] = []

    async with FakeLambda() as fake:
        config = mapping_yaml(moto, fake, queue)
        async with running(settings_from(config)) as app:

            def next_answer(event: Any, info: Invocation) -> Any:
                states.append(app.mappings[0].status.state.value)
                return answers.pop(0) if answers else None

            fake.handler = next_answer
            await eventually(
                lambda: events_total(app, "deleted") == 10,
                timeout=40,
            )
            assert app.mappings[0].status.state.value == "running"
        assert invocations_total(app, "throttled") == 2
        assert invocations_total(app, "invoke_error") == 1
    assert "degraded" in states
    assert await depth(sqs, queue.dlq_url or "") == (0, 0)
    succeeded = Counter(b for inv in fake.invocations[3:] for b in bodies(inv))
    assert succeeded == Counter(sent)


async def test_disabled_mapping_never_invokes(moto: str, sqs: Any) -> None:
    paused = await make_queue(sqs, "paused")
    active = await make_queue(sqs, "active")
    await send(sqs, paused.url, ["p1", "p2", "p3"])
    await send(sqs, active.url, ["a1", "a2"])
    async with FakeLambda() as fake:
        config = mapping_yaml(
            moto,
            fake,
            paused,
            {"name": "active", "source": active.arn, "function": "active-fn"},
            enabled=False,
        )
        async with running(settings_from(config)) as app:
            await eventually(lambda: events_total(app, "deleted", mapping="active") == 2)
            statuses = {m.status.name: m.status.state.value for m in app.mappings}
    assert statuses == {"orders": "disabled", "active": "running"}
    assert {inv.function_name for inv in fake.invocations} == {"active-fn"}
    assert await depth(sqs, paused.url) == (3, 0)
    assert metric(app, "poller_mapping_up", mapping="orders") == 0


async def test_visibility_heartbeat_keeps_a_long_invocation_from_redelivery(
    moto: str, sqs: Any
) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=2)
    await send(sqs, queue.url, ["slow"])

    async with FakeLambda(SlowFunction(5)) as fake:  # 2.5 visibility timeouts
        async with running(settings_from(mapping_yaml(moto, fake, queue))) as app:
            await eventually(
                lambda: events_total(app, "deleted") == 1,
                timeout=20,
            )
        assert len(fake.invocations) == 1
        assert (
            fake.invocations[0].event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1"
        )
    assert await depth(sqs, queue.url) == (0, 0)


async def test_a_too_large_batch_is_split_until_it_fits(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    sent = [f"m{i}" for i in range(10)]
    await send(sqs, queue.url, sent)

    def small_only(event: Any, info: Invocation) -> Any:
        return Reply.too_large() if len(event["Records"]) > 3 else None

    async with FakeLambda(small_only) as fake:
        async with running(settings_from(mapping_yaml(moto, fake, queue))) as app:
            await eventually(lambda: events_total(app, "deleted") == 10)
    accepted = Counter(
        b for inv in fake.invocations if len(inv.event["Records"]) <= 3 for b in bodies(inv)
    )
    assert accepted == Counter(sent)


async def test_a_missing_queue_fails_its_mapping_only(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, ["x"])
    async with FakeLambda() as fake:
        missing = {
            "name": "ghost",
            "source": "arn:aws:sqs:us-east-1:123456789012:does-not-exist",
            "function": "ghost-fn",
        }
        config = mapping_yaml(moto, fake, queue, missing)
        async with running(settings_from(config)) as app:
            await eventually(lambda: events_total(app, "deleted") == 1)
            ghost = app.mappings[1].status
            await eventually(lambda: ghost.state.value == "failed")
            assert "does-not-exist" in (ghost.error or "")
            assert "ghost" in (ghost.error or "")
            assert metric(app, "poller_mapping_up", mapping="ghost") == 0
            assert metric(app, "poller_mapping_up", mapping="orders") == 1


async def test_a_missing_function_fails_its_mapping_until_it_appears(moto: str, sqs: Any) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=2, max_receive_count=1)
    await send(sqs, queue.url, ["x", "y"])
    async with FakeLambda(lambda event, info: Reply.not_found("orders-fn")) as fake:
        async with running(settings_from(mapping_yaml(moto, fake, queue))) as app:
            status = app.mappings[0].status
            await eventually(lambda: status.state.value == "failed")
            assert "orders-fn" in (status.error or "") and "orders" in (status.error or "")
            assert metric(app, "poller_mapping_up", mapping="orders") == 0
            fake.handler = lambda event, info: None  # the function is deployed
            await eventually(
                lambda: events_total(app, "deleted") == 2,
                timeout=90,
            )
            assert status.state.value == "running"
            assert metric(app, "poller_mapping_up", mapping="orders") == 1
    # Held with its visibility extended the whole time: nothing drifted to the DLQ.
    assert await depth(sqs, queue.dlq_url or "") == (0, 0)
