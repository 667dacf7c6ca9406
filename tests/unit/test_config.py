"""Configuration loading (SPEC §2): located problems, env expansion, per-source rules, defaults."""

from __future__ import annotations

import pathlib
import uuid
from datetime import UTC, datetime

import pytest

from poller.config import loader
from poller.config.reader import ConfigError, ConfigProblem, Reader
from poller.config.settings import Settings
from poller.wiring import load_settings, parse_settings

REPO = pathlib.Path(__file__).parents[2]

# Each snippet is a complete file; cases add keys from line 5 (SQS) or line 6 (streams) on.
SQS = """\
mappings:
  - name: q
    source: arn:aws:sqs:us-east-1:123456789012:q
    target: {type: lambda, function: f}
"""
FIFO = SQS.replace(":q\n", ":q.fifo\n")
KINESIS = """\
mappings:
  - name: k
    source: arn:aws:kinesis:us-east-1:123456789012:stream/s
    target: {type: lambda, function: f}
    starting_position: LATEST
"""
DDB = KINESIS.replace(
    "kinesis:us-east-1:123456789012:stream/s", "dynamodb:us-east-1:123456789012:table/tbl/stream/l"
)
KINESIS_NO_START = KINESIS.replace("    starting_position: LATEST\n", "")
AT_TIMESTAMP = KINESIS.replace("LATEST", "AT_TIMESTAMP")


def sqs(*lines: str, base: str = SQS) -> str:
    """A mapping file plus `lines` as keys of its (only) mapping."""
    return base + "".join(f"    {line}\n" for line in lines)


def kin(*lines: str) -> str:
    return sqs(*lines, base=KINESIS)


def ddb(*lines: str) -> str:
    return sqs(*lines, base=DDB)


def fifo(*lines: str) -> str:
    return sqs(*lines, base=FIFO)


def target(spec: str) -> str:
    """SQS with line 4's target replaced."""
    return SQS.replace("{type: lambda, function: f}", spec)


def source(arn: str) -> str:
    """SQS with line 3's source replaced."""
    return SQS.replace("arn:aws:sqs:us-east-1:123456789012:q", arn)


def filters(count: int, pattern: str = '{"body": {"a": [1]}}') -> str:
    items = "".join(f"      - pattern: '{pattern}'\n" for _ in range(count))
    return SQS + "    filter_criteria:\n      filters:\n" + items


def stream_filters(*patterns: str, base: str = KINESIS) -> str:
    """A stream mapping whose filters start on line 8 (one pattern a line)."""
    items = "".join(f"      - pattern: '{pattern}'\n" for pattern in patterns)
    return base + "    filter_criteria:\n      filters:\n" + items


M = "mappings[0]."
T = "mappings[0].target."
PATTERN = "mappings[0].filter_criteria.filters[0].pattern"
DEST = "mappings[0].destination_config.on_failure.destination"
TS = "mappings[0].starting_position_timestamp"
WINDOW = "maximum_batching_window_in_seconds"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:d"
LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:f"
RUNTIME = "{type: runtime, code: ., handler: a.b, "

