"""A source or checkpoint store that cannot be reached shows in /metrics, so it can alert:
poller_mapping_state{state="degraded"} at 1, poller_source_errors_total counting every
failed attempt by operation, and both back to normal once it is reachable again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import anyio
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from poller.app import App
from poller.aws import calls
from poller.aws.clients import AwsClients
from poller.config.settings import AwsSettings
from poller.sources.sqs.source import LONG_POLL_SECONDS
from tests.support.config import config_yaml
from tests.support.daemon import metric, running, settings_from
from tests.support.fake_lambda import FakeLambda, Reply, event_records
from tests.support.ports import free_port
from tests.support.proxy import Proxy
from tests.support.queues import ACCOUNT, REGION, make_queue, send
from tests.support.streams import make_stream, put_records
from tests.support.wait import eventually

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: App) -> Samples:
    """Every sample of the daemon's GET /metrics, keyed by name and labels."""
    url = f"http://127.0.0.1:{app.server.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def state_of(samples: Samples, mapping: str) -> set[str]:
    """The states whose poller_mapping_state series is at 1."""
    return {
        dict(labels)["state"]
        for (name, labels), v in samples.items()
        if name == "poller_mapping_state" and dict(labels)["mapping"] == mapping and v == 1
    }


def errors(samples: Samples, mapping: str) -> dict[str, float]:
    """poller_source_errors_total of one mapping, by operation."""
    return {
        dict(labels)["operation"]: v
        for (name, labels), v in samples.items()
        if name == "poller_source_errors_total" and dict(labels)["mapping"] == mapping
    }


async def reached(app: App, state: str, *mappings: str) -> Samples:
    """The samples of the first scrape showing every one of `mappings` in `state`."""

    async def scraped() -> Samples | None:
        samples = await scrape(app)
        return samples if all(state_of(samples, m) == {state} for m in mappings) else None

    found: Samples = await eventually(scraped, timeout=40)
    return found


@pytest.fixture
async def proxy(moto: str) -> AsyncIterator[Proxy]:
    upstream = urlparse(moto)
    async with Proxy(upstream.hostname or "", upstream.port or 0) as made:
        yield made


async def test_an_unreachable_endpoint_shows_both_mappings_degraded_and_counts_their_errors(
    moto: str, sqs: Any, kinesis: Any, proxy: Proxy, state: Path
) -> None:
    queue = await make_queue(sqs, "orders")
    stream = await make_stream(kinesis, "events")
    async with FakeLambda() as fake:
        mappings = [
            {"name": "orders", "source": queue.arn, "function": "orders-fn"},
            {
                "name": "events",
                "source": stream,
                "function": "events-fn",
                "starting_position": "TRIM_HORIZON",
            },
        ]
        config = config_yaml(
            proxy.url, mappings, lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(config)) as app:
            await send(sqs, queue.url, ["before"])
            await put_records(kinesis, stream, [("k", {"n": 1})])
            await fake.wait_for(2)
            before = await scrape(app)
            for mapping in ("orders", "events"):
                assert state_of(before, mapping) == {"running"}
                assert set(errors(before, mapping).values()) == {0}, errors(before, mapping)
            assert set(errors(before, "orders")) == set(calls.OPERATIONS_BY_SOURCE["sqs"])
            assert set(errors(before, "events")) == set(calls.OPERATIONS_BY_SOURCE["kinesis"])

            await proxy.cut()

            during = await reached(app, "degraded", "orders", "events")
            for mapping in ("orders", "events"):
                # Still up (degraded is up), which is why the state needs its own alert.
                assert value(during, "poller_mapping_up", mapping=mapping) == 1
                assert value(during, "poller_mapping_state", mapping=mapping, state="running") == 0
            assert errors(during, "orders")["ReceiveMessage"] >= 1
            reads = errors(during, "events")
            assert reads["GetRecords"] + reads["GetShardIterator"] >= 1
            assert reads["checkpoint"] == 0  # the SQLite file was never out of reach

            await proxy.restore()

            after = await reached(app, "running", "orders", "events")
            for mapping in ("orders", "events"):
                assert value(after, "poller_mapping_state", mapping=mapping, state="degraded") == 0
                # A counter: what failed stays counted.
                for operation, count in errors(during, mapping).items():
                    assert errors(after, mapping)[operation] >= count


