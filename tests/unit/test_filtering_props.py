"""Property tests: an ``anything-but`` and its positive twin partition the scalar values.

For a field that is present and holds a scalar (string, number, boolean or null), exactly one
of ``[v1, v2, ...]`` and ``[{"anything-but": [v1, v2, ...]}]`` matches; for a missing field
neither does. (A record *array* can satisfy both, since arrays match element-wise: that case is
pinned by an example below rather than by the property.)
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from poller.filtering.filter_set import FilterSet, compile_pattern

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
numbers = st.one_of(st.integers(min_value=-(10**12), max_value=10**12), finite_floats)
strings = st.text(max_size=12)
scalars = st.one_of(strings, numbers, st.booleans(), st.none())

string_lists = st.lists(strings, min_size=1, max_size=5)
number_lists = st.lists(numbers, min_size=1, max_size=5)


def _twins(values: list[Any]) -> tuple[Any, Any]:
    positive = compile_pattern(json.dumps({"f": values}))
    negative = compile_pattern(json.dumps({"f": [{"anything-but": values}]}))
    return positive, negative


@st.composite
def values_and_scalar(draw: st.DrawFn) -> tuple[list[Any], Any]:
    values = draw(st.one_of(string_lists, number_lists))
    # Bias towards the listed values so both outcomes are exercised often.
    scalar = draw(st.one_of(st.sampled_from(values), scalars))
    return values, scalar


@given(values_and_scalar())
def test_anything_but_and_twin_exactly_one_for_scalars(case: tuple[list[Any], Any]) -> None:
    values, scalar = case
    positive, negative = _twins(values)
    record = {"f": scalar}
    assert positive.matches(record) != negative.matches(record)


@given(st.one_of(string_lists, number_lists))
def test_anything_but_and_twin_neither_on_missing(values: list[Any]) -> None:
    positive, negative = _twins(values)
    assert not positive.matches({"g": 1})
    assert not negative.matches({"g": 1})


@given(st.one_of(numbers, strings))
def test_single_value_anything_but_and_twin(value: Any) -> None:
    # The scalar form {"anything-but": v} behaves like the one-element list.
    positive = compile_pattern(json.dumps({"f": [value]}))
    negative = compile_pattern(json.dumps({"f": [{"anything-but": value}]}))
    assert positive.matches({"f": value}) and not negative.matches({"f": value})


@given(values_and_scalar())
def test_twins_in_a_json_sqs_body(case: tuple[list[Any], Any]) -> None:
    # Same property through the SQS path, where the value arrives as JSON text in the body.
    values, scalar = case
    positive = FilterSet.compile([json.dumps({"body": {"f": values}})])
    negative = FilterSet.compile([json.dumps({"body": {"f": [{"anything-but": values}]}})])
    record = {"messageId": "1", "body": json.dumps({"f": scalar})}
    assert positive.matches_sqs(record) != negative.matches_sqs(record)


@given(st.text(min_size=1, max_size=6), scalars)
def test_prefix_and_anything_but_prefix(prefix: str, scalar: Any) -> None:
    positive = compile_pattern(json.dumps({"f": [{"prefix": prefix}]}))
    negative = compile_pattern(json.dumps({"f": [{"anything-but": {"prefix": prefix}}]}))
    record = {"f": scalar}
    assert positive.matches(record) != negative.matches(record)


@given(st.text(min_size=1, max_size=6), st.text(max_size=6))
def test_prefix_twins_on_strings_that_start_with_it(prefix: str, rest: str) -> None:
    positive = compile_pattern(json.dumps({"f": [{"prefix": prefix}]}))
    negative = compile_pattern(json.dumps({"f": [{"anything-but": {"prefix": prefix}}]}))
    record = {"f": prefix + rest}
    assert positive.matches(record)
    assert not negative.matches(record)


@given(st.text(min_size=1, max_size=6), scalars)
def test_suffix_and_anything_but_suffix(suffix: str, scalar: Any) -> None:
    positive = compile_pattern(json.dumps({"f": [{"suffix": suffix}]}))
    negative = compile_pattern(json.dumps({"f": [{"anything-but": {"suffix": suffix}}]}))
    record = {"f": scalar}
    assert positive.matches(record) != negative.matches(record)


def test_record_array_can_satisfy_both_twins() -> None:
    # Element-wise array matching (EventBridge): "a" satisfies the twin, "b" the anything-but.
    positive, negative = _twins(["a"])
    assert positive.matches({"f": ["a", "b"]})
    assert negative.matches({"f": ["a", "b"]})


@given(st.integers(min_value=-(10**9), max_value=10**9), st.sampled_from([".0", "e0", ".00e0"]))
def test_numbers_match_by_text_unless_numeric(n: int, tail: str) -> None:
    # ESM-SEMANTICS §1.3: 300 and 300.0 are different without `numeric`, equal with it.
    exact = FilterSet.compile([f'{{"body": {{"n": [{n}]}}}}'])
    numeric = FilterSet.compile([f'{{"body": {{"n": [{{"numeric": ["=", {n}]}}]}}}}'])
    same = {"messageId": "1", "body": f'{{"n": {n}}}'}
    other_form = {"messageId": "1", "body": f'{{"n": {n}{tail}}}'}
    assert exact.matches_sqs(same)
    assert not exact.matches_sqs(other_form)
    assert numeric.matches_sqs(same)
    assert numeric.matches_sqs(other_form)
