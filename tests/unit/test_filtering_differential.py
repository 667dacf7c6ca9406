"""Differential test of the record path: ``FilterSet.matches_sqs``/``_kinesis``/``_dynamodb``
decide as a plain reference does, for generated pattern sets and records.

The reference is written plainly here: the payload decoded by the json module keeping every
number's text, then each pattern's node tree (``ObjectNode.match_top``/``match_dict``, the
reference semantics the matcher is generated from). The set under test goes through all it does
on the record path: the generated function, orjson where no pattern compares a number by its
text, the nesting bound, the lazy decoding. Bodies are written as raw JSON text so that the
same value comes in several spellings: escapes (``\\u00e9``, ``\\/``, ``\\"``), unicode, lone
surrogates, numbers as ``1e3``/``1000``/``1.0``/``-0``/huge, nested arrays, duplicate keys,
whitespace; and bodies that are not JSON objects at all.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from poller.filtering.filter_set import FilterSet, PatternError
from poller.filtering.nodes import MISSING, JsonFloat, JsonInt
from tests.benchmarks.bench_filtering import FILTERS, make_records


class Raw(str):
    """Text written into the JSON as it is (a number's spelling)."""


def _encode_string(s: str, how: int) -> str:
    if how == 0:
        return json.dumps(s)
    if how == 1:
        return json.dumps(s, ensure_ascii=False)
    # Every character escaped, and `/` as `\/`: the same string, spelled differently.
    return '"' + "".join(f"\\u{ord(c):04x}" if c != "/" else "\\/" for c in s) + '"'


def _text(value: Any, how: int = 0, space: str = "") -> str:
    """JSON text of ``value``; ``Raw`` strings are written as they are."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return _encode_string(value, how)
    if isinstance(value, list):
        return "[" + f",{space}".join(_text(v, how, space) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{_encode_string(k, how)}:{space}{_text(v, how, space)}" for k, v in value.items()
        )
        return "{" + f",{space}".join(items) + "}"
    return json.dumps(value)


WORDS = ["", "a", "ab", "ORD-9", "ORD-91", "é", "日本", "😀", 'q"t', "b\\s", "l\nb", "/x", "\ud800"]
NUMBERS = ["0", "-0", "1", "1.0", "1e3", "1E3", "1000", "1000.0", "10e2", "-1.5", "2.5", "300"]
NUMBERS += ["3.0e2", "1e400", "123456789012345678901234567890", "0.1", "-0.0", "9.99"]
KEYS = ["k", "n", "s", "é", "a b"]

words = st.sampled_from(WORDS)
numbers = st.sampled_from(NUMBERS).map(Raw)
scalars = st.one_of(words, numbers, st.sampled_from([None, True, False]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
NOT_JSON = ["", " ", "plain text", "ORD-9", "{not json", "[1,", "NaN", '"a"', "123", "null"]
NOT_JSON += ["[" * 600 + "]" * 600, '{"k": NaN}', '{"k": 1}garbage', "\ufeff{}"]


@st.composite
def bodies(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(NOT_JSON))
    value: Any = draw(st.lists(values, max_size=3)) if kind == 1 else draw(objects)
    if draw(st.booleans()):
        # Past the length below which no nesting check is made, as a 1 KB body is.
        pad = "x" * draw(st.sampled_from([990, 1000, 1100, 1400, 3000]))
        value = [*value, pad] if kind == 1 else {**value, "pad": pad}
    space = draw(st.sampled_from(["", " ", "\n  "]))
    text = _text(value, draw(st.integers(0, 2)), space)
    if kind > 1 and draw(st.booleans()):
        # A duplicate key before the others: the last one wins.
        first = '{"k":' + _text(draw(values)) + ("," if value else "")
        text = first + text[1:]
    return draw(st.sampled_from(["", " ", "\n"])) + text


pattern_numbers = st.sampled_from(["0", "-0", "1", "1.0", "1e3", "1000", "2.5", "300", "3.0e2"])
exact_matchers = st.one_of(words, pattern_numbers.map(Raw), st.sampled_from([None, True, False]))
operators = st.one_of(
    words.filter(bool).map(lambda w: {"prefix": w}),
    words.filter(bool).map(lambda w: {"suffix": w}),
    words.map(lambda w: {"equals-ignore-case": w}),
    st.sampled_from(["O*9", "*b", "*", "é*"]).map(lambda w: {"wildcard": w}),
    st.booleans().map(lambda b: {"exists": b}),
    st.lists(words, min_size=1, max_size=3).map(lambda ws: {"anything-but": ws}),
    st.lists(pattern_numbers.map(Raw), min_size=1, max_size=2).map(lambda n: {"anything-but": n}),
    words.filter(bool).map(lambda w: {"anything-but": {"prefix": w}}),
    pattern_numbers.map(lambda n: {"numeric": [">", Raw(n)]}),
    pattern_numbers.map(lambda n: {"numeric": [">=", Raw(n), "<", 5000]}),
    pattern_numbers.map(lambda n: {"numeric": ["=", Raw(n)]}),
)
# Sets without exact numbers decode with orjson: half of the leaves have none.
leaves = st.lists(st.one_of(exact_matchers, operators), min_size=1, max_size=3)
plain_leaves = st.lists(operators, min_size=1, max_size=3)


def _pattern_objects(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    child = st.one_of(leaf, st.dictionaries(st.sampled_from(KEYS), leaf, min_size=1, max_size=2))
    plain = st.dictionaries(st.sampled_from(KEYS), child, min_size=1, max_size=3)
    with_or = st.tuples(plain, st.lists(plain, min_size=2, max_size=2)).map(
        lambda t: {**t[0], "$or": t[1]}
    )
    return st.one_of(plain, with_or)


@st.composite
def pattern_sets(draw: st.DrawFn, key: str, plain_payload: bool = True) -> list[str]:
    leaf = leaves if draw(st.booleans()) else plain_leaves
    payloads = st.one_of(_pattern_objects(leaf), leaf) if plain_payload else _pattern_objects(leaf)
    out = []
    for _ in range(draw(st.integers(1, 5))):
        payload = draw(payloads) if draw(st.integers(0, 5)) else None
        pattern: dict[str, Any] = {} if payload is None else {key: payload}
        if payload is None or draw(st.booleans()):
            pattern["attributes"] = {"ApproximateReceiveCount": draw(leaf)}
        out.append(_text(pattern))
    return out


def _compile(patterns: list[str], source: Any) -> FilterSet:
    try:
        return FilterSet.compile(patterns, source=source)
    except PatternError:
        assume(False)
        raise


def _reference_decode(raw: str | bytes) -> Any:
    # What poller documents for a payload: a JSON object or array is decoded, numbers keep
    # their text; anything else (or what does not decode) stays as it is.
    start = raw.lstrip(" \t\r\n" if isinstance(raw, str) else b" \t\r\n")[:1]
    if start in ("{", "[", b"{", b"["):
        try:
            return json.loads(raw, parse_int=JsonInt, parse_float=JsonFloat)
        except (ValueError, RecursionError):
            pass
    return raw


def reference_sqs(filters: FilterSet, record: Mapping[str, Any]) -> bool:
    if not filters:
        return True
    body = record.get("body", MISSING)
    payload = _reference_decode(body) if type(body) is str and body else body
    return any(p._root.match_top(record, "body", payload) for p in filters)


def reference_kinesis(filters: FilterSet, record: Mapping[str, Any]) -> bool:
    if not filters:
        return True
    view = record.get("kinesis")
    view = view if isinstance(view, Mapping) else {}
    data = view.get("data", MISSING)
    payload = data
    if type(data) is str:
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raw = None
        if raw is not None:
            payload = _reference_decode(raw)
            if payload is raw:
                try:
                    payload = raw.decode("utf-8")
                except UnicodeDecodeError:
                    payload = data
    return any(p._root.match_top(view, "data", payload) for p in filters)


def _sqs_record(body: str | None, count: str) -> dict[str, Any]:
    record: dict[str, Any] = {"attributes": {"ApproximateReceiveCount": count}}
    if body is not None:
        record["body"] = body
    return record


counts = st.sampled_from(["1", "2", "1.0"])


@settings(max_examples=400, deadline=None)
@given(
    patterns=pattern_sets("body"),
    records=st.lists(st.tuples(st.one_of(bodies(), st.none()), counts), min_size=1, max_size=8),
)
def test_sqs_decides_as_the_reference(
    patterns: list[str], records: list[tuple[str | None, str]]
) -> None:
    filters = _compile(patterns, "sqs")
    for body, count in records:
        record = _sqs_record(body, count)
        assert filters.matches_sqs(record) == reference_sqs(filters, record), (patterns, record)


@settings(max_examples=200, deadline=None)
@given(
    patterns=pattern_sets("data", plain_payload=False),
    records=st.lists(
        st.tuples(bodies(), st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "latin-1"])),
        min_size=1,
        max_size=6,
    ),
)
def test_kinesis_decides_as_the_reference(
    patterns: list[str], records: list[tuple[str, str]]
) -> None:
    filters = _compile([p.replace('"attributes"', '"partitionKey"') for p in patterns], "kinesis")
    for body, encoding in records:
        try:
            data = base64.b64encode(body.encode(encoding, "surrogatepass")).decode()
        except UnicodeEncodeError:
            data = body  # not base64: the data stays as it is
        for view in ({"data": data, "partitionKey": {"ApproximateReceiveCount": "1"}}, None):
            record = {"kinesis": view}
            assert filters.matches_kinesis(record) == reference_kinesis(filters, record), record


ddb_values = st.one_of(
    words.map(lambda w: {"S": w}),
    st.sampled_from([*NUMBERS, "abc", "1e3", " 5"]).map(lambda n: {"N": n}),
    st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3).map(lambda ns: {"NS": ns}),
    st.booleans().map(lambda b: {"BOOL": b}),
)


@settings(max_examples=200, deadline=None)
@given(
    leaf=leaves,
    type_key=st.sampled_from(["N", "S", "NS"]),
    images=st.lists(st.dictionaries(st.sampled_from(KEYS), ddb_values, max_size=3), max_size=6),
)
def test_dynamodb_decides_as_the_reference(
    leaf: list[Any], type_key: str, images: list[dict[str, Any]]
) -> None:
    pattern = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"k": {type_key: leaf}}}}
    filters = _compile([_text(pattern)], "dynamodb")
    for image in images:
        for name in ("INSERT", "MODIFY"):
            record = {"eventName": name, "dynamodb": {"NewImage": image}}
            expected = any(p._ddb_root.match_dict(record) for p in filters)
            assert filters.matches_dynamodb(record) == expected, record


def test_the_benchmark_records_decide_as_the_reference() -> None:
    filters = FilterSet.compile(FILTERS, source="sqs")
    records = make_records(3000, seed=11)
    results = [filters.matches_sqs(r) for r in records]
    assert results == [reference_sqs(filters, r) for r in records]
    assert 0 < sum(results) < len(results)  # both outcomes are met


@pytest.mark.parametrize("source", ["sqs", "kinesis", "dynamodb"])
def test_an_empty_set_passes_everything(source: str) -> None:
    filters = FilterSet()
    match = getattr(filters, f"matches_{source}")
    assert match({}) and match({"body": "x", "kinesis": {"data": "!"}})
