"""The `lambda` target: AWS's Invoke API (also LocalStack or the runtime interface emulator).

SDK retries are off for this client (every attempt counts once in the metrics), so each
throttle, 5xx or dropped connection reaches `invoke` and is classified here; the engine decides
what to retry.
"""

from __future__ import annotations

import json
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from poller.aws.clients import AwsClients
from poller.aws.errors import THROTTLE_CODES
from poller.config.settings import LambdaTargetSettings
from poller.targets.base import AcloseOnExit, InvocationRequest, InvokeResult, Outcome
from poller.targets.http import parse_retry_after

if TYPE_CHECKING:
    from types_aiobotocore_lambda import LambdaClient
    from types_aiobotocore_lambda.type_defs import (
        InvocationRequestTypeDef,
        InvocationResponseTypeDef,
    )

# As long as Lambda lets a function run (15 minutes): a read timeout must never cut a slow
# function short.
READ_TIMEOUT_SECONDS = 900

_TOO_LARGE_CODES = frozenset(
    {"RequestTooLargeException", "SerializedRequestEntityTooLargeException"}
)
_TIMEOUT_MESSAGE = re.compile(r"Task timed out after")

# The trace header of the Invoke in progress in this task. The Invoke model has no member for
# `X-Amzn-Trace-Id`, so a `before-call` handler on the (shared) client adds it from here; being
# a contextvar, concurrent invocations in other tasks each see their own value.
_trace_header: ContextVar[str | None] = ContextVar("poller_lambda_trace_header", default=None)
_HANDLER_ID = "poller-x-amzn-trace-id"


def _add_trace_header(params: dict[str, Any], **_: Any) -> None:
    """botocore `before-call.lambda.Invoke` handler: set X-Amzn-Trace-Id before signing."""
    value = _trace_header.get()
    if value:
        params["headers"]["X-Amzn-Trace-Id"] = value


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def function_region(function: str) -> str | None:
    """The region of a function given by its full ARN; None for a name or a partial ARN."""
    parts = function.split(":")
    return parts[3] if function.startswith("arn:") and len(parts) >= 7 else None


def function_arn(function: str, qualifier: str | None, region: str, account: str) -> str:
    """The full ARN for a name, `name:alias`, partial ARN or ARN, plus `:qualifier` if set."""
    if function.startswith("arn:"):
        arn = function
    elif ":function:" in function:  # partial ARN: 123456789012:function:name[:alias]
        arn = f"arn:{_partition(region)}:lambda:{region}:{function}"
    else:
        arn = f"arn:{_partition(region)}:lambda:{region}:{account}:function:{function}"
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME has 7 parts; an 8th is already a qualifier.
    if qualifier and len(arn.split(":")) == 7:
        arn = f"{arn}:{qualifier}"
    return arn


def _is_timeout(payload: bytes) -> bool:
    """Whether a function error payload is Lambda's timeout report rather than a handler error."""
    try:
        error = json.loads(payload)
    except ValueError:
        return False
    if not isinstance(error, dict):
        return False
    message = error.get("errorMessage")
    return error.get("errorType") == "Sandbox.Timedout" or (
        isinstance(message, str) and _TIMEOUT_MESSAGE.search(message) is not None
    )