BAD = [
    # (id, text, PATH, LINE, message fragment)
    ("top-level-typo", "tunning: {}\n" + SQS, "tunning", 1, "did you mean 'tuning'?"),
    ("mapping-typo", sqs("batch_sise: 5"), M + "batch_sise", 5, "did you mean 'batch_size'?"),
    (
        "target-key",
        target("{type: lambda, function: f, url: x}"),
        T + "url",
        4,
        "unknown key 'url'",
    ),
    ("batch-high", sqs("batch_size: 20000"), M + "batch_size", 5, "1 and 10000 (got 20000)"),
    ("batch-zero", kin("batch_size: 0"), M + "batch_size", 6, "between 1 and 10000 (got 0)"),
    ("batch-bool", sqs("batch_size: true"), M + "batch_size", 5, "(got true)"),
    ("window-high", kin(f"{WINDOW}: 301"), M + WINDOW, 6, "between 0 and 300 (got 301)"),
    ("window-float", sqs(f"{WINDOW}: 1.5"), M + WINDOW, 5, "must be an integer (got 1.5)"),
    ("retries", kin("maximum_retry_attempts: -2"), M + "maximum_retry_attempts", 6, "-1 and 10000"),
    (
        "record-age",
        kin("maximum_record_age_in_seconds: 59"),
        M + "maximum_record_age_in_seconds",
        6,
        "or between 60 and 604800 (got 59)",
    ),
    (
        "parallelization",
        kin("parallelization_factor: 11"),
        M + "parallelization_factor",
        6,
        "between 1 and 10",
    ),
    (
        "tumbling-range",
        kin("tumbling_window_in_seconds: 901"),
        M + "tumbling_window_in_seconds",
        6,
        "between 0 and 900",
    ),
    (
        "tumbling-parallel",
        kin("tumbling_window_in_seconds: 60", "parallelization_factor: 2"),
        M + "parallelization_factor",
        7,
        "must be 1 with tumbling_window_in_seconds",
    ),
    (
        "tumbling-sqs",
        sqs("tumbling_window_in_seconds: 60"),
        M + "tumbling_window_in_seconds",
        5,
        "does not apply",
    ),
    (
        "tumbling-range",
        kin("tumbling_window_in_seconds: 901"),
        M + "tumbling_window_in_seconds",
        6,
        "0 and 900",
    ),
    (
        "response-types",
        sqs("function_response_types: [X]"),
        M + "function_response_types[0]",
        5,
        "must be 'Report",
    ),
    ("filters-11", filters(11), M + "filter_criteria.filters", 6, "at most 10 filters (got 11)"),
    ("pattern-json", filters(1, '{"body": '), PATTERN, 7, "not valid JSON"),
    ("pattern-array", filters(1, "[1, 2]"), PATTERN, 7, "must be a JSON object"),
    (
        "pattern-long",
        filters(1, '{"a": "' + "x" * 4100 + '"}'),
        PATTERN,
        7,
        "at most 4096 characters",
    ),
    (
        "pattern-cidr",
        filters(1, '{"body": {"ip": [{"cidr": "10.0.0.0/24"}]}}'),
        PATTERN,
        7,
        'unsupported operator "cidr" (at body.ip in the pattern)',
    ),
    (
        "pattern-anything-but-wildcard",
        filters(1, '{"body": {"f": [{"anything-but": {"wildcard": "*.tmp"}}]}}'),
        PATTERN,
        7,
        'unsupported operator "anything-but" with "wildcard" (at body.f in the pattern)',
    ),
    (
        "pattern-numeric-op",
        filters(1, '{"body": {"n": [{"numeric": ["!=", 5]}]}}'),
        PATTERN,
        7,
        '"numeric" has an unknown comparison "!="',
    ),
    (
        "pattern-or-one-branch",
        filters(1, '{"$or": [{"body": {"a": ["x"]}}]}'),
        PATTERN,
        7,
        '"$or" needs an array of at least 2 objects',
    ),
    (
        "pattern-non-array-leaf",
        filters(1, '{"body": {"kind": "refund"}}'),
        PATTERN,
        7,
        '"kind" must be an array of matchers or an object, got "refund" (at body.kind',
    ),
    (
        "pattern-kinesis-plain-data",
        stream_filters('{"data": [{"prefix": "ERROR"}]}'),
        "mappings[0].filter_criteria.filters[0].pattern",
        8,
        'a Kinesis "data" pattern must be a JSON object pattern',
    ),
    (
        "pattern-ddb-plain-dynamodb",
        stream_filters('{"eventName": ["INSERT"]}', '{"dynamodb": ["x"]}', base=DDB),
        "mappings[0].filter_criteria.filters[1].pattern",
        9,
        'a DynamoDB "dynamodb" pattern must be a JSON object pattern',
    ),
    (
        "pattern-unknown-operator",
        filters(1, '{"body": {"a": [{"contains": "x"}]}}'),
        PATTERN,
        7,
        'unsupported operator "contains"',
    ),
    (
        "pattern-nan",
        filters(1, '{"body": {"a": [NaN]}}'),
        PATTERN,
        7,
        "NaN is not a JSON number",
    ),
    (
        "sqs-destination",
        sqs(f"destination_config: {{on_failure: {{destination: {QUEUE}}}}}"),
        M + "destination_config",
        5,
        "destination_config does not apply to an SQS queue",
    ),
    (
        "sqs-start",
        sqs("starting_position: LATEST"),
        M + "starting_position",
        5,
        "does not apply to an SQS",
    ),
    (
        "sqs-retries",
        sqs("maximum_retry_attempts: 3"),
        M + "maximum_retry_attempts",
        5,
        "does not apply",
    ),
    (
        "sqs-bisect",
        sqs("bisect_batch_on_function_error: false"),
        M + "bisect_batch_on_function_error",
        5,
        "does not apply",
    ),
    (
        "stream-scaling",
        kin("scaling_config: {maximum_concurrency: 5}"),
        M + "scaling_config",
        6,
        "does not apply to a Kinesis stream (SQS sources only)",
    ),
    (
        "ddb-scaling",
        ddb("scaling_config: {}"),
        M + "scaling_config",
        6,
        "does not apply to a DynamoDB stream",
    ),
    (
        "concurrency",
        sqs("scaling_config: {maximum_concurrency: 1}"),
        M + "scaling_config.maximum_concurrency",
        5,
        "2 and 1000 (got 1)",
    ),
    ("fifo-window", fifo(f"{WINDOW}: 1"), M + WINDOW, 5, "not supported on FIFO queues"),
    (
        "fifo-batch",
        fifo("batch_size: 11"),
        M + "batch_size",
        5,
        "1 and 10 on a FIFO queue (got 11)",
    ),
    ("sqs-batch-no-window", sqs("batch_size: 50"), M + "batch_size", 5, f"{WINDOW} of at least 1"),
    (
        "kinesis-no-start",
        KINESIS_NO_START,
        M + "starting_position",
        2,
        "required for a Kinesis stream",
    ),
    (
        "start-literal",
        KINESIS.replace("LATEST", "EARLIEST"),
        M + "starting_position",
        5,
        "'LATEST' or 'AT_TIMESTAMP'",
    ),
    (
        "ddb-at-timestamp",
        DDB.replace("LATEST", "AT_TIMESTAMP"),
        M + "starting_position",
        5,
        "only supported on Kinesis",
    ),
    ("at-timestamp-alone", AT_TIMESTAMP, TS, 2, "required with starting_position AT_TIMESTAMP"),
    (
        "timestamp-alone",
        kin("starting_position_timestamp: 1700000000"),
        TS,
        6,
        "only allowed with starting_position AT_TIMESTAMP",
    ),
    (
        "timestamp-bad",
        sqs("starting_position_timestamp: soon", base=AT_TIMESTAMP),
        TS,
        6,
        "ISO 8601 date-time or epoch seconds",
    ),
    (
        "bad-arn",
        source(LAMBDA),
        M + "source",
        3,
        "expected arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:kinesis",
    ),
    (
        "queue-url",
        source("https://sqs.us-east-1.amazonaws.com/123456789012/q"),
        M + "source",
        3,
        "use the queue ARN instead: arn:aws:sqs:us-east-1:123456789012:q",
    ),
    (
        "table-arn",
        source("arn:aws:dynamodb:us-east-1:123456789012:table/tbl"),
        M + "source",
        3,
        "table's stream ARN",
    ),
    (
        "missing-source",
        SQS.replace("    source: arn:aws:sqs:us-east-1:123456789012:q\n", ""),
        M + "source",
        2,
        "required",
    ),
    (
        "duplicate-name",
        SQS + SQS.replace("mappings:\n", ""),
        "mappings[1].name",
        5,
        "duplicate mapping name 'q' (also mappings[0], line 2)",
    ),
    (
        "name-chars",
        SQS.replace("name: q", "name: my queue"),
        M + "name",
        2,
        "letters, digits, '-' or '_' (got 'my queue')",
    ),
    ("name-long", SQS.replace("name: q", "name: " + "n" * 65), M + "name", 2, "1 to 64"),
    (
        "unset-var",
        target("{type: lambda, function: '${FUNCTION_NAME}'}"),
        T + "function",
        4,
        "FUNCTION_NAME is not set",
    ),
    (
        "malformed-var",
        target("{type: lambda, function: '${FN'}"),
        T + "function",
        4,
        "malformed variable reference",
    ),
    (
        "fifo-destination",
        kin(f"destination_config: {{on_failure: {{destination: {QUEUE}.fifo}}}}"),
        DEST,
        6,
        "FIFO queues and topics cannot",
    ),
    (
        "bad-destination",
        kin("destination_config:", "  on_failure:", f"    destination: {LAMBDA}"),
        DEST,
        8,
        "expected arn:aws:sqs:REGION:ACCOUNT:QUEUE, arn:aws:sns",
    ),
    (
        "missing-target",
        SQS.replace("    target: {type: lambda, function: f}\n", ""),
        M + "target",
        2,
        "required",
    ),
    (
        "target-type",
        target("{type: grpc}"),
        T + "type",
        4,
        "must be one of lambda, http, python, runtime (got 'grpc')",
    ),
    ("target-no-type", target("{function: f}"), T + "type", 4, "must be one of lambda"),
    (
        "function-name",
        target("{type: lambda, function: 'my function'}"),
        T + "function",
        4,
        "name:alias, or a Lambda function ARN",
    ),
    (
        "qualifier-conflict",
        target("{type: lambda, function: 'f:live', qualifier: beta}"),
        T + "qualifier",
        4,
        "conflicts with the qualifier 'live'",
    ),
    ("lambda-no-function", target("{type: lambda}"), T + "function", 4, "required"),
    ("http-url", target("{type: http, url: 'ftp://x'}"), T + "url", 4, "http:// or https://"),
    (
        "http-timeout",
        target("{type: http, url: 'http://x', timeout_seconds: 0}"),
        T + "timeout_seconds",
        4,
        "greater than 0 and at most 900 (got 0)",
    ),
    (
        "python-handler",
        target("{type: python, handler: app.handle}"),
        T + "handler",
        4,
        "module.path:function",
    ),
    (
        "runtime-timeout",
        target(RUNTIME + "timeout_seconds: 901}"),
        T + "timeout_seconds",
        4,
        "at most 900",
    ),
    (
        "runtime-memory",
        target(RUNTIME + "memory_size: 64}"),
        T + "memory_size",
        4,
        "between 128 and 10240",
    ),
    (
        "runtime-concurrency",
        target(RUNTIME + "concurrency: 101}"),
        T + "concurrency",
        4,
        "between 1 and 100",
    ),
    (
        "runtime-layers",
        target(RUNTIME + "layers: [a, b, c, d, e, f]}"),
        T + "layers",
        4,
        "at most 5 layers (got 6)",
    ),
    (
        "shutdown",
        "shutdown_timeout_seconds: 0\n" + SQS,
        "shutdown_timeout_seconds",
        1,
        "greater than 0",
    ),
    ("port", "server:\n  port: 70000\n" + SQS, "server.port", 2, "between 0 and 65535"),
    (
        "tuning",
        "tuning:\n  runtime_init_timeout_seconds: -1\n" + SQS,
        "tuning.runtime_init_timeout_seconds",
        2,
        "greater than 0",
    ),
    (
        "ddb-no-table",
        "checkpoints:\n  backend: dynamodb\n" + SQS,
        "checkpoints.table",
        1,
        "required with backend dynamodb",
    ),
    (
        "sqlite-table",
        "checkpoints:\n  table: leases\n" + SQS,
        "checkpoints.table",
        2,
        "only applies to backend dynamodb",
    ),
    (
        "lease",
        "checkpoints:\n  backend: dynamodb\n  table: leases\n  lease_duration_seconds: 0.5\n" + SQS,
        "checkpoints.lease_duration_seconds",
        4,
        "at least 1",
    ),
    (
        "sqlite-lease",
        "checkpoints:\n  lease_duration_seconds: 30\n" + SQS,
        "checkpoints.lease_duration_seconds",
        2,
        "only applies to backend dynamodb",
    ),
    (
        "endpoint-service",
        "aws:\n  endpoints:\n    sqsx: http://localhost:4566\n" + SQS,
        "aws.endpoints.sqsx",
        3,
        "unknown service 'sqsx'",
    ),
    ("section-type", "aws: [1]\n" + SQS, "aws", 1, "must be a mapping (got a list)"),
    ("no-mappings", "server: {}\n", "mappings", 1, "required"),
    ("mapping-not-dict", "mappings:\n  - q\n", "mappings[0]", 2, "must be a mapping (got 'q')"),
    (
        "duplicate-yaml-key",
        sqs("enabled: true", "enabled: false"),
        M + "enabled",
        6,
        "duplicate key (first at line 5)",
    ),
    ("unknown-tag", sqs("batch_size: !Ref Size"), M + "batch_size", 5, "invalid value"),
    ("yaml-syntax", sqs("batch_size: [1"), "", 6, "invalid YAML"),
    ("top-level-list", "- name: q\n", "", 1, "the top level must be a mapping (got a list)"),
    ("top-level-scalar", "hello\n", "", 1, "the top level must be a mapping (got a single value)"),
]


