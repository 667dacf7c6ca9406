"""Reloading the configuration (SIGHUP) while the daemon runs: mappings added start, removed
ones drain and leave /status and /metrics, changed ones restart with their new settings and
their checkpoints, unchanged ones are not touched, and a bad file changes nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from poller.wiring import load_settings
from tests.support.config import config_yaml
from tests.support.daemon import DaemonProcess, running
from tests.support.fake_lambda import FakeLambda, Invocation, Reply, invocations
from tests.support.leases import get_json, get_text, ops_port
from tests.support.queues import depth, make_queue, send
from tests.support.streams import make_stream, numbers, put_records
from tests.support.wait import eventually

pytestmark = pytest.mark.slow


def bodies(fake: FakeLambda, function: str) -> list[str]:
    return [r["body"] for inv in invocations(fake, function) for r in inv.event["Records"]]


async def http_get(port: int, path: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as answer,
    ):
        return await answer.text()


async def test_a_reload_adds_removes_and_changes_mappings_without_touching_the_others(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    # A drained mapping's long polls are cut short; SQS (moto too) may still hand a message
    # to a poll that was cut, which then stays hidden for one visibility timeout: 2 s here.
    queues = {
        name: await make_queue(sqs, name, visibility_timeout=30 if name == "steady" else 2)
        for name in ("steady", "old", "tune", "new")
    }
    in_flight = 0

    async def handler(event: Any, info: Invocation) -> Reply:
        nonlocal in_flight
        if info.function_name == "steady-fn":
            # Takes a while, so that batches of the untouched mapping are in flight while
            # the reload drains and restarts the others.
            in_flight += 1
            try:
                await asyncio.sleep(0.3)
            finally:
                in_flight -= 1
        return Reply()

    def mappings(*chosen: dict[str, Any]) -> list[dict[str, Any]]:
        steady = {
            "name": "steady",
            "source": queues["steady"].arn,
            "function": "steady-fn",
            "batch_size": 5,
        }
        return [steady, *chosen]

    old = {"name": "old", "source": queues["old"].arn, "function": "old-fn"}
    tune = {"name": "tune", "source": queues["tune"].arn, "function": "tune-fn", "batch_size": 10}
    tuned = {**tune, "batch_size": 3, "function": "tune-fn-2"}
    new = {"name": "new", "source": queues["new"].arn, "function": "new-fn"}
    path = tmp_path / "poller.yaml"
    async with FakeLambda(handler) as fake:

        def write(*chosen: dict[str, Any]) -> None:
            path.write_text(config_yaml(moto, mappings(*chosen), lambda_url=fake.endpoint_url))

        write(old, tune)
        async with running(load_settings(path), config_path=path) as app:
            steady_entry = app.mappings[0]
            everything = [f"s-{i}" for i in range(200)]
            await send(sqs, queues["steady"].url, everything)
            await send(sqs, queues["old"].url, [f"o-{i}" for i in range(5)])
            await send(sqs, queues["tune"].url, [f"t-{i}" for i in range(5)])
            await eventually(lambda: len(bodies(fake, "old-fn")) == 5)
            await eventually(lambda: len(bodies(fake, "tune-fn")) == 5)
            await eventually(lambda: in_flight > 0)

            write(tuned, new)
            assert await app.reload()
            assert in_flight > 0 or len(bodies(fake, "steady-fn")) < 200  # it ran throughout

            names = [entry.settings.name for entry in app.mappings]
            assert names == ["steady", "tune", "new"]
            assert app.mappings[0] is steady_entry  # untouched: the same runner, not a restart
            await send(sqs, queues["old"].url, [f"o-late-{i}" for i in range(5)])
            await send(sqs, queues["tune"].url, [f"t-late-{i}" for i in range(9)])
            await send(sqs, queues["new"].url, [f"n-{i}" for i in range(5)])
            await eventually(lambda: len(bodies(fake, "tune-fn-2")) == 9)
            await eventually(lambda: len(bodies(fake, "new-fn")) == 5)
            await eventually(lambda: len(bodies(fake, "steady-fn")) >= 200, timeout=60)

            async def steady_drained() -> bool:
                return await depth(sqs, queues["steady"].url) == (0, 0)

            await eventually(steady_drained, timeout=30)
            status = json.loads(await http_get(app.server.port, "/status"))
            metrics = await http_get(app.server.port, "/metrics")

            async def old_messages_wait() -> bool:
                # The removed mapping's late messages wait in its queue, none in flight.
                return await depth(sqs, queues["old"].url) == (5, 0)

            await eventually(old_messages_wait)

    delivered = Counter(bodies(fake, "steady-fn"))
    assert set(delivered) == set(everything)  # nothing lost on the untouched mapping
    assert [body for body, n in delivered.items() if n > 1] == []  # nothing twice
    assert all(len(inv.event["Records"]) <= 3 for inv in invocations(fake, "tune-fn-2"))
    assert bodies(fake, "old-fn") == [f"o-{i}" for i in range(5)]  # stopped: nothing after
    assert [m["name"] for m in status["mappings"]] == ["steady", "tune", "new"]
    assert [m["state"] for m in status["mappings"]] == ["running"] * 3
    assert 'mapping="old"' not in metrics
    assert 'mapping="new"' in metrics


async def test_a_file_that_does_not_validate_keeps_the_running_mappings(
    moto: str, sqs: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(sqs, "orders")
    path = tmp_path / "poller.yaml"
    async with FakeLambda() as fake:
        good = config_yaml(
            moto, [{"source": queue.arn, "function": "fn"}], lambda_url=fake.endpoint_url
        )
        path.write_text(good)
        async with running(load_settings(path), config_path=path) as app:
            before = list(app.mappings)
            path.write_text(good + "  - name: broken\n    batch_size: -3\n")
            with caplog.at_level(logging.ERROR, logger="poller.app"):
                assert not await app.reload()
            assert app.mappings == before
            await send(sqs, queue.url, ["still-here"])
            await fake.wait_for(1)
    refused = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refused) == 1
    # Every problem is named, with its place in the file.
    assert "mappings[1].source" in refused[0] and "mappings[1].batch_size" in refused[0]
    assert bodies(fake, "fn") == ["still-here"]


async def test_a_reload_that_removes_the_last_mapping_drains_it_and_keeps_serving(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "orders")
    path = tmp_path / "poller.yaml"
    async with FakeLambda() as fake:
        with_one = config_yaml(
            moto, [{"source": queue.arn, "function": "fn"}], lambda_url=fake.endpoint_url
        )
        path.write_text(with_one)
        async with running(load_settings(path), config_path=path) as app:
            await send(sqs, queue.url, ["before"])
            await fake.wait_for(1)
            path.write_text(with_one.replace("mappings:\n", "mappings: []\n").split("  - ")[0])
            assert await app.reload()
            assert app.mappings == []
            status = json.loads(await http_get(app.server.port, "/status"))
            assert status == {"mappings": []}
            metrics = await http_get(app.server.port, "/metrics")
            assert 'mapping="orders"' not in metrics
            assert "poller_mapping_up" in metrics  # the family is there, without the mapping
    assert bodies(fake, "fn") == ["before"]


async def test_a_changed_stream_mapping_restarts_from_its_checkpoints(
    moto: str, kinesis: Any, tmp_path: Path
) -> None:
    arn = await make_stream(kinesis, "clicks")
    path = tmp_path / "poller.yaml"
    checkpoints = {"backend": "sqlite", "path": str(tmp_path / "positions.db")}
    mapping = {
        "name": "clicks",
        "source": arn,
        "function": "clicks-fn",
        "starting_position": "TRIM_HORIZON",
        "batch_size": 10,
    }
    async with FakeLambda() as fake:

        def write(batch_size: int) -> None:
            path.write_text(
                config_yaml(
                    moto,
                    [{**mapping, "batch_size": batch_size}],
                    lambda_url=fake.endpoint_url,
                    checkpoints=checkpoints,
                )
            )

        write(10)
        async with running(load_settings(path), config_path=path) as app:
            await put_records(kinesis, arn, [("k", {"n": i}) for i in range(20)])
            await eventually(
                lambda: (
                    app.mappings[0].status.shards
                    and all(
                        s.checkpoint is not None for s in app.mappings[0].status.shards.values()
                    )
                )
            )
            await eventually(lambda: sum(len(i.event["Records"]) for i in fake.invocations) == 20)
            write(4)
            assert await app.reload()
            await put_records(kinesis, arn, [("k", {"n": i}) for i in range(20, 30)])
            await eventually(lambda: sum(len(i.event["Records"]) for i in fake.invocations) >= 30)
            delivered = [n for i in fake.invocations for n in numbers(i.event["Records"])]
            after = fake.invocations[-1].event["Records"]
    assert sorted(delivered) == list(range(30))  # the restart replayed nothing
    assert len(after) <= 4


async def test_sighup_starts_a_mapping_a_daemon_had_none_of_and_pauses_it_again(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "orders")
    path = tmp_path / "poller.yaml"
    async with FakeLambda() as fake:

        def write(enabled: bool, tuning: dict[str, Any] | None = None) -> None:
            path.write_text(
                config_yaml(
                    moto,
                    [{"source": queue.arn, "function": "fn", "enabled": enabled}],
                    lambda_url=fake.endpoint_url,
                    tuning=tuning,
                )
            )

        write(enabled=False)
        daemon = DaemonProcess(path, tmp_path / "daemon.log")
        daemon.start()
        try:
            await eventually(lambda: ops_port(daemon) is not None, timeout=30)
            port = ops_port(daemon)
            assert port is not None
            state = lambda: get_json(port, "/status")["mappings"][0]["state"]  # noqa: E731
            assert state() == "disabled"
            write(enabled=True)
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: state() == "running", timeout=30)
            await send(sqs, queue.url, ["first"])
            await fake.wait_for(1, timeout=30)
            write(enabled=False, tuning={"backlog_refresh_interval_seconds": 7})
            daemon.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: state() == "disabled", timeout=30)
            assert 'poller_mapping_state{mapping="orders",state="disabled"} 1.0' in get_text(
                port, "/metrics"
            )
        finally:
            code = await daemon.stop()
    logs = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    warnings = [line["msg"] for line in logs if line["level"] == "WARNING"]
    assert code == 0
    assert bodies(fake, "fn") == ["first"]
    assert any("tuning changed" in msg and "restart" in msg for msg in warnings), warnings


async def test_a_stream_mapping_added_to_a_queue_only_daemon_opens_the_store_the_new_file_names(
    moto: str, sqs: Any, kinesis: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await make_queue(sqs, "orders")
    arn = await make_stream(kinesis, "clicks")
    path = tmp_path / "poller.yaml"
    orders = {"source": queue.arn, "function": "orders-fn"}
    clicks = {
        "name": "clicks",
        "source": arn,
        "function": "clicks-fn",
        "starting_position": "TRIM_HORIZON",
    }
    async with FakeLambda() as fake:

        def write(store: Path, *mappings: dict[str, Any]) -> None:
            checkpoints = {"backend": "sqlite", "path": str(store)}
            path.write_text(
                config_yaml(
                    moto, list(mappings), lambda_url=fake.endpoint_url, checkpoints=checkpoints
                )
            )

        write(tmp_path / "old.db", orders)
        async with running(load_settings(path), config_path=path) as app:
            assert app.checkpoints is None  # no stream mapping: nothing to keep positions of
            # No store was open, so the new `checkpoints` section applies without a restart.
            write(tmp_path / "new.db", orders, clicks)
            with caplog.at_level(logging.WARNING, logger="poller.app"):
                assert await app.reload()
            await put_records(kinesis, arn, [("k", {"n": i}) for i in range(3)])
            await eventually(lambda: len(invocations(fake, "clicks-fn")) >= 1)
            clicks_status = app.mappings[1].status
            await eventually(
                lambda: any(s.checkpoint is not None for s in clicks_status.shards.values())
            )
    assert (tmp_path / "new.db").exists()
    assert not (tmp_path / "old.db").exists()
    assert not [r for r in caplog.records if "restart" in r.getMessage()]
    delivered = [n for i in invocations(fake, "clicks-fn") for n in numbers(i.event["Records"])]
    assert delivered == [0, 1, 2]


async def test_a_stop_during_a_reloads_drain_exits_1_when_that_drain_leaves_a_batch(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "slow")
    path = tmp_path / "poller.yaml"
    started = asyncio.Event()

    async def stuck(event: Any, info: Invocation) -> Reply:
        started.set()
        await asyncio.sleep(30)  # longer than the drain allows
        return Reply()

    async with FakeLambda(stuck) as fake:
        path.write_text(
            config_yaml(
                moto,
                [{"name": "slow", "source": queue.arn, "function": "slow-fn"}],
                lambda_url=fake.endpoint_url,
                shutdown_timeout=2,
            )
        )
        async with running(load_settings(path), config_path=path) as app:
            await send(sqs, queue.url, ["held"])
            await started.wait()
            entry = app.mappings[0]
            other = {"name": "other", "source": queue.arn, "function": "x", "enabled": False}
            path.write_text(config_yaml(moto, [other], lambda_url=fake.endpoint_url))
            async with anyio.create_task_group() as tg:
                tg.start_soon(app.reload)
                await eventually(lambda: entry.status.state.value == "stopping")
                app.stop()  # SIGTERM while the reload drains the removed mapping
    assert app.exit_code == 1  # type: ignore[attr-defined]
