"""FilterCriteria matching: a table of (pattern, record, expected) plus config-error cases.

Expected values follow EventBridge's event-ruler semantics (the engine Lambda's filter syntax
comes from) and ESM-SEMANTICS §1.3 for what each source matches against.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from poller.filtering import filter_set as filtering
from poller.filtering.filter_set import (
    MAX_FILTERS,
    MAX_PATTERN_CHARS,
    CompiledPattern,
    FilterSet,
    PatternError,
    compile_pattern,
)


def sqs(body: Any, **extra: Any) -> dict[str, Any]:
    """A Lambda SQS event record; a non-string body is JSON-encoded first."""
    record: dict[str, Any] = {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {
            "kind": {"stringValue": "refund", "stringListValues": [], "dataType": "String"}
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:orders",
        "awsRegion": "us-east-1",
    }
    record.update(extra)
    return record


def kinesis(data: Any, partition_key: str = "1") -> dict[str, Any]:
    """A Lambda Kinesis event record; ``data`` is JSON-encoded unless bytes/str already."""
    if isinstance(data, bytes):
        encoded = base64.b64encode(data).decode()
    elif isinstance(data, str) and data.startswith("raw:"):
        encoded = data[4:]  # deliberately not base64
    else:
        encoded = base64.b64encode(json.dumps(data).encode()).decode()
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": encoded,
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-2",
        "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
    }


def ddb(
    event_name: str = "INSERT",
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Lambda DynamoDB Streams event record."""
    image: dict[str, Any] = {
        "ApproximateCreationDateTime": 1678831218.0,
        "Keys": {"pk": {"S": "order#1"}},
        "SequenceNumber": "111",
        "SizeBytes": 26,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        image["NewImage"] = new
    if old is not None:
        image["OldImage"] = old
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024",
        "dynamodb": image,
    }


def run(kind: str, pattern: dict[str, Any] | str, record: dict[str, Any]) -> bool:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    if kind == "view":
        return compile_pattern(text).matches(record)
    fs = FilterSet.compile([text])
    if kind == "sqs":
        return fs.matches_sqs(record)
    if kind == "kinesis":
        return fs.matches_kinesis(record)
    assert kind == "ddb"
    return fs.matches_dynamodb(record)