@pytest.mark.parametrize(
    ("text", "path", "line", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_config_is_reported_at_its_line(text: str, path: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "poller.yaml", {})
    problems = info.value.problems
    assert [(p.path, p.line) for p in problems] == [(path, line)], problems
    assert fragment in problems[0].message
    assert problems[0].format().startswith(f"poller.yaml:{line}: ")


def test_an_empty_mappings_list_is_valid() -> None:
    # A daemon with no mapping serves its endpoints; a reload to it stops the last mapping.
    settings = parse_settings("mappings: []\n", "poller.yaml", {})
    assert settings.mappings == []


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "empty.yaml", {})
    [problem] = info.value.problems
    assert problem == ConfigProblem("empty.yaml", None, "", problem.message)
    assert "empty" in problem.message
    assert problem.format() == f"empty.yaml: {problem.message}"


def test_unreadable_file(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, {})
    [problem] = info.value.problems
    assert problem.file == str(missing)
    assert "cannot read" in problem.message


def test_not_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"mappings: [\xff]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path, {})


def test_every_problem_is_reported_in_file_order() -> None:
    text = (
        "server:\n"
        "  port: -1\n"  # 2
        + SQS  # mapping 0 from line 3
        + "    batch_size: 50\n"  # 7: no window
        + "    starting_position: LATEST\n"  # 8: not for SQS
        + "    batch_sise: 1\n"  # 9: typo
        + KINESIS_NO_START.replace("mappings:\n", "")  # mapping 1 from line 10
        + "    scaling_config: {}\n"  # 13: not for streams
        + "    parallelization_factor: 0\n"  # 14
    )
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "f.yaml", {})
    found = [(p.line, p.path) for p in info.value.problems]
    assert found == [
        (2, "server.port"),
        (7, "mappings[0].batch_size"),
        (8, "mappings[0].starting_position"),
        (9, "mappings[0].batch_sise"),
        (10, "mappings[1].starting_position"),
        (13, "mappings[1].scaling_config"),
        (14, "mappings[1].parallelization_factor"),
    ]
    assert (
        str(info.value).splitlines()[0]
        == "f.yaml:2: server.port: must be between 0 and 65535 (got -1)"
    )


