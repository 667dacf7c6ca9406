"""Whom poller's credentials resolve to: the `invokeIdentityArn` of Kinesis events."""

from __future__ import annotations

import logging

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe
from poller.config.arns import SourceArn

log = logging.getLogger("poller.app")

# GetCallerIdentity must not hold a Kinesis mapping back for long when STS is unreachable.
IDENTITY_TIMEOUT = 15.0


async def caller_identity(clients: AwsClients, source: SourceArn, *, warn: bool = True) -> str:
    """The IAM identity poller runs as, as Lambda puts it in events (an assumed role as the
    role); when STS cannot tell, the source account's root, with a WARNING if `warn`."""
    try:
        with anyio.fail_after(IDENTITY_TIMEOUT):
            sts = await clients.client("sts", retries=False, read_timeout=10)
            answer = await sts.get_caller_identity()
        return role_arn(str(answer["Arn"]))
    except AWS_ERRORS as exc:  # TimeoutError is an OSError
        fallback = f"arn:{source.partition}:iam::{source.account}:root"
        if warn:
            action = "sts:GetCallerIdentity"
            problem = describe(exc, what=action, permission=action)
            log.warning(
                "cannot tell which identity poller runs as (%s); Kinesis events carry "
                "invokeIdentityArn %s; set aws.invoke_identity_arn to choose it",
                problem.message,
                fallback,
            )
        return fallback


def role_arn(caller_arn: str) -> str:
    """An STS assumed-role ARN as the IAM role it stands for (what Lambda puts in events);
    any other caller ARN is returned as it is."""
    prefix, _, resource = caller_arn.partition(":assumed-role/")
    if not resource or ":sts::" not in prefix:
        return caller_arn
    role = resource.split("/", 1)[0]
    return f"{prefix.replace(':sts::', ':iam::')}:role/{role}"
