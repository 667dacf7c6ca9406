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
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from poller.app import App
from poller.config.reader import ConfigError
from poller.demo.install import install_hint
from poller.ops.logs import configure_logging
from poller.wiring import parse_settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_kinesis import KinesisClient
    from types_aiobotocore_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

ACCOUNT = "123456789012"
REGION = "us-east-1"
ORDERS = "demo-orders"  # python target, with a DLQ and a few poison messages
INVOICES = "demo-invoices"  # runtime target: a Lambda package behind the Runtime API
STREAM = "demo-clicks"  # Kinesis, two shards
TABLE = "demo-accounts"  # DynamoDB table with a NEW_AND_OLD_IMAGES stream
SEND_PER_SECOND = 20
POISON_SHARE = 0.03
ORDERS_VISIBILITY_TIMEOUT = 5
ORDERS_MAX_RECEIVES = 3

# What each mapping of demo.yaml shows, by its name there.
SHOWS = {
    ORDERS: "SQS → python handler, reporting the poison orders failed (partial batch response)",
    INVOICES: "SQS → runtime target: a Lambda package through awslambdaric",
    STREAM: "Kinesis, 2 shards → python handler",
    TABLE: "DynamoDB Streams → python handler",
}
LEGEND = "\n".join(
    (
        "Each second: the records sent so far, then per mapping the records done (deleted from",
        "its queue, or invoked from its stream), the rate, and `N failed`: records a handler",
        "reported failed, or whose invocation failed, counted at each attempt. These are the",
        f"poison orders, {POISON_SHARE:.0%} of {ORDERS} on purpose: the queue shows each again "
        f"after its {ORDERS_VISIBILITY_TIMEOUT} s",
        f"visibility timeout and moves it to {ORDERS}-dlq after {ORDERS_MAX_RECEIVES} receives,",
        f"so each counts up to {ORDERS_MAX_RECEIVES} times.",
        "",
    )
)

log = logging.getLogger("poller.demo")


