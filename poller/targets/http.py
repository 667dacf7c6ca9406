"""The `http` target: POST the event as JSON; the response body is the function's response."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import aiohttp
import anyio

from poller.config.settings import HttpTargetSettings
from poller.targets.base import AcloseOnExit, InvocationRequest, InvokeResult, Outcome

# Connecting is not running the function: a connect that hangs is an unreachable target
# (invoke_error), not a slow function (timeout). Capped by the target's own timeout.
CONNECT_TIMEOUT_SECONDS = 10.0

# Which statuses mean the function ran and failed, and which mean "slow down".
_FUNCTION_ERROR_STATUSES = frozenset({400, 500, 502, 504})
_THROTTLE_STATUSES = frozenset({429, 503})

_NEVER_REACHED_HINTS = {
    401: "the endpoint wants credentials: set them in target.headers",
    403: "the endpoint refused poller: check target.headers and the endpoint's access rules",
    404: "nothing answers at that path: check target.url",
    405: "the endpoint does not accept POST: check target.url",
}


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or an HTTP date); None if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class HttpTarget(AcloseOnExit):
    """POSTs each event to `url` over one shared aiohttp session and classifies the status."""

    def __init__(
        self, settings: HttpTargetSettings, *, mapping_name: str, region: str, account: str
    ) -> None:
        self._url = settings.url
        self._headers = dict(settings.headers)
        self._timeout = settings.timeout_seconds
        self._arn = f"arn:aws:lambda:{region}:{account}:function:{mapping_name}"
        # Created on first invoke: a ClientSession must be made inside the running event loop.
        self._session: aiohttp.ClientSession | None = None

    @property
    def function_arn(self) -> str:
        """`arn:aws:lambda:{region}:{account}:function:{mapping name}`."""
        return self._arn

    @property
    def description(self) -> str:
        """`http:<url>`."""
        return f"http:{self._url}"

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=min(CONNECT_TIMEOUT_SECONDS, self._timeout)
            )
            # limit=0: the engine already bounds concurrent invocations; a connection pool cap
            # would make invocations queue for a socket while their timeout runs.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session

    def _request_headers(self, request: InvocationRequest) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self._headers}
        headers["Lambda-Runtime-Aws-Request-Id"] = request.request_id
        if request.trace_header:
            headers["X-Amzn-Trace-Id"] = request.trace_header
        return headers

    async def invoke(self, request: InvocationRequest) -> InvokeResult:
        """POST once; 2xx success, `_classify` for the rest; never raises for network trouble."""
        session = self._ensure_session()
        status: int | None = None
        body = b""
        response_headers: Mapping[str, str] = {}
        try:
            with anyio.move_on_after(self._timeout) as scope:
                async with session.post(
                    self._url,
                    data=request.payload,
                    headers=self._request_headers(request),
                    # A redirect is a misconfigured url; following it would re-POST the batch.
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    response_headers = response.headers
                    body = await response.read()
        except aiohttp.ClientConnectorError as exc:
            return self._never_reached(
                f"cannot connect to {self._url} ({exc.os_error or exc}): check target.url and "
                "that the function's server is running"
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            # Only the connect timeout is set on the session; the overall one is the scope above.
            return self._never_reached(
                f"connecting to {self._url} timed out: check target.url and the network"
            )
        except aiohttp.ServerDisconnectedError:
            return self._never_reached(
                f"{self._url} closed the connection without answering; retrying"
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return self._never_reached(
                f"POST {self._url} failed ({type(exc).__name__}: {exc}); retrying"
            )
        if scope.cancel_called or status is None:
            return InvokeResult(
                Outcome.TIMEOUT,
                function_error="Unhandled",
                detail=f"{self._url} did not answer within {self._timeout:g} s",
            )
        return self._classify(status, body, response_headers)

    def _never_reached(self, detail: str) -> InvokeResult:
        return InvokeResult(Outcome.INVOKE_ERROR, detail=detail)

    def _classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> InvokeResult:
        if 200 <= status < 300:
            return InvokeResult(Outcome.SUCCESS, payload=body, status_code=status)
        if status in _FUNCTION_ERROR_STATUSES:
            return InvokeResult(
                Outcome.FUNCTION_ERROR,
                payload=body,
                function_error="Unhandled",
                status_code=status,
                detail=f"{self._url} answered HTTP {status}",
            )
        if status in _THROTTLE_STATUSES:
            return InvokeResult(
                Outcome.THROTTLED,
                status_code=status,
                retry_after=parse_retry_after(headers.get("Retry-After")),
                detail=f"{self._url} answered HTTP {status}; backing off",
            )
        if status == 413:
            return InvokeResult(
                Outcome.INVOKE_ERROR,
                status_code=status,
                too_large=True,
                detail=f"{self._url} answered HTTP 413 (payload too large); splitting the batch",
            )
        hint = _NEVER_REACHED_HINTS.get(status, "check target.url and the server's logs")
        return InvokeResult(
            Outcome.INVOKE_ERROR,
            status_code=status,
            detail=f"{self._url} answered HTTP {status}: {hint}",
        )

    async def aclose(self) -> None:
        """Close the shared session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
