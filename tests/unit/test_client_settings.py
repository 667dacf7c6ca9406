"""What every client sends: poller's fixed User-Agent (botocore's own is rebuilt per request)."""

from __future__ import annotations

from aiohttp import web

from poller import __version__
from poller.aws.clients import USER_AGENT, AwsClients
from poller.config.settings import AwsSettings
from tests.support.ports import free_port


async def test_every_request_carries_poller_s_user_agent() -> None:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.json_response({}, content_type="application/x-amz-json-1.0")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        async with AwsClients(AwsSettings(endpoint_url=endpoint)) as clients:
            sqs = await clients.client("sqs")
            for _ in range(2):
                await sqs.receive_message(QueueUrl=f"{endpoint}/123456789012/q")
            kinesis = await clients.client("kinesis")
            await kinesis.list_shards(StreamName="s")
    finally:
        await runner.cleanup()
    assert len(seen) == 3 and len(set(seen)) == 1
    assert seen[0].startswith(f"{USER_AGENT} botocore/")
    assert USER_AGENT.startswith(f"poller/{__version__} aiobotocore/")