def _start_emulator() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # the demo extra is missing
        raise RuntimeError(
            f"needs moto, which the demo extra installs: {install_hint()} ({exc})"
        ) from exc
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.ERROR)
    # The emulator's first requests come before the daemon's logging is set up; finding no
    # handler then, werkzeug would add one of its own writing to the terminal, where an
    # emulator error would break into the progress line. Its records go to the log file.
    werkzeug.addHandler(logging.NullHandler())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _arn(queue: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"


async def _create_queues(sqs: SQSClient) -> None:
    await sqs.create_queue(QueueName=f"{ORDERS}-dlq")
    redrive = {
        "deadLetterTargetArn": _arn(f"{ORDERS}-dlq"),
        "maxReceiveCount": str(ORDERS_MAX_RECEIVES),
    }
    await sqs.create_queue(
        QueueName=ORDERS,
        Attributes={
            "VisibilityTimeout": str(ORDERS_VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    await sqs.create_queue(QueueName=INVOICES, Attributes={"VisibilityTimeout": "30"})


async def _create_stream_and_table(kinesis: KinesisClient, dynamodb: DynamoDBClient) -> str:
    """The Kinesis stream and the DynamoDB table; returns the table's stream ARN."""
    await kinesis.create_stream(StreamName=STREAM, ShardCount=2)
    table = await dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return str(table["TableDescription"]["LatestStreamArn"])


async def _feed_stream(kinesis: KinesisClient, per_second: int, sent: list[int]) -> None:
    """Put click events on the stream, spread over partition keys, until cancelled."""
    number = 0
    while True:
        records: list[PutRecordsRequestEntryTypeDef] = []
        for _ in range(max(1, per_second // 4)):
            number += 1
            user = f"user-{random.randint(1, 50)}"
            click = {"click": number, "user": user}
            records.append({"Data": json.dumps(click).encode(), "PartitionKey": user})
        await kinesis.put_records(StreamName=STREAM, Records=records)
        sent[0] += len(records)
        await anyio.sleep(0.25)


async def _feed_table(dynamodb: DynamoDBClient, per_second: int, sent: list[int]) -> None:
    """Insert and update accounts (each write is one stream record) until cancelled."""
    number = 0
    while True:
        for _ in range(max(1, per_second // 4)):
            number += 1
            account = str(random.randint(1, 40))
            await dynamodb.put_item(
                TableName=TABLE,
                Item={"id": {"S": account}, "balance": {"N": str(random.randint(0, 10_000))}},
            )
            sent[0] += 1
        await anyio.sleep(0.25)


async def _feed(
    sqs: SQSClient, queue: str, per_second: int, poison: float, sent: list[int]
) -> None:
    """Send a steady trickle of orders, a share of them poison, until cancelled."""
    url = (await sqs.get_queue_url(QueueName=queue))["QueueUrl"]
    number = 0
    while True:
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for index in range(max(1, per_second // 4)):
            number += 1
            body: dict[str, Any] = {"id": number, "amount": random.randint(1, 500)}
            if random.random() < poison:
                body["poison"] = True
            entries.append({"Id": str(index), "MessageBody": json.dumps(body)})
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        sent[0] += len(entries)
        await anyio.sleep(0.25)


def _value(app: App, mapping: str, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, {"mapping": mapping, **labels})
    return float(value) if value is not None else 0.0


def _done(app: App, mapping: str) -> float:
    """Records finished: deleted from a queue, or invoked from a stream."""
    entry = next(m for m in app.mappings if m.settings.name == mapping)
    stage = "invoked" if entry.settings.source_arn.is_stream else "deleted"
    return _value(app, mapping, "poller_events_total", stage=stage)


async def _show_progress(app: App, sent: list[int], out: TextIO) -> None:
    """One status line a second: sent, and per mapping deleted and the rate, then failures."""
    started = time.monotonic()
    mappings = [m.settings.name for m in app.mappings]
    last = dict.fromkeys(mappings, 0.0)
    interactive = out.isatty()
    while True:
        await anyio.sleep(1.0)
        parts = [f"[{time.monotonic() - started:4.0f}s] sent {sent[0]:5d}"]
        for entry in app.mappings:
            name = entry.settings.name
            deleted = _done(app, name)
            failed = _value(app, name, "poller_events_total", stage="failed")
            part = f"{name} {deleted:5.0f} ({deleted - last[name]:3.0f}/s"
            part += f", {failed:.0f} failed)" if failed else ")"
            if entry.status.state.value != "running":
                part += f" {entry.status.state.value}"
            parts.append(part)
            last[name] = deleted
        line = " · ".join(parts)
        out.write(("\r" + line) if interactive else (line + "\n"))
        out.flush()


def header(names: Sequence[str], endpoint: str, log_file: Path, duration: float | None) -> str:
    """What the demo prints before it starts: each mapping by its name, then the legend of the
    progress lines."""
    lines = [f"poller demo: moto at {endpoint}"]
    lines += [f"  {name}: {SHOWS.get(name, '')}".rstrip() for name in names]
    stop = f"; stopping after {duration:g}s" if duration else ""
    lines.append(f"daemon and function logs: {log_file}   (Ctrl-C to stop{stop})")
    return "\n".join(lines) + "\n" + LEGEND


def _use_demo_credentials() -> None:
    # Everything the demo calls is the local emulator: dummy credentials, never the user's.
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_REGION": REGION}
    )
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)


async def _main(duration: float | None, log_level: str, log_format: str | None) -> int:
    from aiobotocore.session import get_session

    _use_demo_credentials()
    server, endpoint = _start_emulator()
    out = sys.stdout
    log_file = Path(tempfile.gettempdir()) / "poller-demo.log"
    log_stream = log_file.open("a")
    state_dir = tempfile.TemporaryDirectory(prefix="poller-demo-")
    session = get_session()
    try:
        text = resources.files("poller.demo").joinpath("demo.yaml").read_text()
        async with (
            session.create_client("sqs", region_name=REGION, endpoint_url=endpoint) as sqs,
            session.create_client("kinesis", region_name=REGION, endpoint_url=endpoint) as kinesis,
            session.create_client("dynamodb", region_name=REGION, endpoint_url=endpoint) as ddb,
        ):
            await _create_queues(sqs)
            table_stream = await _create_stream_and_table(kinesis, ddb)
            return await _run(
                duration, out, log_stream, log_file, log_level, log_format, text,
                {
                    "POLLER_DEMO_ENDPOINT": endpoint,
                    "POLLER_DEMO_QUEUE_ARN": _arn(ORDERS),
                    "POLLER_DEMO_INVOICES_ARN": _arn(INVOICES),
                    "POLLER_DEMO_STREAM_ARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{STREAM}",
                    "POLLER_DEMO_TABLE_STREAM_ARN": table_stream,
                    "POLLER_DEMO_STATE": str(Path(state_dir.name) / "checkpoints.db"),
                    "POLLER_DEMO_PORT": os.environ.get("POLLER_DEMO_PORT", "0"),
                },
                (sqs, kinesis, ddb),
            )  # fmt: skip
    finally:
        sys.stdout = out
        log_stream.close()
        state_dir.cleanup()
        server.stop()


async def _run(
    duration: float | None,
    out: TextIO,
    log_stream: TextIO,
    log_file: Path,
    log_level: str,
    log_format: str | None,
    text: str,
    variables: dict[str, str],
    clients: tuple[SQSClient, KinesisClient, DynamoDBClient],
) -> int:
    """Load demo.yaml with the emulator's names, run the daemon and the feeders together."""
    sqs, kinesis, ddb = clients
    with resources.as_file(resources.files("poller.demo") / "function") as function_dir:
        environ = {**os.environ, **variables, "POLLER_DEMO_FUNCTION": str(function_dir)}
        try:
            settings = parse_settings(text, "demo.yaml", environ=environ)
        except ConfigError as error:
            for problem in error.problems:
                sys.stderr.write(problem.format() + "\n")
            return 2
        # The daemon's logs and what the functions print go to the log file; the
        # terminal keeps the progress line.
        configure_logging(log_level, log_format or "json", stream=log_stream)
        sys.stdout = log_stream
        app = App(settings)
        app.build_targets()
        names = [mapping.name for mapping in settings.mappings]
        out.write(header(names, variables["POLLER_DEMO_ENDPOINT"], log_file, duration))
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
            tg.start_soon(_feed, sqs, ORDERS, SEND_PER_SECOND, POISON_SHARE, sent)
            tg.start_soon(_feed, sqs, INVOICES, SEND_PER_SECOND // 2, 0.0, sent)
            tg.start_soon(_feed_stream, kinesis, SEND_PER_SECOND, sent)
            tg.start_soon(_feed_table, ddb, SEND_PER_SECOND // 4, sent)
            tg.start_soon(_show_progress, app, sent, out)
            if duration is not None:
                await anyio.sleep(duration)
                app.stop()
    out.write("\n")
    processed = sum(_done(app, m.settings.name) for m in app.mappings)
    out.write(f"poller demo: stopped; {processed:.0f} messages processed\n")
    return code


def run_demo(*, duration: float | None, log_level: str, log_format: str | None) -> int:
    """Entry point for `poller demo`; returns the exit code."""
    try:
        return anyio.run(_main, duration, log_level, log_format)
    except RuntimeError as exc:
        sys.stderr.write(f"poller demo: {exc}\n")
        return 1