def test_problems_in_an_invalid_mapping_do_not_hide_each_other() -> None:
    text = FIFO.replace("function: f", "function: 'a b'") + "    batch_size: 11\n    typo: 1\n"
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "f.yaml", {})
    assert [p.path for p in info.value.problems] == [
        "mappings[0].target.function",
        "mappings[0].batch_size",
        "mappings[0].typo",
    ]


def test_defaults_per_source_kind() -> None:
    settings = parse_settings(
        SQS
        + KINESIS.replace("mappings:\n", "")
        + DDB.replace("mappings:\n", "").replace("name: k", "name: d"),
        "f.yaml",
        {},
    )
    sqs, kinesis, ddb = settings.mappings
    assert (sqs.batch_size, kinesis.batch_size, ddb.batch_size) == (10, 100, 100)
    assert sqs.maximum_concurrency == 5
    assert sqs.maximum_batching_window_in_seconds == 0
    assert not sqs.report_batch_item_failures
    assert sqs.filter_patterns == []
    assert kinesis.maximum_retry_attempts == -1
    assert (sqs.source_arn.kind, kinesis.source_arn.kind, ddb.source_arn.kind) == (
        "sqs",
        "kinesis",
        "dynamodb",
    )
    assert settings.server.port == 9102
    assert settings.checkpoints.backend == "sqlite"
    assert settings.shutdown_timeout_seconds == 30


