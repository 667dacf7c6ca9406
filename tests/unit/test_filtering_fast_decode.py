"""Filter sets whose patterns compare no number by its text decode payloads with orjson: the
match results are those of the text-keeping decoder, for any body (odd numbers, NaN, nesting,
duplicate keys, surrogates, UTF-16 and BOMs in Kinesis data)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.filtering.filter_set import FilterSet

# No exact number and no anything-but of numbers: `numeric`, strings, exists, null, booleans.
PATTERNS = [
    '{"body": {"n": [{"numeric": [">", 1.5]}]}}',
    '{"body": {"n": [{"numeric": ["=", 300]}], "s": [{"prefix": "a"}]}}',
    '{"body": {"s": [{"anything-but": ["x"]}]}}',
    '{"body": {"n": [{"exists": true}], "b": [true, null]}}',
    '{"body": {"d": {"n": [{"numeric": ["<", 0]}]}}}',
    '{"body": {"l": [{"numeric": [">=", -1, "<", 1e20]}]}}',
]
KINESIS = [p.replace('{"body"', '{"data"') for p in PATTERNS]

NUMBER_TEXTS = st.sampled_from(
    [
        "300",
        "300.0",
        "3.0e2",
        "3E2",
        "1.50",
        "-0",
        "-0.0",
        "0.1",
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "18446744073709551616",
        "9007199254740993",
        "NaN",
        "Infinity",
        "-Infinity",
        "2.5",
        "-7",
        "1e-7",
        "0.000001",
    ]
)
SCALARS = st.one_of(
    NUMBER_TEXTS,
    st.sampled_from(['"a1"', '"x"', '"\\ud800"', '"\\ud83d\\ude00"', "true", "false", "null"]),
)
KEYS = st.sampled_from(["n", "s", "b", "d", "l"])


def _value(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return SCALARS
    inner = _value(depth - 1)
    return st.one_of(
        SCALARS,
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(KEYS, inner), max_size=4).map(
            lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"
        ),
    )


BODIES = st.one_of(
    st.lists(st.tuples(KEYS, _value(2)), max_size=5).map(
        lambda kv: "{" + ", ".join(f'"{k}": {v}' for k, v in kv) + "}"
    ),
    st.sampled_from(['{"n": 1', "[1, 2", " {}", '\ufeff{"n": 2}', "plain"]),
)


def _exact(filters: FilterSet) -> FilterSet:
    """The same patterns, decoded keeping every number's text."""
    return FilterSet([dataclasses.replace(p, number_text=True) for p in filters])


def _sqs(body: str) -> dict[str, Any]:
    return {"body": body, "attributes": {}, "messageAttributes": {}}


def _kinesis(data: bytes) -> dict[str, Any]:
    return {"kinesis": {"data": base64.b64encode(data).decode(), "partitionKey": "k"}}


FAST_SQS = FilterSet.compile(PATTERNS)
FAST_KINESIS = FilterSet.compile(KINESIS, source="kinesis")


def test_these_patterns_take_the_fast_decoder() -> None:
    assert not any(p.number_text for p in FAST_SQS)
    assert FilterSet.compile(['{"body": {"n": [300]}}']).patterns[0].number_text
    assert FilterSet.compile(['{"body": {"n": [{"anything-but": [1]}]}}']).patterns[0].number_text


@settings(max_examples=400)
@given(body=BODIES, index=st.integers(0, len(PATTERNS) - 1))
def test_sqs_matches_are_those_of_the_text_keeping_decoder(body: str, index: int) -> None:
    fast = FilterSet([FAST_SQS.patterns[index]])
    assert fast.matches_sqs(_sqs(body)) == _exact(fast).matches_sqs(_sqs(body))


@settings(max_examples=400)
@given(
    body=BODIES,
    encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]),
    index=st.integers(0, len(KINESIS) - 1),
)
def test_kinesis_matches_are_those_of_the_text_keeping_decoder(
    body: str, encoding: str, index: int
) -> None:
    data = body.encode(encoding, "surrogatepass")
    fast = FilterSet([FAST_KINESIS.patterns[index]])
    assert fast.matches_kinesis(_kinesis(data)) == _exact(fast).matches_kinesis(_kinesis(data))


@pytest.mark.parametrize("depth", [400, 900, 990, 1000, 1020, 1030, 5000])
def test_deep_nesting_decides_as_the_text_keeping_decoder(depth: int) -> None:
    # orjson nests to 1,024 levels, the json module to its recursion limit (about 1,000 less
    # the caller's stack): a body between the two must not match on one path only.
    body = '{"l": ' + "[" * depth + "1" + "]" * depth + "}"
    fast_sqs = FilterSet([FAST_SQS.patterns[5]])
    fast_kinesis = FilterSet([FAST_KINESIS.patterns[5]])
    assert fast_sqs.matches_sqs(_sqs(body)) == _exact(fast_sqs).matches_sqs(_sqs(body))
    data = _kinesis(body.encode())
    assert fast_kinesis.matches_kinesis(data) == _exact(fast_kinesis).matches_kinesis(data)
