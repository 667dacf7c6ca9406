"""Validation rules behind `poller.config`: value ranges, and the rules that depend on a
mapping's source kind, both as AWS has them. `messages` words pydantic's own errors.

Field-level checks are pydantic validators (so every model, however built, holds valid values and
pydantic reports them all at once); checks that need the whole mapping return `(loc, message)`
pairs that the loader turns into located problems.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from poller.config.arns import SourceArn, SourceKind, parse_destination_arn, parse_source_arn

if TYPE_CHECKING:
    from poller.config.settings import CheckpointSettings, MappingSettings

Loc = tuple[str | int, ...]
RuleProblem = tuple[Loc, str]

PatternCheck = Callable[[str, SourceKind | None], str | None]
"""What is wrong with a filter pattern for a source kind (None: for every kind), or None.

Configuration does not know the filter language: whoever loads a configuration passes the
filter engine's own check, so a pattern is refused by the code that would have to match it.
"""
# The key of the pattern check in the validation context of the models.
CHECK_PATTERN = "check_pattern"

SERVICES = ("sqs", "kinesis", "dynamodbstreams", "dynamodb", "lambda", "sns", "s3", "sts")
MAX_FILTERS = 10
MAX_PATTERN_LENGTH = 4096

# Keys that only make sense for one family of sources; present on the other they are errors.
STREAM_ONLY_KEYS = (
    "starting_position",
    "starting_position_timestamp",
    "bisect_batch_on_function_error",
    "maximum_retry_attempts",
    "maximum_record_age_in_seconds",
    "parallelization_factor",
    "tumbling_window_in_seconds",
    "destination_config",
)
SQS_ONLY_KEYS = ("scaling_config",)

_QUALIFIER = re.compile(r"\$LATEST|[A-Za-z0-9_-]{1,128}")
# A Lambda function: NAME, NAME:QUALIFIER, a partial ARN (ACCOUNT:function:NAME) or a full ARN.
_FUNCTION = re.compile(
    r"(?:arn:aws(?:-[a-z]+)*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?"
)


def fail(message: str) -> NoReturn:
    """Raise a pydantic error whose text is exactly `message` (braces in it are not formatted)."""
    raise PydanticCustomError("poller", "{message}", {"message": message})


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, short enough for one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(
    lo: float | None = None, hi: float | None = None, *, above: float | None = None
) -> WrapValidator:
    """A range check for an int or float field: `lo`..`hi` inclusive, or strictly `above`.

    YAML booleans are ints to pydantic; they are rejected so `batch_size: yes` is not 1.
    """

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, bool):
            fail(f"must be a number (got {show(value)})")
        result = handler(value)
        low_ok = (lo is None or result >= lo) and (above is None or result > above)
        if low_ok and (hi is None or result <= hi):
            return result
        if lo is not None and hi is not None:
            fail(f"must be between {show(lo)} and {show(hi)} (got {show(result)})")
        bound = f"greater than {show(above)}" if above is not None else f"at least {show(lo)}"
        tail = f" and at most {show(hi)}" if hi is not None else ""
        fail(f"must be {bound}{tail} (got {show(result)})")

    return WrapValidator(check)


def _after(check: Callable[[Any], str | None]) -> AfterValidator:
    """A pydantic validator from a check that returns what is wrong, or None."""

    def run(value: Any) -> Any:
        message = check(value)
        if message:
            fail(message)
        return value

    return AfterValidator(run)


def _matches(pattern: str, what: str) -> AfterValidator:
    regex = re.compile(pattern)
    return _after(
        lambda value: None if regex.fullmatch(value) else f"must be {what} (got {show(value)})"
    )


def _record_age(value: int) -> str | None:
    if value == -1 or 60 <= value <= 604_800:
        return None
    return f"must be -1 (no limit) or between 60 and 604800 (got {value})"


def _tumbling(value: int) -> str | None:
    if value == 0:
        return None
    if 1 <= value <= 900:
        return None
    return f"must be between 0 and 900 (0: no tumbling window; got {value})"


def _source(value: str) -> str | None:
    try:
        parse_source_arn(value)
    except ValueError as exc:
        return str(exc)
    return None


def _destination(value: str) -> str | None:
    try:
        parsed = parse_destination_arn(value)
    except ValueError as exc:
        return str(exc)
    if parsed.is_fifo:
        return "FIFO queues and topics cannot be on-failure destinations; use a standard one"
    return None


def _function(value: str) -> str | None:
    if _FUNCTION.fullmatch(value):
        return None
    return (
        "must be a function name, name:alias, or a Lambda function ARN "
        f"(arn:aws:lambda:REGION:ACCOUNT:function:NAME) (got {show(value)})"
    )


def check_qualifier(function: str | None, qualifier: str | None) -> str | None:
    """A Lambda target's `qualifier`: a version or alias, agreeing with one in `function`."""
    if qualifier is None:
        return None
    if not _QUALIFIER.fullmatch(qualifier):
        return f"must be $LATEST, a version number or an alias name (got {show(qualifier)})"
    match = _FUNCTION.fullmatch(function or "")
    derived = match.group("qualifier") if match else None
    if derived and derived != qualifier:
        return f"conflicts with the qualifier {derived!r} already in function {function!r}"
    return None