def test_properties() -> None:
    text = (
        SQS
        + "    batch_size: 50\n    maximum_batching_window_in_seconds: 1\n"
        + "    function_response_types: [ReportBatchItemFailures]\n"
        + "    scaling_config: {maximum_concurrency: 20}\n"
        + '    filter_criteria: {filters: [{pattern: \'{"body": {"a": [1]}}\'}]}\n'
        + SQS.replace("mappings:\n", "").replace("name: q", "name: paused")
        + "    enabled: false\n"
    )
    settings = parse_settings(text, "f.yaml", {})
    first = settings.mappings[0]
    assert first.batch_size == 50
    assert first.report_batch_item_failures
    assert first.maximum_concurrency == 20
    assert first.filter_patterns == ['{"body": {"a": [1]}}']
    assert first.uuid == str(uuid.uuid5(uuid.NAMESPACE_URL, "poller:q"))
    assert [m.name for m in settings.enabled_mappings] == ["q"]


def test_supported_filter_patterns_load() -> None:
    sqs_patterns = [
        '{"body": [{"prefix": "ERROR"}]}',
        '{"body": {"n": [{"numeric": [">", 0, "<=", 5]}], "s": [{"anything-but": ["a"]}]}}',
        '{"$or": [{"body": {"a": [{"exists": false}]}}, {"attributes": {"x": [{"suffix": "y"}]}}]}',
        '{"body": {"f": [{"wildcard": "*.png"}, {"equals-ignore-case": "x"}, null, ""]}}',
    ]
    text = SQS + "    filter_criteria:\n      filters:\n"
    text += "".join(f"      - pattern: '{p}'\n" for p in sqs_patterns)
    assert parse_settings(text, "f.yaml", {}).mappings[0].filter_patterns == sqs_patterns
    kinesis = stream_filters('{"data": {"t": ["buy"]}, "partitionKey": ["1"]}')
    assert parse_settings(kinesis, "f.yaml", {}).mappings[0].filter_patterns
    dynamodb = stream_filters('{"dynamodb": {"NewImage": {"q": {"N": [{"numeric": [">", 1]}]}}}}')
    assert parse_settings(dynamodb.replace(KINESIS, DDB), "f.yaml", {}).mappings[0].filter_patterns


