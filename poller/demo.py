"""`poller demo`: the whole daemon against an in-process AWS emulator, with live progress.

moto's server starts on a free loopback port, a queue (with a dead-letter queue) is created and
fed a steady trickle of orders, a few of them poison, and the daemon runs the packaged
`demo.yaml` with a Python handler that ships with poller. Nothing leaves this machine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import anyio

from poller.app import App
from poller.config import ConfigError, parse_config
from poller.logs import configure_logging

ACCOUNT = "123456789012"
REGION = "us-east-1"
QUEUE = "demo-orders"
SEND_PER_SECOND = 20
POISON_SHARE = 0.03

log = logging.getLogger("poller.demo")


def _start_emulator() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # the demo extra is missing
        raise RuntimeError(f"poller demo needs moto: pip install 'poller[demo]' ({exc})") from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


async def _create_queue(endpoint: str) -> str:
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", region_name=REGION, endpoint_url=endpoint) as sqs:
        dlq = await sqs.create_queue(QueueName=f"{QUEUE}-dlq")
        dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}-dlq"
        await sqs.create_queue(
            QueueName=QUEUE,
            Attributes={
                "VisibilityTimeout": "5",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}
                ),
            },
        )
        del dlq
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}"


async def _feed(endpoint: str, sent: list[int]) -> None:
    """Send a steady trickle of orders, a few of them poison, until cancelled."""
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", region_name=REGION, endpoint_url=endpoint) as sqs:
        url = (await sqs.get_queue_url(QueueName=QUEUE))["QueueUrl"]
        order = 0
        while True:
            entries = []
            for index in range(SEND_PER_SECOND // 4):
                order += 1
                body = {"orderId": order, "amount": random.randint(1, 500)}
                if random.random() < POISON_SHARE:
                    body["poison"] = True
                entries.append({"Id": str(index), "MessageBody": json.dumps(body)})
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            sent[0] += len(entries)
            await anyio.sleep(0.25)


def _value(app: App, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, {"mapping": "demo-orders", **labels})
    return float(value) if value is not None else 0.0


async def _show_progress(app: App, sent: list[int], out: TextIO) -> None:
    """One status line a second: what was sent, polled, invoked, failed, deleted, and the rate."""
    started = time.monotonic()
    last_deleted = 0.0
    interactive = out.isatty()
    while True:
        await anyio.sleep(1.0)
        deleted = _value(app, "poller_events_total", stage="deleted")
        line = (
            f"[{time.monotonic() - started:5.0f}s] sent {sent[0]:6d} · "
            f"polled {_value(app, 'poller_events_total', stage='polled'):6.0f} · "
            f"invoked {_value(app, 'poller_events_total', stage='invoked'):6.0f} · "
            f"failed {_value(app, 'poller_events_total', stage='failed'):4.0f} · "
            f"deleted {deleted:6.0f} · "
            f"{deleted - last_deleted:4.0f} msg/s · "
            f"in flight {_value(app, 'poller_concurrent_executions'):2.0f} · "
            f"state {app.mappings[0].status.state.value}"
        )
        last_deleted = deleted
        out.write(("\r" + line) if interactive else (line + "\n"))
        out.flush()


def _use_demo_credentials() -> None:
    # Everything the demo calls is the local emulator: dummy credentials, never the user's.
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_REGION": REGION}
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)


async def _main(duration: float | None, log_level: str, log_format: str | None) -> int:
    _use_demo_credentials()
    server, endpoint = _start_emulator()
    try:
        queue_arn = await _create_queue(endpoint)
        text = resources.files("poller").joinpath("demo.yaml").read_text()
        environ = {
            **os.environ,
            "POLLER_DEMO_ENDPOINT": endpoint,
            "POLLER_DEMO_QUEUE_ARN": queue_arn,
            "POLLER_DEMO_PORT": os.environ.get("POLLER_DEMO_PORT", "0"),
        }
        try:
            settings = parse_config(text, "demo.yaml", environ=environ)
        except ConfigError as error:
            for problem in error.problems:
                sys.stderr.write(problem.format() + "\n")
            return 2
        log_file = Path(tempfile.gettempdir()) / "poller-demo.log"
        configure_logging(log_level, log_format or "json", stream=log_file.open("a"))
        app = App(settings)
        app.build_targets()
        out = sys.stdout
        out.write(
            f"poller demo: moto at {endpoint}, queue {QUEUE}, handler poller.demo_handler:handle\n"
            f"daemon logs: {log_file}   (Ctrl-C to stop"
            + (f"; stopping after {duration:g}s" if duration else "")
            + ")\n"
        )
        sent = [0]
        code = 0
        async with anyio.create_task_group() as tg:

            async def run_app() -> None:
                nonlocal code
                code = await app.run()
                tg.cancel_scope.cancel()

            tg.start_soon(run_app)
            await app.started.wait()
            out.write(f"metrics and status: http://127.0.0.1:{app.server.port}/status\n")
            tg.start_soon(_feed, endpoint, sent)
            tg.start_soon(_show_progress, app, sent, out)
            if duration is not None:
                await anyio.sleep(duration)
                app.stop()
        out.write("\n")
        processed = _value(app, "poller_events_total", stage="deleted")
        out.write(f"poller demo: stopped; {processed:.0f} messages processed and deleted\n")
        return code
    finally:
        server.stop()


def run_demo(*, duration: float | None, log_level: str, log_format: str | None) -> int:
    """Entry point for `poller demo`; returns the exit code."""
    try:
        return anyio.run(_main, duration, log_level, log_format)
    except RuntimeError as exc:
        sys.stderr.write(f"poller demo: {exc}\n")
        return 1