def _http_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    return f"must be an http:// or https:// URL (got {show(value)})"


def _at_most(limit: int, noun: str) -> AfterValidator:
    return _after(
        lambda items: None if len(items) <= limit else f"at most {limit} {noun} (got {len(items)})"
    )


def _check_filter_pattern(
    pattern: str, kind: SourceKind | None, check: PatternCheck | None
) -> str | None:
    """Check one FilterCriteria pattern; return what is wrong with it, or None.

    The load-time gate for filter patterns: its shape here (size, JSON, an object), then
    `check`, the filter engine's compile, so every operator or shape the matcher cannot honour
    is refused, naming the operator and where in the pattern it is. Without `kind` (the
    field-level check) only what holds for every source is checked; with it, also what Lambda
    refuses for that source kind (a plain-value Kinesis `data` or DynamoDB `dynamodb` pattern).
    """
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"must be at most {MAX_PATTERN_LENGTH} characters (got {len(pattern)})"
    try:
        parsed = json.loads(pattern)
    except json.JSONDecodeError as exc:
        return f"is not valid JSON: {exc.msg} at character {exc.pos + 1}"
    except RecursionError:
        return "is nested too deeply"
    if not isinstance(parsed, dict):
        return 'must be a JSON object, like \'{"body": {"kind": ["refund"]}}\''
    return check(pattern, kind) if check is not None else None


def _filter_pattern(pattern: str, info: ValidationInfo) -> str:
    """The field-level pattern check, with the loader's pattern check from the context."""
    check = (info.context or {}).get(CHECK_PATTERN)
    message = _check_filter_pattern(pattern, None, check)
    if message:
        fail(message)
    return pattern


def _filter_rules(
    mapping: MappingSettings, source: SourceArn, check: PatternCheck | None
) -> list[RuleProblem]:
    """The source-kind checks of each filter pattern (the rest ran on the field already)."""
    if mapping.filter_criteria is None or check is None:
        return []
    problems: list[RuleProblem] = []
    for index, item in enumerate(mapping.filter_criteria.filters):
        message = check(item.pattern, source.kind)
        if message:
            problems.append((("filter_criteria", "filters", index, "pattern"), message))
    return problems