def test_filter_problems_of_several_mappings_are_all_reported() -> None:
    text = (
        stream_filters('{"data": ["x"]}')  # mapping 0, pattern on line 8
        + SQS.replace("mappings:\n", "").replace("name: q", "name: q2")  # mapping 1 from line 9
        + "    batch_sise: 1\n"  # 12: a typo does not hide the filter problem
        + "    filter_criteria:\n      filters:\n"
        + '      - pattern: \'{"body": {"a": ["x"]}}\'\n'  # 15: fine
        + '      - pattern: \'{"body": {"ip": [{"cidr": "10.0.0.0/8"}]}}\'\n'  # 16
    )
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "f.yaml", {})
    found = [(p.line, p.path) for p in info.value.problems]
    assert found == [
        (8, "mappings[0].filter_criteria.filters[0].pattern"),
        (12, "mappings[1].batch_sise"),
        (16, "mappings[1].filter_criteria.filters[1].pattern"),
    ]
    assert str(info.value).splitlines()[-1] == (
        'f.yaml:16: mappings[1].filter_criteria.filters[1].pattern: unsupported operator "cidr"'
        " (at body.ip in the pattern)"
    )


def test_fifo_accepts_batch_10_and_explicit_zero_window() -> None:
    text = FIFO + "    batch_size: 10\n    maximum_batching_window_in_seconds: 0\n"
    mapping = parse_settings(text, "f.yaml", {}).mappings[0]
    assert mapping.source_arn.is_fifo
    assert mapping.batch_size == 10