# (id, source kind, pattern, record, expected)
CASES: list[tuple[str, str, dict[str, Any] | str, dict[str, Any], bool]] = [
    # --- exact values -----------------------------------------------------------------------
    ("exact string", "view", {"a": ["x"]}, {"a": "x"}, True),
    ("exact string mismatch", "view", {"a": ["x"]}, {"a": "y"}, False),
    ("exact is case-sensitive", "view", {"a": ["X"]}, {"a": "x"}, False),
    ("OR within the array", "view", {"a": ["x", "y"]}, {"a": "y"}, True),
    ("AND across keys, one fails", "view", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ("AND across keys, both hold", "view", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"}, True),
    ("named field missing", "view", {"a": ["x"]}, {"b": "x"}, False),
    ("unnamed fields ignored", "view", {"a": ["x"]}, {"a": "x", "z": 1}, True),
    ("exact number", "view", {"n": [5]}, {"n": 5}, True),
    ("number pattern vs string record", "view", {"n": [5]}, {"n": "5"}, False),
    ("string pattern vs number record", "view", {"n": ["5"]}, {"n": 5}, False),
    # Without `numeric`, numbers match by their JSON text (ESM-SEMANTICS §1.3): 300, 300.0
    # and 3.0e2 are three values. Patterns are given as text so 3.0e2 stays as written.
    ("5 is not 5.0 without numeric", "view", {"n": [5]}, {"n": 5.0}, False),
    ("5.0 matches 5.0", "view", {"n": [5.0]}, {"n": 5.0}, True),
    ("300 matches 300", "sqs", '{"body": {"n": [300]}}', sqs('{"n": 300}'), True),
    ("300 is not 300.0", "sqs", '{"body": {"n": [300]}}', sqs('{"n": 300.0}'), False),
    ("300 is not 3.0e2", "sqs", '{"body": {"n": [300]}}', sqs('{"n": 3.0e2}'), False),
    ("300.0 is not 300", "sqs", '{"body": {"n": [300.0]}}', sqs('{"n": 300}'), False),
    ("300.0 matches 300.0", "sqs", '{"body": {"n": [300.0]}}', sqs('{"n": 300.0}'), True),
    ("300.0 is not 3.0e2", "sqs", '{"body": {"n": [300.0]}}', sqs('{"n": 3.0e2}'), False),
    ("3.0e2 is not 300", "sqs", '{"body": {"n": [3.0e2]}}', sqs('{"n": 300}'), False),
    ("3.0e2 is not 300.0", "sqs", '{"body": {"n": [3.0e2]}}', sqs('{"n": 300.0}'), False),
    ("3.0e2 matches 3.0e2", "sqs", '{"body": {"n": [3.0e2]}}', sqs('{"n": 3.0e2}'), True),
    ("3.0e2 is not 3.0E2", "sqs", '{"body": {"n": [3.0e2]}}', sqs('{"n": 3.0E2}'), False),
    ("0 is not -0", "sqs", '{"body": {"n": [0]}}', sqs('{"n": -0}'), False),
    ("one of several number texts", "sqs", '{"body": {"n": [1, 1.0]}}', sqs('{"n": 1.0}'), True),
    (
        "number texts in a record array",
        "sqs",
        '{"body": {"n": [300]}}',
        sqs('{"n": [3.0e2, 300]}'),
        True,
    ),
    ("number text is not a string", "sqs", '{"body": {"n": ["300"]}}', sqs('{"n": 300}'), False),
    ("string is not a number text", "sqs", '{"body": {"n": [300]}}', sqs('{"n": "300"}'), False),
    (
        "numeric = compares 3.0e2 by value",
        "sqs",
        '{"body": {"n": [{"numeric": ["=", 300]}]}}',
        sqs('{"n": 3.0e2}'),
        True,
    ),
    (
        "numeric = compares 300.0 by value",
        "sqs",
        '{"body": {"n": [{"numeric": ["=", 3.0e2]}]}}',
        sqs('{"n": 300.0}'),
        True,
    ),
    (
        "numeric range on an exponent",
        "sqs",
        '{"body": {"n": [{"numeric": [">", 299, "<=", 300]}]}}',
        sqs('{"n": 3e2}'),
        True,
    ),
    ("kinesis number text", "kinesis", '{"data": {"p": [1.50]}}', kinesis(b'{"p": 1.50}'), True),
    (
        "kinesis 1.50 is not 1.5",
        "kinesis",
        '{"data": {"p": [1.50]}}',
        kinesis(b'{"p": 1.5}'),
        False,
    ),
    ("number mismatch", "view", {"n": [5]}, {"n": 6}, False),
    ("true matches true", "view", {"b": [True]}, {"b": True}, True),
    ("true is not 1", "view", {"b": [True]}, {"b": 1}, False),
    ("1 is not true", "view", {"b": [1]}, {"b": True}, False),
    ("false is not the string", "view", {"b": [False]}, {"b": "false"}, False),
    ("null matches null", "view", {"a": [None]}, {"a": None}, True),
    ("null does not match missing", "view", {"a": [None]}, {}, False),
    ("null does not match empty string", "view", {"a": [None]}, {"a": ""}, False),
    ("empty string matches empty string", "view", {"a": [""]}, {"a": ""}, True),
    ("empty string does not match null", "view", {"a": [""]}, {"a": None}, False),
    # --- prefix / suffix / equals-ignore-case -----------------------------------------------
    ("prefix", "view", {"t": [{"prefix": "2017-10-02"}]}, {"t": "2017-10-02T18:43:48Z"}, True),
    ("prefix mismatch", "view", {"t": [{"prefix": "2017-10-02"}]}, {"t": "2017-10-03"}, False),
    ("prefix is case-sensitive", "view", {"t": [{"prefix": "ab"}]}, {"t": "ABC"}, False),
    ("prefix only on strings", "view", {"n": [{"prefix": "12"}]}, {"n": 123}, False),
    ("empty prefix matches any string", "view", {"t": [{"prefix": ""}]}, {"t": "x"}, True),
    ("suffix", "view", {"f": [{"suffix": ".png"}]}, {"f": "cat.png"}, True),
    ("suffix mismatch", "view", {"f": [{"suffix": ".png"}]}, {"f": "cat.PNG"}, False),
    ("equals-ignore-case", "view", {"n": [{"equals-ignore-case": "alice"}]}, {"n": "ALICE"}, True),
    (
        "equals-ignore-case mismatch",
        "view",
        {"n": [{"equals-ignore-case": "al"}]},
        {"n": "ali"},
        False,
    ),
    ("equals-ignore-case on number", "view", {"n": [{"equals-ignore-case": "5"}]}, {"n": 5}, False),
    # --- anything-but -------------------------------------------------------------------------
    ("anything-but string", "view", {"s": [{"anything-but": "init"}]}, {"s": "running"}, True),
    ("anything-but excluded", "view", {"s": [{"anything-but": "init"}]}, {"s": "init"}, False),
    (
        "anything-but list excluded",
        "view",
        {"s": [{"anything-but": ["a", "b"]}]},
        {"s": "b"},
        False,
    ),
    ("anything-but numbers", "view", {"x": [{"anything-but": [100, 200]}]}, {"x": 150}, True),
    (
        "anything-but numbers by text",
        "view",
        {"x": [{"anything-but": [100]}]},
        {"x": 100.0},
        True,
    ),
    (
        "anything-but 300 lets 3.0e2 through",
        "sqs",
        '{"body": {"x": [{"anything-but": [300, 400]}]}}',
        sqs('{"x": 3.0e2}'),
        True,
    ),
    (
        "anything-but 300 stops 300",
        "sqs",
        '{"body": {"x": [{"anything-but": [300, 400]}]}}',
        sqs('{"x": 300}'),
        False,
    ),
    ("anything-but string on number", "view", {"s": [{"anything-but": "5"}]}, {"s": 5}, True),
    ("anything-but number on string", "view", {"s": [{"anything-but": 5}]}, {"s": "5"}, True),
    ("anything-but on missing", "view", {"s": [{"anything-but": "x"}]}, {}, False),
    ("anything-but on null", "view", {"s": [{"anything-but": "x"}]}, {"s": None}, True),
    (
        "anything-but prefix",
        "view",
        {"s": [{"anything-but": {"prefix": "init"}}]},
        {"s": "initial"},
        False,
    ),
    (
        "anything-but prefix other",
        "view",
        {"s": [{"anything-but": {"prefix": "in"}}]},
        {"s": "run"},
        True,
    ),
    (
        "anything-but suffix",
        "view",
        {"f": [{"anything-but": {"suffix": ".tmp"}}]},
        {"f": "a.tmp"},
        False,
    ),
    (
        "anything-but suffix other",
        "view",
        {"f": [{"anything-but": {"suffix": ".tmp"}}]},
        {"f": "a"},
        True,
    ),
    ("anything-but array element", "view", {"s": [{"anything-but": "a"}]}, {"s": ["a", "b"]}, True),
    (
        "anything-but array all excluded",
        "view",
        {"s": [{"anything-but": "a"}]},
        {"s": ["a"]},
        False,
    ),
    # --- numeric ------------------------------------------------------------------------------
    ("numeric range inside", "view", {"c": [{"numeric": [">", 0, "<=", 5]}]}, {"c": 5}, True),
    ("numeric range low edge", "view", {"c": [{"numeric": [">", 0, "<=", 5]}]}, {"c": 0}, False),
    ("numeric range above", "view", {"c": [{"numeric": [">", 0, "<=", 5]}]}, {"c": 5.5}, False),
    ("numeric >= edge", "view", {"c": [{"numeric": [">=", 10]}]}, {"c": 10}, True),
    ("numeric <", "view", {"c": [{"numeric": ["<", 10]}]}, {"c": -1}, True),
    ("numeric = exponent form", "view", {"x": [{"numeric": ["=", 3.018e2]}]}, {"x": 301.8}, True),
    ("numeric not on strings", "view", {"c": [{"numeric": [">", 0]}]}, {"c": "3"}, False),
    ("numeric not on booleans", "view", {"c": [{"numeric": [">", 0]}]}, {"c": True}, False),
    ("numeric over an array", "view", {"c": [{"numeric": [">", 10]}]}, {"c": [1, 20]}, True),
    (
        "numeric in a JSON body",
        "sqs",
        {"body": {"n": [{"numeric": [">", 9999]}]}},
        sqs({"n": 10000}),
        True,
    ),
    # --- exists -------------------------------------------------------------------------------
    ("exists true, present", "view", {"a": [{"exists": True}]}, {"a": "x"}, True),
    ("exists true, missing", "view", {"a": [{"exists": True}]}, {}, False),
    ("exists true, null is present", "view", {"a": [{"exists": True}]}, {"a": None}, True),
    ("exists false, missing", "view", {"a": [{"exists": False}]}, {"b": 1}, True),
    ("exists false, null is present", "view", {"a": [{"exists": False}]}, {"a": None}, False),
    ("exists false, present", "view", {"a": [{"exists": False}]}, {"a": ""}, False),
    (
        "exists false, object is not a leaf",
        "view",
        {"a": [{"exists": False}]},
        {"a": {"b": 1}},
        True,
    ),
    (
        "exists true, object is not a leaf",
        "view",
        {"a": [{"exists": True}]},
        {"a": {"b": 1}},
        False,
    ),
    ("exists true, empty array", "view", {"a": [{"exists": True}]}, {"a": []}, False),
    ("exists false, empty array", "view", {"a": [{"exists": False}]}, {"a": []}, True),
    ("exists false, parent missing", "view", {"p": {"a": [{"exists": False}]}}, {}, True),
    ("exists false, parent scalar", "view", {"p": {"a": [{"exists": False}]}}, {"p": 3}, True),
    ("exists false or a value", "view", {"a": [{"exists": False}, "x"]}, {"a": "x"}, True),
    # --- wildcard -----------------------------------------------------------------------------
    (
        "wildcard",
        "view",
        {"s": [{"wildcard": "Simple*Service"}]},
        {"s": "SimpleQueueService"},
        True,
    ),
    ("wildcard anchored", "view", {"s": [{"wildcard": "a*b"}]}, {"s": "axbc"}, False),
    ("wildcard empty run", "view", {"s": [{"wildcard": "a*b"}]}, {"s": "ab"}, True),
    ("wildcard escaped star", "view", {"s": [{"wildcard": "a\\*b"}]}, {"s": "a*b"}, True),
    ("wildcard escaped star literal", "view", {"s": [{"wildcard": "a\\*b"}]}, {"s": "axb"}, False),
    ("wildcard escaped backslash", "view", {"s": [{"wildcard": "a\\\\*"}]}, {"s": "a\\zz"}, True),
    ("wildcard regex chars literal", "view", {"s": [{"wildcard": "a.c*"}]}, {"s": "abc"}, False),
    ("wildcard across lines", "view", {"s": [{"wildcard": "a*z"}]}, {"s": "a\nz"}, True),
    # --- nesting and arrays -------------------------------------------------------------------
    ("nested object", "view", {"d": {"s": ["on"]}}, {"d": {"s": "on", "x": 1}}, True),
    ("nested object mismatch", "view", {"d": {"s": ["on"]}}, {"d": {"s": "off"}}, False),
    ("nested pattern vs scalar", "view", {"d": {"s": ["on"]}}, {"d": "on"}, False),
    ("leaf pattern vs object", "view", {"d": ["on"]}, {"d": {"s": "on"}}, False),
    ("record array, any element", "view", {"r": ["b"]}, {"r": ["a", "b"]}, True),
    ("record array, no element", "view", {"r": ["c"]}, {"r": ["a", "b"]}, False),
    ("nested record arrays", "view", {"r": ["c"]}, {"r": [["a"], ["c"]]}, True),
    (
        "array of objects, one element holds both",
        "view",
        {"e": {"first": ["Anna"], "last": ["Smith"]}},
        {"e": [{"first": "John", "last": "Doe"}, {"first": "Anna", "last": "Smith"}]},
        True,
    ),
    (
        "array of objects, fields from different elements",
        "view",
        {"e": {"first": ["Anna"], "last": ["Jones"]}},
        {"e": [{"first": "Anna", "last": "Smith"}, {"first": "Peter", "last": "Jones"}]},
        False,
    ),
    # --- $or ----------------------------------------------------------------------------------
    ("$or first branch", "view", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x"}, True),
    ("$or second branch", "view", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
    ("$or no branch", "view", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "y", "b": "x"}, False),
    (
        "$or AND outside field",
        "view",
        {"src": ["cw"], "$or": [{"m": ["cpu"]}, {"ns": ["ec2"]}]},
        {"src": "other", "ns": "ec2"},
        False,
    ),
    (
        "$or with AND inside a branch",
        "view",
        {"$or": [{"m": ["cpu"]}, {"t": ["x"], "ns": ["ec2"]}]},
        {"t": "x", "ns": "ec2"},
        True,
    ),
    (
        "$or nested in an object",
        "view",
        {"d": {"$or": [{"a": [{"numeric": [">", 5]}]}, {"b": [{"exists": True}]}]}},
        {"d": {"a": 1, "b": None}},
        True,
    ),
    (
        "$or across body and attributes",
        "sqs",
        {"$or": [{"body": {"k": ["refund"]}}, {"attributes": {"ApproximateReceiveCount": ["1"]}}]},
        sqs({"k": "order"}),
        True,
    ),
    # --- SQS ----------------------------------------------------------------------------------
    (
        "sqs JSON pattern, JSON body",
        "sqs",
        {"body": {"RequestCode": ["BBBB"]}},
        sqs({"RequestCode": "BBBB"}),
        True,
    ),
    (
        "sqs JSON pattern, other value",
        "sqs",
        {"body": {"RequestCode": ["BBBB"]}},
        sqs({"RequestCode": "AAAA"}),
        False,
    ),
    (
        "sqs JSON pattern, plain body",
        "sqs",
        {"body": {"RequestCode": ["BBBB"]}},
        sqs("RequestCode BBBB"),
        False,
    ),
    ("sqs plain pattern, plain body", "sqs", {"body": ["hello"]}, sqs("hello"), True),
    ("sqs prefix on plain body", "sqs", {"body": [{"prefix": "ERROR"}]}, sqs("ERROR: disk"), True),
    ("sqs plain pattern, JSON body", "sqs", {"body": [{"prefix": "{"}]}, sqs({"a": 1}), False),
    ("sqs broken JSON is plain text", "sqs", {"body": [{"prefix": "{"}]}, sqs('{"a": '), True),
    (
        "sqs broken JSON vs JSON pattern",
        "sqs",
        {"body": {"a": [{"exists": False}]}},
        sqs('{"a": '),
        False,
    ),
    (
        "sqs exists-false JSON pattern, plain body",
        "sqs",
        {"body": {"a": [{"exists": False}]}},
        sqs("hi"),
        False,
    ),
    (
        "sqs exists-false plain pattern, JSON body",
        "sqs",
        {"body": [{"exists": False}]},
        sqs({"a": 1}),
        False,
    ),
    (
        "sqs body with leading whitespace",
        "sqs",
        {"body": {"k": ["v"]}},
        sqs('\n  {"k": "v"}'),
        True,
    ),
    ("sqs JSON array body", "sqs", {"body": {"a": [2]}}, sqs([{"a": 1}, {"a": 2}]), True),
    ("sqs number body stays text", "sqs", {"body": ["42"]}, sqs("42"), True),
    (
        "sqs attributes as plain fields",
        "sqs",
        {"attributes": {"ApproximateReceiveCount": ["1"]}},
        sqs("x"),
        True,
    ),
    (
        "sqs messageAttributes",
        "sqs",
        {"messageAttributes": {"kind": {"stringValue": ["refund"]}}},
        sqs("x"),
        True,
    ),
    (
        "sqs no body pattern: body not checked",
        "sqs",
        {"eventSource": ["aws:sqs"]},
        sqs("{oops"),
        True,
    ),
    (
        "sqs typed N is not a DynamoDB number",
        "sqs",
        {"body": {"N": [{"numeric": [">", 1]}]}},
        sqs({"N": "12"}),
        False,
    ),
    # --- Kinesis ------------------------------------------------------------------------------
    (
        "kinesis data pattern",
        "kinesis",
        {"data": {"order": {"type": ["buy"]}}},
        kinesis({"order": {"type": "buy"}}),
        True,
    ),
    (
        "kinesis data mismatch",
        "kinesis",
        {"data": {"order": {"type": ["buy"]}}},
        kinesis({"order": {"type": "sell"}}),
        False,
    ),
    ("kinesis non-JSON data", "kinesis", {"data": {"type": ["buy"]}}, kinesis(b"type=buy"), False),
    (
        "kinesis non-JSON data, exists false",
        "kinesis",
        {"data": {"t": [{"exists": False}]}},
        kinesis(b"t"),
        False,
    ),
    (
        "kinesis binary data",
        "kinesis",
        {"data": {"type": ["buy"]}},
        kinesis(b"\xff\xfe\x00"),
        False,
    ),
    (
        "kinesis invalid base64",
        "kinesis",
        {"data": {"type": ["buy"]}},
        kinesis("raw:%%%not-base64"),
        False,
    ),
    (
        "kinesis numeric in data",
        "kinesis",
        {"data": {"q": [{"numeric": [">=", 1000]}]}},
        kinesis({"q": 1000}),
        True,
    ),
    (
        "kinesis partitionKey metadata",
        "kinesis",
        {"partitionKey": ["1"]},
        kinesis({"x": 1}, "1"),
        True,
    ),
    (
        "kinesis metadata and data",
        "kinesis",
        {"partitionKey": ["2"], "data": {"x": [1]}},
        kinesis({"x": 1}, "1"),
        False,
    ),
    (
        "kinesis patterns are not nested under kinesis",
        "kinesis",
        {"kinesis": {"partitionKey": ["1"]}},
        kinesis({}),
        False,
    ),
    # --- DynamoDB -----------------------------------------------------------------------------
    ("ddb eventName", "ddb", {"eventName": ["INSERT"]}, ddb("INSERT"), True),
    ("ddb eventName mismatch", "ddb", {"eventName": ["REMOVE", "MODIFY"]}, ddb("INSERT"), False),
    (
        "ddb metadata present",
        "ddb",
        {"eventSource": ["aws:dynamodb"], "awsRegion": [{"prefix": "us-"}]},
        ddb(),
        True,
    ),
    ("ddb keys", "ddb", {"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "order#"}]}}}}, ddb(), True),
    (
        "ddb typed numeric",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": {"N": [{"numeric": [">", 10]}]}}}},
        ddb(new={"qty": {"N": "12"}}),
        True,
    ),
    (
        "ddb typed numeric below",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": {"N": [{"numeric": [">", 10]}]}}}},
        ddb(new={"qty": {"N": "5"}}),
        False,
    ),
    (
        "ddb typed numeric range, decimals",
        "ddb",
        {"dynamodb": {"NewImage": {"p": {"N": [{"numeric": [">=", 9.5, "<", 10]}]}}}},
        ddb(new={"p": {"N": "9.75"}}),
        True,
    ),
    (
        "ddb typed numeric over a number set",
        "ddb",
        {"dynamodb": {"NewImage": {"s": {"NS": [{"numeric": ["=", 3]}]}}}},
        ddb(new={"s": {"NS": ["1", "3.0"]}}),
        True,
    ),
    (
        "ddb numeric does not apply to S",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": {"S": [{"numeric": [">", 10]}]}}}},
        ddb(new={"qty": {"S": "12"}}),
        False,
    ),
    (
        "ddb untyped value vs typed image",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": [5]}}},
        ddb(new={"qty": {"N": "5"}}),
        False,
    ),
    (
        "ddb number pattern vs N string",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": {"N": [5]}}}},
        ddb(new={"qty": {"N": "5"}}),
        False,
    ),
    (
        "ddb string pattern vs N string",
        "ddb",
        {"dynamodb": {"NewImage": {"qty": {"N": ["5"]}}}},
        ddb(new={"qty": {"N": "5"}}),
        True,
    ),
    (
        "ddb typed numeric only through matches_dynamodb",
        "view",
        {"dynamodb": {"NewImage": {"qty": {"N": [{"numeric": [">", 10]}]}}}},
        ddb(new={"qty": {"N": "12"}}),
        False,
    ),
    (
        "ddb exists false on a missing attribute",
        "ddb",
        {"dynamodb": {"NewImage": {"deletedAt": [{"exists": False}]}}},
        ddb("MODIFY", new={"qty": {"N": "1"}}),
        True,
    ),
    (
        "ddb exists false on a present attribute",
        "ddb",
        {"dynamodb": {"NewImage": {"deletedAt": {"S": [{"exists": False}]}}}},
        ddb("MODIFY", new={"deletedAt": {"S": "2024-01-01"}}),
        False,
    ),
    (
        "ddb OldImage absent on INSERT",
        "ddb",
        {"eventName": ["INSERT"], "dynamodb": {"OldImage": {"qty": {"N": [{"exists": False}]}}}},
        ddb("INSERT", new={"qty": {"N": "1"}}),
        True,
    ),
]


@pytest.mark.parametrize(
    ("kind", "pattern", "record", "expected"),
    [pytest.param(k, p, r, e, id=i) for i, k, p, r, e in CASES],
)
def test_match_table(
    kind: str, pattern: dict[str, Any], record: dict[str, Any], expected: bool
) -> None:
    assert run(kind, pattern, record) is expected


def test_table_is_large_enough() -> None:
    # The issue asks for at least 60 cases; keep the table from shrinking unnoticed.
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES), "case ids must be unique"


# (pattern, operator or path the message must name)
BAD_PATTERNS: list[tuple[str, str]] = [
    ("[]", "pattern must be a JSON object"),
    ('"body"', "pattern must be a JSON object"),
    ("not json", "not valid JSON"),
    ("{}", "empty object"),
    ('{"a": "x"}', "at a"),
    ('{"a": 5}', "at a"),
    ('{"a": []}', "empty matcher array [] at a"),
    ('{"a": [["x"]]}', "at a"),
    ('{"body": {"ip": [{"cidr": "10.0.0.0/24"}]}}', 'unsupported operator "cidr" at body.ip'),
    ('{"a": [{"contains": "x"}]}', 'unsupported operator "contains"'),
    ('{"a": [{"exactly": "x"}]}', 'unsupported operator "exactly"'),
    ('{"a": [{"prefix": {"equals-ignore-case": "x"}}]}', '"prefix" with "equals-ignore-case"'),
    ('{"a": [{"suffix": {"equals-ignore-case": "x"}}]}', '"suffix" with "equals-ignore-case"'),
    ('{"a": [{"prefix": 5}]}', '"prefix" needs a string'),
    ('{"a": [{"equals-ignore-case": 5}]}', '"equals-ignore-case" needs a string'),
    (
        '{"a": [{"anything-but": {"equals-ignore-case": "x"}}]}',
        '"anything-but" with "equals-ignore-case"',
    ),
    ('{"a": [{"anything-but": {"wildcard": "x*"}}]}', '"anything-but" with "wildcard"'),
    ('{"a": [{"anything-but": ["x", 1]}]}', '"anything-but"'),
    ('{"a": [{"anything-but": []}]}', '"anything-but"'),
    ('{"a": [{"anything-but": null}]}', '"anything-but"'),
    ('{"a": [{"anything-but": true}]}', '"anything-but"'),
    ('{"a": [{"anything-but": {"prefix": ""}}]}', '"anything-but" "prefix"'),
    ('{"a": [{"numeric": ["<", 5, ">", 0]}]}', '"numeric"'),
    ('{"a": [{"numeric": [">", 5, "<", 1]}]}', '"numeric" range needs its lower bound below'),
    ('{"a": [{"numeric": [">", 5, "<", 5]}]}', '"numeric" range needs its lower bound below'),
    ('{"a": [{"numeric": ["!=", 5]}]}', '"numeric" has an unknown comparison'),
    ('{"a": [{"numeric": [">", "5"]}]}', '"numeric" ">" must be followed by a number'),
    ('{"a": [{"numeric": [">", true]}]}', '"numeric" ">" must be followed by a number'),
    ('{"a": [{"numeric": ["=", 1, "<", 5]}]}', '"numeric" "="'),
    ('{"a": [{"numeric": [">", 1, "<", 5, "<", 6]}]}', '"numeric" range'),
    ('{"a": [{"numeric": []}]}', '"numeric"'),
    ('{"a": [{"numeric": [">", 1e400]}]}', '"numeric"'),
    ('{"a": [{"exists": "yes"}]}', '"exists" takes true or false'),
    ('{"a": [{"wildcard": "a**b"}]}', '"wildcard" value "a**b" has consecutive'),
    ('{"a": [{"wildcard": "a\\\\b"}]}', '"wildcard"'),
    ('{"a": [{"prefix": "a", "suffix": "b"}]}', 'exactly one operator, got "prefix", "suffix"'),
    ('{"a": [{}]}', "empty matcher object"),
    ('{"$or": [{"a": ["x"]}]}', '"$or" needs an array of at least 2 objects at $or'),
    ('{"$or": {"a": ["x"]}}', '"$or" needs an array'),
    ('{"$or": [{"a": ["x"]}, "b"]}', '"$or" takes only objects at $or[1]'),
    ('{"$or": [{"prefix": ["x"]}, {"b": ["y"]}]}', '"prefix" is an operator name'),
    ('{"a": [NaN]}', "NaN is not a JSON number"),
]


@pytest.mark.parametrize(("pattern", "fragment"), BAD_PATTERNS, ids=[p for p, _ in BAD_PATTERNS])
def test_bad_patterns_are_config_errors(pattern: str, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_pattern_table_is_large_enough() -> None:
    assert len(BAD_PATTERNS) >= 15


def test_error_carries_operator_and_path() -> None:
    with pytest.raises(PatternError) as info:
        compile_pattern('{"body": {"ip": [{"cidr": "10.0.0.0/24"}]}}')
    err = info.value
    assert err.operator == "cidr"
    assert err.path == "body.ip"
    assert err.index is None
    assert str(err) == 'unsupported operator "cidr" at body.ip'


def test_pattern_length_limit() -> None:
    filler = "x" * (MAX_PATTERN_CHARS - len('{"a": [""]}'))
    exactly = json.dumps({"a": [filler]}, separators=(", ", ": "))
    assert len(exactly) == MAX_PATTERN_CHARS
    assert compile_pattern(exactly).matches({"a": filler})
    with pytest.raises(PatternError, match="4097 characters, over Lambda's limit of 4096"):
        compile_pattern(exactly[:-2] + " ]}")


def test_filter_set_is_an_or() -> None:
    fs = FilterSet.compile(['{"body": {"k": ["a"]}}', '{"body": {"k": ["b"]}}'])
    assert fs.matches_sqs(sqs({"k": "a"}))
    assert fs.matches_sqs(sqs({"k": "b"}))
    assert not fs.matches_sqs(sqs({"k": "c"}))
    assert len(fs) == 2
    assert [p.text for p in fs] == ['{"body": {"k": ["a"]}}', '{"body": {"k": ["b"]}}']


def test_empty_filter_set_lets_everything_through() -> None:
    fs = FilterSet.compile([])
    assert not fs
    assert fs.matches_sqs(sqs("anything"))
    assert fs.matches_kinesis(kinesis(b"\x00"))
    assert fs.matches_dynamodb(ddb("REMOVE"))
    assert FilterSet.compile(['{"a": ["x"]}'])


def test_error_index_names_the_filter() -> None:
    with pytest.raises(PatternError) as info:
        FilterSet.compile(['{"a": ["x"]}', '{"a": ["y"]}', '{"a": [{"cidr": "10.0.0.0/8"}]}'])
    assert info.value.index == 2
    assert str(info.value) == 'filters[2]: unsupported operator "cidr" at a'


def test_too_many_filters() -> None:
    ok = ['{"a": ["x"]}'] * MAX_FILTERS
    assert len(FilterSet.compile(ok)) == MAX_FILTERS
    with pytest.raises(PatternError, match="at most 10 filters"):
        FilterSet.compile([*ok, '{"a": ["x"]}'])


def test_source_checks_refuse_plain_stream_payload_patterns() -> None:
    # Lambda rejects a non-JSON data pattern for Kinesis and DynamoDB at create/update time.
    with pytest.raises(PatternError) as info:
        FilterSet.compile(['{"a": ["x"]}', '{"data": [{"prefix": "x"}]}'], source="kinesis")
    assert info.value.index == 1
    assert info.value.path == "data"
    with pytest.raises(PatternError):
        FilterSet.compile(
            ['{"$or": [{"dynamodb": ["x"]}, {"eventName": ["x"]}]}'], source="dynamodb"
        )
    # A plain body pattern is fine for SQS, and a JSON data pattern for Kinesis.
    FilterSet.compile(['{"body": [{"prefix": "x"}]}'], source="sqs")
    FilterSet.compile(['{"data": {"x": ["y"]}}'], source="kinesis")


def test_records_are_not_mutated() -> None:
    fs_sqs = FilterSet.compile(['{"body": {"k": ["v"]}}', '{"attributes": {"x": ["y"]}}'])
    fs_kin = FilterSet.compile(['{"data": {"k": ["v"]}}'])
    fs_ddb = FilterSet.compile(
        ['{"dynamodb": {"NewImage": {"q": {"N": [{"numeric": [">", 1]}]}}}}']
    )
    records = [
        (fs_sqs.matches_sqs, sqs({"k": "v"})),
        (fs_kin.matches_kinesis, kinesis({"k": "v"})),
        (fs_ddb.matches_dynamodb, ddb(new={"q": {"N": "2"}})),
    ]
    for match, record in records:
        before = copy.deepcopy(record)
        assert match(record)
        assert record == before
        # The body/data stay encoded exactly as received.
        assert type(record.get("body", "")) is str


def test_body_decoded_once_and_only_when_referenced(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_decode = filtering._decode_json

    def counting_decode(text: str) -> Any:
        nonlocal calls
        calls += 1
        return real_decode(text)

    five = FilterSet.compile([json.dumps({"body": {"k": [f"v{i}"]}}) for i in range(5)])
    no_body = FilterSet.compile(['{"attributes": {"ApproximateReceiveCount": ["9"]}}'] * 5)
    record = sqs({"k": "nope"})
    monkeypatch.setattr(filtering, "_decode_json", counting_decode)  # what matches_sqs calls
    assert not five.matches_sqs(record)
    assert calls == 1
    assert not no_body.matches_sqs(record)
    assert calls == 1


def test_compiled_pattern_is_immutable_and_comparable() -> None:
    p = compile_pattern('{"a": ["x"]}')
    with pytest.raises(AttributeError):
        p.text = "{}"  # type: ignore[misc]
    assert p == compile_pattern('{"a": ["x"]}')
    assert isinstance(p, CompiledPattern)
    assert "a" in p.top_keys


def test_duplicate_keys_last_wins() -> None:
    # Lambda documents that for a duplicated key the last value applies.
    p = compile_pattern('{"a": ["x"], "a": ["y"]}')
    assert p.matches({"a": "y"})
    assert not p.matches({"a": "x"})


def test_deeply_nested_body_does_not_crash() -> None:
    fs = FilterSet.compile(['{"body": {"a": ["x"]}}'])
    deep = "[" * 5000 + "]" * 5000
    assert not fs.matches_sqs(sqs(deep))


def test_non_mapping_views_are_handled() -> None:
    fs = FilterSet.compile(['{"partitionKey": [{"exists": false}]}'])
    assert fs.matches_kinesis({"eventSource": "aws:kinesis"})
    assert compile_pattern('{"a": [{"exists": false}]}').matches({})


def test_numbers_keep_their_text_only_for_matching() -> None:
    # The decoded body holds numbers as their text; the record itself is never touched.
    fs = FilterSet.compile(['{"body": {"n": [3.0e2], "m": [{"numeric": [">", 1]}]}}'])
    record = sqs('{"n": 3.0e2, "m": 1.5e0}')
    assert fs.matches_sqs(record)
    assert record["body"] == '{"n": 3.0e2, "m": 1.5e0}'
    assert not fs.matches_sqs(sqs('{"n": 300.0, "m": 2}'))


def test_huge_integer_in_a_body() -> None:
    # More digits than int() converts: still JSON, compared by text; `numeric` sees infinity.
    digits = "9" * 5000
    exact = FilterSet.compile(['{"body": {"n": [9]}}'])
    numeric = FilterSet.compile(['{"body": {"n": [{"numeric": [">", 0]}]}}'])
    assert not exact.matches_sqs(sqs(f'{{"n": {digits}}}'))
    assert numeric.matches_sqs(sqs(f'{{"n": {digits}}}'))


def test_python_numbers_in_a_view_stand_for_their_repr() -> None:
    p = compile_pattern('{"a": [1e+16], "b": [7], "c": [0.1]}')
    assert p.matches({"a": 1e16, "b": 7, "c": 0.1})
    assert not p.matches({"a": 1e16, "b": 7.0, "c": 0.1})
    assert not compile_pattern('{"b": [7]}').matches({"b": True})