# Annotated metadata the models in poller.config attach to their fields.
MAPPING_NAME = _matches(r"[A-Za-z0-9_-]{1,64}", "1 to 64 letters, digits, '-' or '_'")
PY_HANDLER = _matches(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", "like module.path:function")
TABLE = _matches(r"[A-Za-z0-9_.-]{3,255}", "a table name: 3 to 255 letters, digits, '_-.'")
ARN = _matches(r"arn:\S+", "an ARN")
NOT_EMPTY = _after(lambda value: None if value.strip() else "must not be empty")
SERVICE = _after(
    lambda key: None if key in SERVICES else f"unknown service {key!r} ({', '.join(SERVICES)})"
)
SOURCE = _after(_source)
DESTINATION = _after(_destination)
FUNCTION = _after(_function)
HTTP_URL = _after(_http_url)
FILTER_PATTERN = AfterValidator(_filter_pattern)
MAX_FILTER_LIST = _at_most(MAX_FILTERS, "filters")
MAX_LAYERS = _at_most(5, "layers")
RESPONSE_TYPES = _after(
    lambda items: "list ReportBatchItemFailures once" if len(items) > 1 else None
)
RECORD_AGE = _after(_record_age)
TUMBLING = _after(_tumbling)


def check_mapping(
    mapping: MappingSettings, check_pattern: PatternCheck | None = None
) -> list[RuleProblem]:
    """Rules that depend on the mapping's source kind; `(loc within the mapping, message)`."""
    source = mapping.source_arn
    present = mapping.model_fields_set
    problems: list[RuleProblem] = []
    foreign = STREAM_ONLY_KEYS if source.kind == "sqs" else SQS_ONLY_KEYS
    for key in foreign:
        if key in present:
            problems.append(((key,), _not_applicable(key, source)))
    problems += (
        _sqs_rules(mapping, source) if source.kind == "sqs" else _stream_rules(mapping, source)
    )
    problems += _filter_rules(mapping, source, check_pattern)
    problems += _runtime_rules(mapping)
    return problems


# What a `runtime` target sets for its runtime; Lambda refuses these in `Environment` too.
# (Credentials and region stay overridable: a function may act with other credentials.)
_RESERVED_VARIABLE = re.compile(
    r"_HANDLER|_X_AMZN_TRACE_ID|AWS_EXECUTION_ENV|LAMBDA_TASK_ROOT|LAMBDA_RUNTIME_DIR|AWS_LAMBDA_"
    r"(FUNCTION_NAME|FUNCTION_MEMORY_SIZE|FUNCTION_VERSION|INITIALIZATION_TYPE|LOG_GROUP_NAME"
    r"|LOG_STREAM_NAME|RUNTIME_API)"
)


def _runtime_rules(mapping: MappingSettings) -> list[RuleProblem]:
    target = mapping.target
    if target.type != "runtime":
        return []
    return [
        (("target", "environment", key), f"{key} is reserved: poller sets it, as Lambda does")
        for key in sorted(target.environment)
        if _RESERVED_VARIABLE.fullmatch(key)
    ]


def _not_applicable(key: str, source: SourceArn) -> str:
    if source.kind != "sqs":
        return f"{key} does not apply to {source.description} (SQS sources only)"
    message = f"{key} does not apply to {source.description} (Kinesis and DynamoDB streams only)"
    if key == "destination_config":
        message += "; give the queue a redrive policy (dead-letter queue) instead"
    return message


def _sqs_rules(mapping: MappingSettings, source: SourceArn) -> list[RuleProblem]:
    batch, window = mapping.batch_size, mapping.maximum_batching_window_in_seconds
    if source.is_fifo:
        problems: list[RuleProblem] = []
        if batch > 10:
            problems.append(
                (("batch_size",), f"must be between 1 and 10 on a FIFO queue (got {batch})")
            )
        if window != 0:
            message = f"batching windows are not supported on FIFO queues (got {window})"
            problems.append((("maximum_batching_window_in_seconds",), message))
        return problems
    if batch > 10 and window < 1:
        message = (
            f"a batch_size above 10 (got {batch}) needs maximum_batching_window_in_seconds "
            "of at least 1 on a standard queue"
        )
        return [(("batch_size",), message)]
    return []


def _stream_rules(mapping: MappingSettings, source: SourceArn) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    position, timestamp = mapping.starting_position, mapping.starting_position_timestamp
    if position is None:
        choices = (
            "TRIM_HORIZON, LATEST or AT_TIMESTAMP"
            if source.kind == "kinesis"
            else ("TRIM_HORIZON or LATEST")
        )
        problems.append((("starting_position",), f"required for {source.description}: {choices}"))
    elif position == "AT_TIMESTAMP" and source.kind != "kinesis":
        message = "AT_TIMESTAMP is only supported on Kinesis streams; use TRIM_HORIZON or LATEST"
        problems.append((("starting_position",), message))
    elif position == "AT_TIMESTAMP" and timestamp is None:
        message = "required with starting_position AT_TIMESTAMP (ISO 8601 or epoch seconds)"
        problems.append((("starting_position_timestamp",), message))
    if timestamp is not None and position != "AT_TIMESTAMP":
        message = "only allowed with starting_position AT_TIMESTAMP"
        problems.append((("starting_position_timestamp",), message))
    factor = mapping.parallelization_factor
    if mapping.tumbling_window_in_seconds and factor != 1:
        message = (
            f"must be 1 with tumbling_window_in_seconds (got {factor}): a window's state "
            "follows one shard's records in order"
        )
        problems.append((("parallelization_factor",), message))
    return problems


def check_checkpoints(checkpoints: CheckpointSettings) -> list[RuleProblem]:
    """`path` belongs to the sqlite backend; `table`, which it requires, and
    `lease_duration_seconds` to dynamodb (a key that does nothing is a mistake to name)."""
    present = checkpoints.model_fields_set
    problems: list[RuleProblem] = []
    if checkpoints.backend == "dynamodb":
        if checkpoints.table is None:
            problems.append((("table",), "required with backend dynamodb (the lease table)"))
        if "path" in present:
            problems.append((("path",), "only applies to backend sqlite"))
        return problems
    for key in ("table", "lease_duration_seconds"):
        if key in present:
            problems.append(((key,), "only applies to backend dynamodb"))
    return problems
