"""Turn AWS SDK exceptions into one line a user can act on (what is wrong, what to do)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

_MISSING = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "KMS.AccessDeniedException",
}
# The one table of AWS throttle codes, whatever the service: SQS, Kinesis, DynamoDB Streams,
# the lease table, STS, and Lambda's Invoke (EC2ThrottledException: EC2 throttled the
# function's network set-up, which passes like any throttle).
THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "EC2ThrottledException",
    }
)


@dataclass(frozen=True, slots=True)
class AwsProblem:
    """A classified AWS failure. `fatal` problems need the user to act; others pass by retrying."""

    message: str
    fatal: bool
    throttled: bool = False


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_throttle(exc: BaseException) -> bool:
    """Whether `exc` is AWS saying "slow down" (any service)."""
    return error_code(exc) in THROTTLE_CODES


def describe(exc: BaseException, *, what: str, permission: str) -> AwsProblem:
    """Explain `exc` raised while doing `what` (e.g. "reading queue orders") for the user."""
    code = error_code(exc)
    if code in _MISSING:
        return AwsProblem(
            f"{what}: it does not exist ({code}); check the ARN, the region and aws.endpoint_url",
            fatal=True,
        )
    if code in _DENIED:
        return AwsProblem(
            f"{what}: access denied ({code}); grant {permission} to poller's credentials",
            fatal=True,
        )
    if code in THROTTLE_CODES:
        return AwsProblem(f"{what}: throttled by AWS ({code}); backing off", False, True)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsProblem(
            f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or attach a role",
            fatal=True,
        )
    if isinstance(exc, NoRegionError):
        return AwsProblem(f"{what}: no region; set aws.region or AWS_REGION", fatal=True)
    if isinstance(exc, EndpointConnectionError):
        return AwsProblem(
            f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'the endpoint')}; "
            "check aws.endpoint_url and the network",
            fatal=False,
        )
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return AwsProblem(f"{what}: {code}: {message}".rstrip(": "), fatal=False)
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return AwsProblem(f"{what}: {type(exc).__name__}: {exc}", fatal=False)
    return AwsProblem(f"{what}: unexpected {type(exc).__name__}: {exc}", fatal=False)


# Exceptions that an AWS call may raise and that are the environment's doing, not a bug.
AWS_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    OSError,
    TimeoutError,
    aiohttp.ClientError,
)
