"""A `python` handler that logs with Powertools' `Logger`, set up at import as its docs show
(`tests.support.powertools_handlers:handler`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(service="payments")


def handler(event: dict[str, Any], context: Any) -> None:
    logger.info("powertools info %s", context.aws_request_id)