def test_env_expansion_with_defaults_and_types() -> None:
    text = (
        "aws:\n  region: ${REGION}\n"
        "server:\n  port: ${PORT:-9102}\n"
        "shutdown_timeout_seconds: ${GRACE:-12.5}\n"
        + target("{type: http, url: 'http://${HOST:-localhost}:${HTTP_PORT}/invoke'}")
        + "    enabled: ${ENABLED:-true}\n"
    )
    settings = parse_settings(
        text, "f.yaml", {"REGION": "eu-west-1", "HTTP_PORT": "8080", "PORT": ""}
    )
    assert settings.aws.region == "eu-west-1"
    assert settings.server.port == 9102  # set but empty: the default applies, as in the shell
    assert settings.shutdown_timeout_seconds == 12.5
    mapping = settings.mappings[0]
    assert mapping.target.type == "http"
    assert mapping.target.url == "http://localhost:8080/invoke"
    assert mapping.enabled is True


def test_expansion_types_plain_scalars_only() -> None:
    reader = Reader("f.yaml", {"N": "9102", "B": "false"})
    data = reader.read("a: ${N}\nb: '${N}'\nc: ${B}\nd: \"${B}\"\ne: ${X:-}\nf: x${N}y\n")
    assert data == {"a": 9102, "b": "9102", "c": False, "d": "false", "e": None, "f": "x9102y"}
    assert reader.problems == []


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLER_TEST_FUNCTION", "from-env")
    settings = parse_settings(
        SQS.replace("function: f", "function: '${POLLER_TEST_FUNCTION}'"), "f"
    )
    assert settings.mappings[0].target.type == "lambda"
    assert settings.mappings[0].target.function == "from-env"


def test_references_inside_flow_collections_expand_as_in_block_ones() -> None:
    text = (
        "server: {host: ${HOST:-127.0.0.1}, port: ${PORT:-9111}}\n"
        + target("{type: http, url: ${URL:-http://refunds:8080/invoke}}")
        + "    function_response_types: [${RESPONSE:-ReportBatchItemFailures}]\n"
    )
    settings = parse_settings(text, "f.yaml", {})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 9111)
    mapping = settings.mappings[0]
    assert mapping.target.type == "http"
    assert mapping.target.url == "http://refunds:8080/invoke"
    assert mapping.function_response_types == ["ReportBatchItemFailures"]
    assert parse_settings(text, "f.yaml", {"PORT": "9200"}).server.port == 9200


def test_an_unset_variable_in_a_flow_mapping_is_named_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("server: {port: ${PORT}}\n" + SQS, "f.yaml", {})
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (1, "server.port")
    assert "environment variable PORT is not set" in problem.message


def test_a_reference_yaml_cannot_read_says_how_to_quote_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("server: {port: ${PORT:-9,111}}\n" + SQS, "f.yaml", {})
    (problem,) = info.value.problems
    assert problem.line == 1
    assert problem.message.startswith("invalid YAML: ")
    assert "quote the whole value" in problem.message
    assert 'port: "${PORT:-9102}"' in problem.message


def test_masking_references_changes_no_value_of_a_block_file() -> None:
    reader = Reader("f.yaml", {"N": "1"})
    text = (
        "a: '${N} ${N:-x y}'\n"  # quoted: strings
        'b: "x${N}"\n'
        "${K}: ${N}\n"  # keys are not expanded
        "c: |\n  ${N}\n"
        "d: ${N:-a, b}\n"  # a comma in a block value: not masked, expanded as before
        "e: ${N} # ${N:-comment}\n"
    )
    data = reader.read(text)
    assert data == {"a": "1 1", "b": "x1", "${K}": 1, "c": "1\n", "d": 1, "e": 1}
    assert reader.problems == []


