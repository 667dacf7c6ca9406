"""Function targets: one class per `target.type`, all behind the `Target` protocol."""

from __future__ import annotations

import logging

from poller.aws import AwsClients
from poller.config import (
    HttpTargetSettings,
    LambdaTargetSettings,
    PythonTargetSettings,
    TargetSettings,
)
from poller.targets.base import InvocationRequest, InvokeResult, Outcome, Target
from poller.targets.http import HttpTarget
from poller.targets.lambda_ import LambdaTarget
from poller.targets.python import PythonTarget, TargetLoadError

__all__ = [
    "HttpTarget",
    "InvocationRequest",
    "InvokeResult",
    "LambdaTarget",
    "Outcome",
    "PythonTarget",
    "Target",
    "TargetLoadError",
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
) -> Target:
    """Build the target a mapping's settings describe.

    Raises TargetLoadError when a `python` handler cannot be imported (the caller names the
    mapping), NotImplementedError for `runtime` targets. Makes no network call: Lambda and HTTP
    targets connect on their first invocation.
    """
    if isinstance(target, LambdaTargetSettings):
        return LambdaTarget(target, clients=clients, region=region, account=account)
    if isinstance(target, HttpTargetSettings):
        return HttpTarget(target, mapping_name=mapping_name, region=region, account=account)
    if isinstance(target, PythonTargetSettings):
        return PythonTarget(
            target, mapping_name=mapping_name, region=region, account=account, log=log
        )
    raise NotImplementedError("runtime targets arrive in a later release")