class LambdaTarget(AcloseOnExit):
    """Invokes a Lambda function synchronously (`RequestResponse`) and classifies the answer.

    A function given by its full ARN is invoked in the ARN's region; one given by name (or a
    partial ARN) in the default region (`aws.region`), in `account` unless the name says."""

    def __init__(
        self, settings: LambdaTargetSettings, *, clients: AwsClients, account: str
    ) -> None:
        self._function = settings.function
        self._qualifier = settings.qualifier
        self._clients = clients
        self._region = function_region(settings.function) or clients.region
        self._arn = function_arn(settings.function, settings.qualifier, self._region, account)
        self._client: LambdaClient | None = None
        # Concurrent first invocations would each create a client (and its connection pool)
        # across the await; the first one creates it, the others wait for it.
        self._client_lock = anyio.Lock()

    @property
    def function_arn(self) -> str:
        """The function's full ARN, with the alias or qualifier when one is configured."""
        return self._arn

    @property
    def description(self) -> str:
        """`lambda:<function>[:<qualifier>]`, as configured."""
        suffix = f":{self._qualifier}" if self._qualifier else ""
        return f"lambda:{self._function}{suffix}"

    async def _lambda(self) -> LambdaClient:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                client = await self._clients.client(
                    "lambda",
                    region=self._region,
                    retries=False,
                    read_timeout=READ_TIMEOUT_SECONDS,
                )
                # unique_id makes this idempotent: several targets share one cached client.
                client.meta.events.register(
                    "before-call.lambda.Invoke", _add_trace_header, unique_id=_HANDLER_ID
                )
                self._client = client
            return self._client

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        """Invoke once; never raises for anything Lambda or the network did."""
        params: InvocationRequestTypeDef = {
            "FunctionName": self._function,
            "InvocationType": "RequestResponse",
            "Payload": request.payload,
        }
        if self._qualifier:
            params["Qualifier"] = self._qualifier
        token = _trace_header.set(request.trace_header)
        try:
            client = await self._lambda()
            response = await client.invoke(**params)
            async with response["Payload"] as stream:
                payload: bytes = await stream.read()
        except ClientError as exc:
            return self._client_error(exc, len(request.payload))
        except NoCredentialsError:
            return self._invoke_error(
                "no AWS credentials found: configure the default credential chain "
                "(environment, profile or role)"
            )
        except (EndpointConnectionError, ConnectionClosedError, aiohttp.ClientError) as exc:
            return self._invoke_error(
                f"cannot reach the Lambda endpoint ({exc}): check the network, aws.region "
                "and aws.endpoints.lambda"
            )
        except ReadTimeoutError:
            return self._invoke_error(
                f"no answer from Lambda within {READ_TIMEOUT_SECONDS} s; retrying"
            )
        except BotoCoreError as exc:
            return self._invoke_error(f"Invoke of {self._function} failed: {exc}")
        except OSError as exc:
            return self._invoke_error(f"Invoke of {self._function} failed: {exc}; retrying")
        finally:
            _trace_header.reset(token)
        return self._classify_response(response, payload)

    def _classify_response(
        self, response: InvocationResponseTypeDef, payload: bytes
    ) -> InvokeResult:
        status = response.get("StatusCode")
        version = response.get("ExecutedVersion")
        function_error = response.get("FunctionError")
        if function_error:
            timeout = _is_timeout(payload)
            return InvokeResult(
                Outcome.TIMEOUT if timeout else Outcome.FUNCTION_ERROR,
                payload=payload,
                function_error=function_error,
                status_code=status,
                executed_version=version,
                detail=f"function {self._function} timed out"
                if timeout
                else f"function {self._function} returned an error ({function_error})",
            )
        return InvokeResult(
            Outcome.SUCCESS, payload=payload, status_code=status, executed_version=version
        )

    def _invoke_error(self, detail: str, status: int | None = None) -> InvokeResult:
        return InvokeResult(Outcome.INVOKE_ERROR, status_code=status, detail=detail)

    def _client_error(self, exc: ClientError, size: int) -> InvokeResult:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        metadata = exc.response.get("ResponseMetadata", {})
        status: int | None = metadata.get("HTTPStatusCode")
        name = self._function
        what = f"{code} (HTTP {status})" + (f": {message}" if message else "")
        if code in THROTTLE_CODES or status == 429:
            # Lambda's error members (retryAfterSeconds, Reason) are parsed into the response,
            # but botocore-stubs types only the common keys: any other key reads as `object`.
            header = exc.response.get("retryAfterSeconds")
            if not isinstance(header, str):
                header = metadata.get("HTTPHeaders", {}).get("retry-after")
            reason = exc.response.get("Reason")
            return InvokeResult(
                Outcome.THROTTLED,
                status_code=status,
                retry_after=parse_retry_after(header),
                detail=f"invoking {name} was throttled ({code}"
                + (f", {reason}" if reason else "")
                + "); backing off",
            )
        if code in _TOO_LARGE_CODES or status == 413:
            return InvokeResult(
                Outcome.INVOKE_ERROR,
                status_code=status,
                too_large=True,
                detail=f"a {size}-byte event is too large for {name} ({code}); splitting the batch",
            )
        if code == "ResourceNotFoundException":
            qualifier = f", qualifier {self._qualifier}" if self._qualifier else ""
            return self._invoke_error(
                f"function {name}{qualifier} not found in {self._region} ({code}): check "
                "target.function, target.qualifier and the region",
                status,
            )
        if code in {"AccessDeniedException", "AccessDenied"} or status == 403:
            return self._invoke_error(
                f"not allowed to invoke {self._arn} ({what}): grant lambda:InvokeFunction on "
                "it to poller's credentials",
                status,
            )
        if status is not None and status >= 500:
            return self._invoke_error(f"the Lambda service failed: {what}; retrying", status)
        return self._invoke_error(f"Invoke of {name} failed: {what}", status)

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to AwsClients, which closes it."""
