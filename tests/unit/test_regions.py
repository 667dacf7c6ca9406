"""Which region each AWS client is made for: the ARN's for what has one, `aws.region` else."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from aiohttp import web

from poller.aws.clients import AwsClients
from poller.config.settings import AwsSettings
from poller.engine.destinations import build_destination
from poller.wiring import parse_settings, target_for

ACCOUNT = "123456789012"
NOWHERE = "http://127.0.0.1:1"  # no call is made: clients connect on first request


async def test_clients_are_cached_per_service_and_region() -> None:
    async with AwsClients(AwsSettings(region="us-east-1", endpoint_url=NOWHERE)) as clients:
        default = await clients.client("sqs")
        assert default.meta.region_name == "us-east-1"
        assert await clients.client("sqs", region="us-east-1") is default
        other = await clients.client("sqs", region="eu-west-1")
        assert other.meta.region_name == "eu-west-1" and other is not default
        assert await clients.client("sqs", region="eu-west-1") is other
        assert (await clients.client("sns", region="eu-west-1")).meta.region_name == "eu-west-1"


async def test_first_callers_racing_for_one_client_share_the_one_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Credentials from a container credentials endpoint (ours, on loopback), as on ECS or EKS:
    # creating a client then waits on the network, which is where first callers interleave.
    async def credentials(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response(
            {
                "AccessKeyId": "AKID",
                "SecretAccessKey": "secret",
                "Token": "t",
                "Expiration": expires,
            }
        )

    app = web.Application()
    app.router.add_get("/creds", credentials)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/creds")
    got: list[object] = []
    try:
        async with AwsClients(AwsSettings(region="us-east-1", endpoint_url=NOWHERE)) as clients:

            async def first_call() -> None:
                got.append(await clients.client("lambda", retries=False, read_timeout=900))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(first_call)
    finally:
        await runner.cleanup()
    assert len(got) == 5 and len({id(client) for client in got}) == 1


def _target_region(function: str) -> tuple[str, str]:
    """(the function ARN, the region its Invoke goes to) for a mapping of a queue in eu-west-1
    under aws.region us-east-1."""
    settings = parse_settings(
        textwrap.dedent(
            f"""\
            aws: {{region: us-east-1, endpoint_url: "{NOWHERE}"}}
            mappings:
              - name: orders
                source: arn:aws:sqs:eu-west-1:{ACCOUNT}:orders
                target: {{type: lambda, function: "{function}"}}
            """
        ),
        "test.yaml",
        environ={},
    )
    clients = AwsClients(settings.aws)
    target = target_for(settings.mappings[0], clients, settings.tuning)
    return target.function_arn, target.function_arn.split(":")[3]


def test_a_function_given_by_arn_is_invoked_in_its_arns_region() -> None:
    arn = f"arn:aws:lambda:ap-southeast-2:{ACCOUNT}:function:orders:live"
    assert _target_region(arn) == (arn, "ap-southeast-2")


def test_a_function_given_by_name_is_invoked_in_the_default_region() -> None:
    expected = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"
    assert _target_region("orders") == (expected, "us-east-1")
    assert _target_region(f"{ACCOUNT}:function:orders") == (expected, "us-east-1")


async def test_destinations_are_reached_in_their_arns_region() -> None:
    async with AwsClients(AwsSettings(region="us-east-1", endpoint_url=NOWHERE)) as clients:
        for arn, region in (
            (f"arn:aws:sqs:eu-west-1:{ACCOUNT}:failed", "eu-west-1"),
            (f"arn:aws:sns:ap-southeast-2:{ACCOUNT}:failed", "ap-southeast-2"),
            ("arn:aws:s3:::failed-bucket", "us-east-1"),  # a bucket ARN names no region
        ):
            destination = build_destination(arn, clients)
            client = await destination._client()
            assert client.meta.region_name == region, arn
