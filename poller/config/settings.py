"""The configuration's typed, validated settings. Pydantic lives at this boundary only.

Field ranges are validators on the models below (`poller.config.rules`); `poller.config.loader`
reads a file into them, reporting every problem with its line.
docs/configuration.md describes every key, its default and its range, for users.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self
from uuid import NAMESPACE_URL, uuid5

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from poller.config import rules
from poller.config.arns import SourceArn, parse_source_arn
from poller.config.rules import number

__all__ = [
    "AwsSettings",
    "CheckpointSettings",
    "DestinationConfigSettings",
    "FilterCriteriaSettings",
    "FilterSettings",
    "HttpTargetSettings",
    "LambdaTargetSettings",
    "MappingSettings",
    "OnFailureSettings",
    "PythonTargetSettings",
    "RuntimeTargetSettings",
    "ScalingConfigSettings",
    "ServerSettings",
    "Settings",
    "TargetSettings",
    "TuningSettings",
]

DEFAULT_MAXIMUM_CONCURRENCY = 5


class _Strict(BaseModel):
    # A number where a string is expected (`qualifier: 1`, an environment value) is meant as text.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


Seconds = Annotated[float, number(above=0)]
TargetSeconds = Annotated[float, number(above=0, hi=900)]


class AwsSettings(_Strict):
    """Region, endpoints and the identity put in events (`aws`)."""

    region: str | None = None
    endpoint_url: Annotated[str, rules.HTTP_URL] | None = None
    endpoints: dict[Annotated[str, rules.SERVICE], Annotated[str, rules.HTTP_URL]] = Field(
        default_factory=dict
    )
    invoke_identity_arn: Annotated[str, rules.ARN] | None = None


class CheckpointSettings(_Strict):
    """Where stream positions live: a local sqlite file or a shared DynamoDB lease table."""

    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    path: Annotated[str, rules.NOT_EMPTY] = "poller-state.db"
    table: Annotated[str, rules.TABLE] | None = None
    lease_duration_seconds: Annotated[float, number(1)] = 10


class ServerSettings(_Strict):
    """The HTTP server for /metrics, /healthz, /readyz and /status; port 0 picks a free one."""

    host: str = "0.0.0.0"
    port: Annotated[int, number(0, 65535)] = 9102


class TuningSettings(_Strict):
    """Intervals of background work; every value is in seconds and positive."""

    shard_discovery_interval_seconds: Seconds = 30
    backlog_refresh_interval_seconds: Seconds = 15
    runtime_init_timeout_seconds: Seconds = 10


class LambdaTargetSettings(_Strict):
    """Invoke a Lambda function (or anything speaking the Invoke API) by name, alias or ARN."""

    type: Literal["lambda"]
    function: Annotated[str, rules.FUNCTION]
    qualifier: str | None = None

    @field_validator("qualifier")
    @classmethod
    def _qualifier(cls, value: str | None, info: ValidationInfo) -> str | None:
        message = rules.check_qualifier(info.data.get("function"), value)
        if message:
            rules.fail(message)
        return value


class HttpTargetSettings(_Strict):
    """POST the event as JSON to a URL; the response body is the function's response."""

    type: Literal["http"]
    url: Annotated[str, rules.HTTP_URL]
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: TargetSeconds = 30


class PythonTargetSettings(_Strict):
    """Import `module:function` and call it in-process."""

    type: Literal["python"]
    handler: Annotated[str, rules.PY_HANDLER]
    timeout_seconds: TargetSeconds = 30


class RuntimeTargetSettings(_Strict):
    """Run a Lambda deployment package behind an embedded Runtime API."""

    type: Literal["runtime"]
    code: Annotated[str, rules.NOT_EMPTY]
    handler: Annotated[str, rules.NOT_EMPTY]
    runtime: Literal["python", "provided"] = "python"
    timeout_seconds: TargetSeconds = 30
    memory_size: Annotated[int, number(128, 10240)] = 256
    concurrency: Annotated[int, number(1, 100)] | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    layers: Annotated[list[str], rules.MAX_LAYERS] = Field(default_factory=list)


TargetSettings = Annotated[
    LambdaTargetSettings | HttpTargetSettings | PythonTargetSettings | RuntimeTargetSettings,
    Field(discriminator="type"),
]


class FilterSettings(_Strict):
    """One FilterCriteria pattern, a JSON object in a string."""

    pattern: Annotated[str, rules.FILTER_PATTERN]