@pytest.mark.timeout(180)  # the long poll's deadline is 30 s; ~55 s on an idle machine
async def test_a_source_that_never_answers_degrades_both_mappings_within_their_deadlines(
    moto: str, sqs: Any, kinesis: Any, proxy: Proxy, state: Path
) -> None:
    """A blackhole (connections taken, nothing answered): each call's own deadline, not the
    SDK's 60 s read timeout, ends the wait, counts the call failed and degrades the mapping."""
    queue = await make_queue(sqs, "orders")
    stream = await make_stream(kinesis, "events")
    async with FakeLambda() as fake:
        mappings = [
            {"name": "orders", "source": queue.arn, "function": "orders-fn"},
            {
                "name": "events",
                "source": stream,
                "function": "events-fn",
                "starting_position": "TRIM_HORIZON",
            },
        ]
        config = config_yaml(
            proxy.url, mappings, lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(config)) as app:
            await send(sqs, queue.url, ["before"])
            await put_records(kinesis, stream, [("k", {"n": 1})])
            await fake.wait_for(2)
            assert state_of(await scrape(app), "events") == {"running"}

            proxy.blackhole()
            started = anyio.current_time()

            async def degraded(mapping: str) -> Samples | None:
                samples = await scrape(app)
                return samples if state_of(samples, mapping) == {"degraded"} else None

            # A read's deadline is 10 s; a long poll's its 20 s wait plus 10 s.
            events = await eventually(lambda: degraded("events"), timeout=calls.CALL_SECONDS + 15)
            reads = errors(events, "events")
            assert reads["GetRecords"] + reads["GetShardIterator"] >= 1, reads
            limit = LONG_POLL_SECONDS + calls.LONG_POLL_MARGIN + 15
            orders = await eventually(lambda: degraded("orders"), timeout=limit)
            assert errors(orders, "orders")["ReceiveMessage"] >= 1, errors(orders, "orders")
            assert anyio.current_time() - started < LONG_POLL_SECONDS + 60  # not 4 x 60 s

            await proxy.restore()
            await reached(app, "running", "orders", "events")


async def test_an_unreachable_lease_table_counts_checkpoint_errors(
    moto: str, kinesis: Any, proxy: Proxy
) -> None:
    stream = await make_stream(kinesis, "events")
    async with FakeLambda() as fake:
        config = config_yaml(
            moto,
            [{"source": stream, "function": "events-fn", "starting_position": "TRIM_HORIZON"}],
            lambda_url=fake.endpoint_url,
            dynamodb_url=proxy.url,  # only the lease table is behind the proxy
            checkpoints={"backend": "dynamodb", "table": "leases", "lease_duration_seconds": 2},
            tuning={"shard_discovery_interval_seconds": 1},
        )
        async with running(settings_from(config)) as app:
            await put_records(kinesis, stream, [("k", {"n": 1})])
            await fake.wait_for(1)
            assert (
                metric(app, "poller_source_errors_total", mapping="orders", operation="checkpoint")
                == 0
            )

            await proxy.cut()

            samples = await reached(app, "degraded", "orders")
            assert errors(samples, "orders")["checkpoint"] >= 1
            assert errors(samples, "orders")["GetRecords"] == 0  # the stream itself is reachable
            await proxy.restore()
            await reached(app, "running", "orders")


async def test_on_failure_sends_count_as_delivery_errors_not_source_errors(
    moto: str, kinesis: Any, state: Path
) -> None:
    stream = await make_stream(kinesis, "events")
    missing = f"arn:aws:sqs:{REGION}:{ACCOUNT}:no-such-queue"  # GetQueueUrl fails for it
    async with FakeLambda(lambda event, info: Reply.error()) as fake:
        mapping = {
            "source": stream,
            "function": "events-fn",
            "starting_position": "TRIM_HORIZON",
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": missing}},
        }
        config = config_yaml(
            moto, [mapping], lambda_url=fake.endpoint_url, checkpoints={"path": str(state)}
        )
        async with running(settings_from(config)) as app:
            await put_records(kinesis, stream, [("k", {"n": 1})])
            await eventually(
                lambda: (
                    metric(app, "poller_on_failure_delivery_errors_total", mapping="orders") >= 2
                ),
                timeout=30,
            )
            samples = await scrape(app)
    assert len(event_records(fake)) >= 1
    assert "GetQueueUrl" not in errors(samples, "orders")
    assert set(errors(samples, "orders").values()) == {0}