def test_several_unset_variables_in_one_value() -> None:
    text = target("{type: http, url: 'http://${A}:${B}/'}")
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "f.yaml", {})
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 2
    assert "A is not set" in messages[0] and "B is not set" in messages[1]


def test_starting_position_timestamp_is_timezone_aware() -> None:
    at = KINESIS.replace("LATEST", "AT_TIMESTAMP")
    expected = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    for value in (
        "1700000000",
        "2023-11-14T22:13:20Z",
        "'2023-11-14T22:13:20'",
        "'2023-11-14T23:13:20+01:00'",
    ):
        mapping = parse_settings(
            at + f"    starting_position_timestamp: {value}\n", "f", {}
        ).mappings[0]
        assert mapping.starting_position_timestamp == expected
        assert mapping.starting_position_timestamp.tzinfo is not None


def test_merge_keys_and_anchors() -> None:
    text = "x-defaults: &defaults\n  target: {type: lambda, function: f}\n  batch_size: 5\n"
    with pytest.raises(ConfigError) as info:
        parse_settings(text + SQS, "f", {})
    assert [p.path for p in info.value.problems] == ["x-defaults"]
    text = (
        "mappings:\n"
        "  - &first\n"
        "    name: a\n"
        "    source: arn:aws:sqs:us-east-1:123456789012:q\n"
        "    target: {type: lambda, function: f}\n"
        "    batch_size: 5\n"
        "  - <<: *first\n"
        "    name: b\n"
    )
    settings = parse_settings(text, "f", {})
    assert [(m.name, m.batch_size) for m in settings.mappings] == [("a", 5), ("b", 5)]


def test_lambda_function_forms() -> None:
    for function in (
        "f",
        "f:live",
        "f:$LATEST",
        "123456789012:function:f",
        "arn:aws:lambda:us-east-1:123456789012:function:f:7",
        "arn:aws-cn:lambda:cn-north-1:123456789012:function:f",
    ):
        settings = parse_settings(target(f"{{type: lambda, function: '{function}'}}"), "f", {})
        assert settings.mappings[0].target.type == "lambda"
    numeric = target("{type: lambda, function: f, qualifier: 7}")
    lambda_target = parse_settings(numeric, "f", {}).mappings[0].target
    assert lambda_target.type == "lambda" and lambda_target.qualifier == "7"


def test_dynamodb_checkpoints_and_endpoints() -> None:
    text = (
        "aws:\n  endpoint_url: http://localhost:5000\n  endpoints: {lambda: 'http://localhost:9001'}\n"
        "checkpoints:\n  backend: dynamodb\n  table: poller-leases\n  lease_duration_seconds: 5\n"
        + SQS
    )
    settings = parse_settings(text, "f", {})
    assert settings.checkpoints.table == "poller-leases"
    assert settings.aws.endpoints == {"lambda": "http://localhost:9001"}


def test_example_yaml_loads_without_environment() -> None:
    settings = load_settings(REPO / "config" / "example.yaml", {})
    kinds = {m.source_arn.kind for m in settings.mappings}
    assert kinds == {"sqs", "kinesis", "dynamodb"}
    assert all(m.target.type == "lambda" for m in settings.mappings)
    streams = [m for m in settings.mappings if m.source_arn.is_stream]
    assert all(m.destination_config and m.destination_config.on_failure for m in streams)
    assert isinstance(settings, Settings)


def test_the_filter_engine_checks_patterns_for_the_loader() -> None:
    # Configuration knows a pattern's shape only; the filter language is the filter engine's,
    # passed in by the loader (wiring): the same text passes the bare loader and fails with it.
    text = filters(1, '{"body": {"ip": [{"cidr": "10.0.0.0/24"}]}}')
    assert loader.parse_config(text, "poller.yaml", {}).mappings[0].filter_criteria
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "poller.yaml", {})
    assert "cidr" in str(caught.value)
    with pytest.raises(ConfigError):  # the shape is configuration's own check
        loader.parse_config(filters(1, "[1, 2]"), "poller.yaml", {})
