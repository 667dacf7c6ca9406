"""docs/ against the code it describes: every key, metric, endpoint field and event shape.

A key, a metric or a /status field added to the code without a line in docs/ fails here, and so
does an example event that no longer has the shape poller sends.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import types
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from poller.config import settings as config
from poller.engine.records import StreamRecord
from poller.engine.windows import OpenWindow
from poller.events.invocation import invocation_record
from poller.events.sqs import sqs_record
from poller.events.streams import dynamodb_record, kinesis_record, stream_record
from poller.ops.metrics import Metrics
from poller.ops.status import MappingStatus, ShardStatus
from poller.targets.base import InvokeResult, Outcome
from tests.conformance.shapes import shape_differences

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = ("configuration", "events", "metrics", "endpoints", "operations")
_INTERNAL = re.compile(r"SPEC|ESM-SEMANTICS|MOTO-NOTES|§")


def _doc(name: str) -> str:
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


def _user_facing_files() -> list[pathlib.Path]:
    files = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / ".dockerignore"]
    for folder in ("docs", "config", "deploy", "poller"):
        files += [
            p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    return files


def test_user_facing_text_cites_no_internal_note() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _user_facing_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _INTERNAL.search(line)
    ]
    assert not cited, f"say the rule itself instead: {cited}"


def test_the_readme_links_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in REFERENCE:
        assert f"](docs/{name}.md)" in readme
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links {target}, which is missing"


def test_operations_md_has_a_row_for_every_command() -> None:
    import argparse

    from poller.cli import _parser

    def commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        found: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found += commands(sub, f"{prefix} {name}") or [f"{prefix} {name}"]
        return found

    rows = [line for line in _doc("operations").splitlines() if line.startswith("| `poller ")]
    for command in commands(_parser(), "poller"):
        assert any(row.startswith(f"| `{command}") for row in rows), f"no row for {command}"


# --- configuration.md ---------------------------------------------------------------------------


def _models(tp: Any) -> list[type[BaseModel]]:
    """The models a field's annotation refers to (through Optional, unions, lists, dicts)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if get_origin(tp) in (Union, types.UnionType, list, dict) or hasattr(tp, "__metadata__"):
        return [model for arg in get_args(tp) for model in _models(arg)]
    return []


def _all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [config.Settings]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _models(field.annotation)
    return seen


def _row(text: str, key: str) -> str:
    """The table row of `key`, named alone or as the last part of a path (`a.b[].key`)."""
    row = re.compile(rf"\| `([a-z_]+(\[\])?\.)*{key}` \|")
    rows = [line for line in text.splitlines() if row.match(line)]
    assert rows, f"docs/configuration.md has no row for `{key}`"
    return rows[0]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_configuration_key_has_a_row_with_its_default() -> None:
    text = _doc("configuration")
    models = _all_models()
    assert config.RuntimeTargetSettings in models and config.ScalingConfigSettings in models
    for model in models:
        for name, field in model.model_fields.items():
            if name == "type":  # the target's discriminator: a heading per kind
                assert all(f"`{kind}`" in text for kind in get_args(field.annotation))
                continue
            row = _row(text, name)
            default = field.get_default(call_default_factory=True)
            if isinstance(default, bool | int | float | str) and not isinstance(default, BaseModel):
                assert f"`{_shown(default)}`" in row, f"`{name}`: default {default!r} not in {row}"


def test_configuration_md_names_the_allowed_values_of_every_choice() -> None:
    text = _doc("configuration")
    choices = {
        "backend": ("sqlite", "dynamodb"),
        "starting_position": ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        "runtime": ("python", "provided"),
        "function_response_types": ("ReportBatchItemFailures",),
    }
    for key, values in choices.items():
        row = _row(text, key)
        for value in values:
            assert value in row, f"`{key}`: {value} missing in {row}"
    from poller.config.rules import SERVICES

    assert all(f"`{service}`" in _row(text, "endpoints") for service in SERVICES)


# --- metrics.md ---------------------------------------------------------------------------------


def test_metrics_md_lists_every_metric_with_its_type_and_labels() -> None:
    text = _doc("metrics")
    families = [m for m in vars(Metrics()).values() if hasattr(m, "_labelnames")]
    documented = set(re.findall(r"^\| `(poller_[a-z_]+)` \|", text, re.M))
    exported = set()
    for family in families:
        name = family._name + ("_total" if family._type == "counter" else "")
        exported.add(name)
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert row, f"docs/metrics.md has no row for {name}"
        assert f"| {family._type} |" in row
        assert family._labelnames[0] == "mapping"
        for label in family._labelnames[1:]:
            assert f"`{label}`" in row, f"{name}: label {label} not documented"
    assert documented == exported


