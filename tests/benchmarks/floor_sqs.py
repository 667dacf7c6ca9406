"""The floor loop: what a minimal hand-written aiobotocore program costs for what poller does
with an SQS mapping and a Lambda target, in its own process so its CPU is its own.

`python -m tests.benchmarks.floor_sqs <sqs endpoint> <queue url> <lambda endpoint> <function>
<messages> <concurrency>`: `concurrency` tasks each receive 10 → invoke the function with the
bodies → delete the batch, until `messages` were deleted. Prints one line of JSON: the wall and
CPU seconds from its first receive to its last delete. No filters, no retries of its own, no
metrics: the floor poller's per-message overhead is measured against.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def run(
    sqs_endpoint: str, url: str, lambda_endpoint: str, function: str, total: int, tasks: int
) -> dict[str, float]:
    session = get_session()
    config = AioConfig(max_pool_connections=100, retries={"mode": "standard"})
    done = 0
    async with (
        session.create_client(
            "sqs", region_name="us-east-1", endpoint_url=sqs_endpoint, config=config
        ) as sqs,
        session.create_client(
            "lambda", region_name="us-east-1", endpoint_url=lambda_endpoint, config=config
        ) as lam,
    ):

        async def worker() -> None:
            nonlocal done
            while done < total:
                answer = await sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = answer.get("Messages", [])
                if not messages:
                    continue
                event = {"Records": [{"body": m["Body"]} for m in messages]}
                await lam.invoke(FunctionName=function, Payload=json.dumps(event).encode())
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                done += len(messages)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


def main() -> None:
    sqs_endpoint, url, lambda_endpoint, function, total, tasks = sys.argv[1:7]
    figures = asyncio.run(run(sqs_endpoint, url, lambda_endpoint, function, int(total), int(tasks)))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