class FilterCriteriaSettings(_Strict):
    """Up to 10 patterns, OR-ed."""

    filters: Annotated[list[FilterSettings], rules.MAX_FILTER_LIST] = Field(default_factory=list)


class OnFailureSettings(_Strict):
    """Where a given-up stream batch's invocation record goes: SQS, SNS or S3."""

    destination: Annotated[str, rules.DESTINATION]


class DestinationConfigSettings(_Strict):
    """Lambda's DestinationConfig; only OnFailure applies to event source mappings."""

    on_failure: OnFailureSettings | None = None


class ScalingConfigSettings(_Strict):
    """SQS only: the most concurrent invocations this mapping makes."""

    maximum_concurrency: Annotated[int, number(2, 1000)] = DEFAULT_MAXIMUM_CONCURRENCY


class MappingSettings(_Strict):
    """One event source mapping; keys are CreateEventSourceMapping's in snake_case."""

    name: Annotated[str, rules.MAPPING_NAME]
    source: Annotated[str, rules.SOURCE]
    target: TargetSettings
    enabled: bool = True
    # 10 is the SQS default; _default_batch_size puts 100 in for streams when the key is absent.
    batch_size: Annotated[int, number(1, 10000)] = 10
    maximum_batching_window_in_seconds: Annotated[int, number(0, 300)] = 0
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] | None = None
    starting_position_timestamp: datetime | None = None
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: Annotated[int, number(-1, 10000)] = -1
    maximum_record_age_in_seconds: Annotated[int, number(), rules.RECORD_AGE] = -1
    parallelization_factor: Annotated[int, number(1, 10)] = 1
    tumbling_window_in_seconds: Annotated[int, number(), rules.TUMBLING] = 0
    function_response_types: Annotated[
        list[Literal["ReportBatchItemFailures"]], rules.RESPONSE_TYPES
    ] = Field(default_factory=list)
    filter_criteria: FilterCriteriaSettings | None = None
    destination_config: DestinationConfigSettings | None = None
    scaling_config: ScalingConfigSettings | None = None

    _source_arn: SourceArn | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _default_batch_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "batch_size" not in data:
            try:
                if parse_source_arn(str(data.get("source"))).is_stream:
                    return {**data, "batch_size": 100}
            except ValueError:
                pass  # the `source` validator reports it
        return data

    @field_validator("starting_position_timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        # Epoch seconds are read here rather than by pydantic, which takes large numbers as ms.
        if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value, tz=UTC)
            except (OverflowError, OSError, ValueError):
                rules.fail(f"epoch seconds out of range (got {value})")
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("starting_position_timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A timestamp without an offset is taken as UTC, as Kinesis reads epoch seconds.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _parse_source(self) -> Self:
        self._source_arn = parse_source_arn(self.source)
        return self

    @property
    def source_arn(self) -> SourceArn:
        """The parsed `source` (kind, region, account, name, FIFO)."""
        if self._source_arn is None:  # only for instances made with model_construct
            self._source_arn = parse_source_arn(self.source)
        return self._source_arn

    @property
    def report_batch_item_failures(self) -> bool:
        """True when the function may answer with `batchItemFailures`."""
        return "ReportBatchItemFailures" in self.function_response_types

    @property
    def maximum_concurrency(self) -> int:
        """SQS: the cap on concurrent invocations (scaling_config's, else 5)."""
        if self.scaling_config is None:
            return DEFAULT_MAXIMUM_CONCURRENCY
        return self.scaling_config.maximum_concurrency

    @property
    def filter_patterns(self) -> list[str]:
        """The FilterCriteria patterns as JSON strings; empty means every record passes."""
        if self.filter_criteria is None:
            return []
        return [f.pattern for f in self.filter_criteria.filters]

    @property
    def uuid(self) -> str:
        """The mapping's stable UUID (version 5, from its name: stable across restarts)."""
        return str(uuid5(NAMESPACE_URL, "poller:" + self.name))


class Settings(_Strict):
    """The whole configuration file."""

    aws: AwsSettings = Field(default_factory=AwsSettings)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    shutdown_timeout_seconds: Seconds = 30
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    mappings: list[MappingSettings]

    @property
    def enabled_mappings(self) -> list[MappingSettings]:
        """The mappings to run (`enabled: true`), in file order."""
        return [mapping for mapping in self.mappings if mapping.enabled]
