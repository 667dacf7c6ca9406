"""Function targets: one class per `target.type`, all behind the `Target` protocol."""

from __future__ import annotations

import logging
import os

from poller.aws.clients import SERVICES, AwsClients
from poller.config.settings import (
    DEFAULT_MAXIMUM_CONCURRENCY,
    HttpTargetSettings,
    LambdaTargetSettings,
    PythonTargetSettings,
    RuntimeTargetSettings,
    TargetSettings,
    TuningSettings,
)
from poller.targets.base import (
    InvocationRequest,
    InvokeResult,
    Outcome,
    Target,
    TargetSettingError,
)
from poller.targets.http import HttpTarget
from poller.targets.lambda_ import LambdaTarget
from poller.targets.python import PythonTarget, TargetLoadError
from poller.targets.runtime.target import RuntimeTarget

__all__ = [
    "HttpTarget",
    "InvocationRequest",
    "InvokeResult",
    "LambdaTarget",
    "Outcome",
    "PythonTarget",
    "RuntimeTarget",
    "Target",
    "TargetLoadError",
    "TargetSettingError",
    "build_target",
]


def build_target(
    target: TargetSettings,
    *,
    mapping_name: str,
    clients: AwsClients,
    region: str,
    account: str,
    log: logging.Logger | None = None,
    runtime_concurrency: int | None = None,
    runtime_init_timeout: float | None = None,
) -> Target:
    """Build the target a mapping's settings describe.

    Raises TargetSettingError (a ValueError) when the settings cannot work here: a `python`
    handler that does not import (TargetLoadError), a missing `runtime` package or layer, a
    custom runtime without a runnable `bootstrap`; its `key` names the setting, the caller the
    mapping. Makes no network call and starts no process: targets connect, or start their
    environments, on first invocation.
    `runtime_concurrency` is the mapping's own concurrency (see `wiring.runtime_concurrency`), used
    when a `runtime` target sets none; `runtime_init_timeout` is `tuning`'s.
    """
    if isinstance(target, LambdaTargetSettings):
        return LambdaTarget(target, clients=clients, account=account)
    if isinstance(target, HttpTargetSettings):
        return HttpTarget(target, mapping_name=mapping_name, region=region, account=account)
    if isinstance(target, PythonTargetSettings):
        return PythonTarget(
            target, mapping_name=mapping_name, region=region, account=account, log=log
        )
    if isinstance(target, RuntimeTargetSettings):
        endpoints = {service: clients.endpoint_for(service) for service in SERVICES}
        return RuntimeTarget(
            target,
            mapping_name=mapping_name,
            region=region,
            account=account,
            default_concurrency=runtime_concurrency or DEFAULT_MAXIMUM_CONCURRENCY,
            init_timeout=runtime_init_timeout or TuningSettings().runtime_init_timeout_seconds,
            aws_region=clients.region,
            endpoints={service: url for service, url in endpoints.items() if url},
            environ=os.environ,
            log=log,
        )
    raise TypeError(f"unknown target settings {type(target).__name__}")