class FlakySqs:
    """An SQS endpoint (JSON protocol) whose ReceiveMessage answers 500 `failures` times, then
    an empty receive: a failure the SDK retries by itself, which the caller never sees."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        self.port = free_port()

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests <= self.failures:
            body = {"__type": "com.amazonaws.sqs#InternalError", "message": "try again"}
            return web.json_response(body, status=500, content_type="application/x-amz-json-1.0")
        return web.Response(body=json.dumps({}), content_type="application/x-amz-json-1.0")

    async def __aenter__(self) -> FlakySqs:
        app = web.Application()
        app.router.add_post("/", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()


async def test_every_failed_attempt_counts_also_those_the_sdk_retried_by_itself() -> None:
    counted: list[str] = []
    async with FlakySqs(failures=1) as flaky:
        settings = AwsSettings(region=REGION, endpoint_url=f"http://127.0.0.1:{flaky.port}")
        async with AwsClients(settings) as clients:
            sqs = await clients.client("sqs")
            with calls.charged_to(counted.append):
                answer: Mapping[str, Any] = await sqs.receive_message(
                    QueueUrl=f"http://127.0.0.1:{flaky.port}/{ACCOUNT}/orders", WaitTimeSeconds=0
                )
    assert flaky.requests == 2 and answer.get("Messages", []) == []
    assert counted == ["ReceiveMessage"]


async def test_refused_lease_writes_are_answers_and_a_failing_table_call_a_checkpoint_error(
    moto: str, dynamodb: Any
) -> None:
    await dynamodb.create_table(
        TableName="leases",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    held = {"ConditionExpression": "attribute_not_exists(pk)"}
    counted: list[str] = []
    async with AwsClients(AwsSettings(region=REGION, endpoint_url=moto)) as clients:
        table = await clients.client("dynamodb")
        await table.put_item(TableName="leases", Item={"pk": {"S": "shard-1"}})
        with calls.charged_to(counted.append):
            with pytest.raises(table.exceptions.ConditionalCheckFailedException):
                await table.put_item(TableName="leases", Item={"pk": {"S": "shard-1"}}, **held)
            with pytest.raises(table.exceptions.TransactionCanceledException):
                put = {"TableName": "leases", "Item": {"pk": {"S": "shard-1"}}, **held}
                await table.transact_write_items(TransactItems=[{"Put": put}])
            assert counted == []
            with pytest.raises(table.exceptions.ResourceNotFoundException):
                await table.get_item(TableName="no-such-table", Key={"pk": {"S": "shard-1"}})
    assert counted == ["checkpoint"]


async def test_a_source_resetting_every_receive_degrades_on_the_first_failed_attempt(
    moto: str, sqs: Any
) -> None:
    """poller's receive loop retries ReceiveMessage itself: the SDK's own retries would repeat
    the call (a long poll each time) before the failure showed, and the mapping stayed
    `running` meanwhile."""
    from tests.chaos.proxy import FaultProxy, Mode

    # Visibility 0: a message taken by a receive whose answer was cut is visible again at
    # once, so every receive has an answer to cut.
    queue = await make_queue(sqs, "orders", visibility_timeout=0)
    upstream = urlparse(moto)
    async with (
        FakeLambda() as fake,
        FaultProxy(upstream.hostname or "", upstream.port or 0) as proxy,
    ):
        config = config_yaml(
            proxy.url,
            [{"source": queue.arn, "function": "orders-fn"}],
            lambda_url=fake.endpoint_url,
        )
        async with running(settings_from(config)) as app:
            status = app.mappings[0].status
            await eventually(lambda: status.state.value == "running")
            await proxy.set(Mode.RESET)
            await send(sqs, queue.url, ["cut"])
            # Sampled often: the first `degraded` is what counts (a receive that got through
            # before the switch may invoke, succeed and show `running` again for a while).
            failed_attempts: list[float] = []
            await eventually(lambda: status.state.value == "degraded", timeout=30, interval=0.01)
            failed_attempts.append(
                metric(
                    app, "poller_source_errors_total", mapping="orders", operation="ReceiveMessage"
                )
            )
            await proxy.set(Mode.PASS)
            await eventually(lambda: status.state.value == "running", timeout=30)
    # About one failed attempt per receiver; with the SDK's retries no failure could surface
    # before one receiver alone had made its 4 attempts.
    assert 1 <= failed_attempts[0] < 4, failed_attempts