def test_metrics_md_lists_every_stage_and_outcome() -> None:
    from poller.ops.metrics import BACKLOG_STATES, STAGES

    text = _doc("metrics")
    stages = set(re.findall(r"^\| `([a-z_]+)` \| ", text.partition("## The stages")[2], re.M))
    assert stages == set(STAGES)
    for value in [o.value for o in Outcome] + list(BACKLOG_STATES):
        assert f"`{value}`" in text


# --- endpoints.md -------------------------------------------------------------------------------


def test_endpoints_md_describes_every_status_field_and_state() -> None:
    from poller.ops.status import State

    text = _doc("endpoints")
    status = MappingStatus("m", "u", "s", "t", Metrics().for_mapping("m"))
    status.shards["x"] = ShardStatus("x")
    document = status.as_json()
    for key in document:
        assert f"| `{key}` |" in text, f"/status field {key} not documented"
    for key in document["shards"][0]:
        assert f"| `shards[].{key}` |" in text, f"/status shard field {key} not documented"
    for state in State:
        assert f"| `{state.value}` |" in text
    server = (ROOT / "poller" / "ops" / "server.py").read_text(encoding="utf-8")
    routes = re.findall(r'add_get\("(/[a-z]+)"', server)
    assert len(routes) == 4
    for route in routes:
        assert f"| `{route}` |" in text, f"{route} not documented"


# --- events.md ----------------------------------------------------------------------------------


def _examples() -> list[Any]:
    """The JSON blocks of events.md that are whole documents, in order."""
    blocks = re.findall(r"```json\n(.*?)```", _doc("events"), re.S)
    parsed = []
    for block in blocks:
        try:
            parsed.append(json.loads(block))
        except ValueError:
            continue  # a fragment (the FIFO attributes), shown inside a record
    return parsed


def _at(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


KINESIS_RAW = {
    "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
    "Data": b'{"type": "order", "id": 42}',
    "PartitionKey": "customer-7",
    "ApproximateArrivalTimestamp": _at(1735732800.123),
}


def _built() -> dict[str, Any]:
    message = {
        "MessageId": "m",
        "ReceiptHandle": "r",
        "Body": "{}",
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1",
            "SenderId": "s",
            "ApproximateFirstReceiveTimestamp": "1",
        },
        "MessageAttributes": {"tenant": {"StringValue": "acme", "DataType": "String"}},
        "MD5OfBody": "0",
        "MD5OfMessageAttributes": "0",
    }
    kinesis = kinesis_record(
        KINESIS_RAW, shard_id="s", stream_arn="a", region="r", invoke_identity_arn="i"
    )
    change = {
        "eventID": "e",
        "eventName": "MODIFY",
        "awsRegion": "r",
        "dynamodb": {
            "ApproximateCreationDateTime": _at(1735732800),
            "Keys": {"id": {"S": "42"}},
            "OldImage": {"id": {"S": "42"}, "status": {"S": "NEW"}},
            "NewImage": {"id": {"S": "42"}, "status": {"S": "PAID"}},
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    records: list[StreamRecord] = [stream_record(kinesis, kind="kinesis")]
    failed = InvokeResult(Outcome.FUNCTION_ERROR, function_error="Unhandled", status_code=200)
    return {
        "sqs": {"Records": [sqs_record(message, queue_arn="q", region="r")]},
        "kinesis": {"Records": [kinesis]},
        "dynamodb": {"Records": [dynamodb_record(change, stream_arn="a", region="r")]},
        "invocation": invocation_record(
            kind="kinesis",
            condition="RetryAttemptsExhausted",
            function_arn="f",
            shard_id="s",
            stream_arn="a",
            records=records,
            approximate_invoke_count=4,
            last_result=failed,
            now=1735732805.12,
        ),
        "window": json.loads(
            OpenWindow(1735732800, 60, shard_id="s", source_arn="a", state=b'{"k":1}').event(
                [], final=True
            )
        ),
    }


@pytest.mark.parametrize("kind", ["sqs", "kinesis", "dynamodb", "invocation", "window"])
def test_every_example_event_has_the_shape_poller_sends(kind: str) -> None:
    examples = [e for e in _examples() if "Records" in e or "requestContext" in e]

    def source(event: Any) -> Any:
        return (event.get("Records") or [{}])[0].get("eventSource")

    by_kind = {
        "sqs": [e for e in examples if source(e) == "aws:sqs" and "window" not in e],
        "kinesis": [e for e in examples if source(e) == "aws:kinesis" and "window" not in e],
        "dynamodb": [e for e in examples if source(e) == "aws:dynamodb" and "window" not in e],
        "invocation": [e for e in examples if "requestContext" in e],
        "window": [e for e in examples if "window" in e],
    }
    (example,) = by_kind[kind]
    built = _built()[kind]
    if kind == "window":  # the state's keys are the function's own
        example, built = {**example, "state": {}}, {**built, "state": {}}
    assert shape_differences(example, built) == []
    if kind == "window":
        assert list(example) == list(built)  # Lambda's order
