"""The record path's closures decide as the matcher nodes do, for any pattern and any value;
the cheap nesting bound that picks orjson never lets a too-deep payload through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.filtering import filter_set as filtering
from poller.filtering.closures import dict_matcher, leaf_matcher, top_matcher
from poller.filtering.filter_set import compile_pattern
from poller.filtering.nodes import MISSING, JsonFloat, JsonInt, LeafNode

WORDS = st.sampled_from(["", "a", "ab", "abc", "B", "ba", "x*y", "é", "1"])
NUMBERS = st.sampled_from([0, 1, -1, 2.5, 10, 300, 1e3, 1000000])
MATCHERS = st.one_of(
    WORDS,
    NUMBERS,
    st.sampled_from([None, True, False]),
    WORDS.filter(bool).map(lambda w: {"prefix": w}),
    WORDS.filter(bool).map(lambda w: {"suffix": w}),
    WORDS.map(lambda w: {"equals-ignore-case": w}),
    st.sampled_from(["a*", "*b", "a*c", "*"]).map(lambda w: {"wildcard": w}),
    st.booleans().map(lambda b: {"exists": b}),
    st.lists(WORDS, min_size=1, max_size=3).map(lambda ws: {"anything-but": ws}),
    st.lists(NUMBERS, min_size=1, max_size=3).map(lambda ns: {"anything-but": ns}),
    WORDS.filter(bool).map(lambda w: {"anything-but": {"prefix": w}}),
    NUMBERS.map(lambda n: {"numeric": [">", n]}),
    NUMBERS.map(lambda n: {"numeric": [">=", n, "<", n + 10]}),
    NUMBERS.map(lambda n: {"numeric": ["=", n]}),
)
LEAVES = st.lists(MATCHERS, min_size=1, max_size=3)
KEYS = st.sampled_from(["a", "b", "N"])


def _objects(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    child: st.SearchStrategy[Any] = LEAVES if depth == 0 else st.one_of(LEAVES, _objects(depth - 1))
    plain = st.dictionaries(KEYS, child, min_size=1, max_size=2)
    branch = st.dictionaries(KEYS, LEAVES, min_size=1, max_size=2)
    with_or = st.tuples(plain, st.lists(branch, min_size=2, max_size=2)).map(
        lambda t: {**t[0], "$or": t[1]}
    )
    return st.one_of(plain, with_or)


SCALARS = st.one_of(
    WORDS,
    NUMBERS,
    st.sampled_from([None, True, False, JsonInt("300"), JsonFloat("2.5"), JsonFloat("1e3")]),
    st.sampled_from(["10", "2.5", "abc"]).map(type("S", (str,), {})),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=2).map(tuple),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=6,
)
RECORDS = st.dictionaries(st.sampled_from(["a", "b", "N", "body"]), VALUES, max_size=4)


# Every kind of value a leaf can meet: each JSON scalar type, the decoders' number types, a
# str subclass, arrays (nested, empty, of objects), a tuple, an object and an absent key.
EVERY_VALUE = [
    *["", "a", "ab", "abc", "B", "ba", "é", "1", "10", "2.5"],
    *[0, 1, -1, 2.5, 10, 300, 1e3, 1000000, 10**30, 0.1],
    *[None, True, False, JsonInt("300"), JsonInt("10"), JsonFloat("2.5"), JsonFloat("1e3")],
    type("S", (str,), {})("ab"),
    ["x", 10],
    [["ab"]],
    [],
    [{"a": 1}],
    ("ab", 2.5),
    {"a": "ab"},
    MISSING,
]


def _variants(d: dict[str, Any]) -> list[dict[str, Any]]:
    """`d`, and `d` with each pattern key set to each value of EVERY_VALUE (or removed): a
    random record alone seldom comes close enough to a pattern to tell two matchers apart."""
    out = [d]
    for key in ("a", "b", "N"):
        for value in EVERY_VALUE:
            variant = {k: v for k, v in d.items() if k != key}
            if value is not MISSING:
                variant[key] = value
            out.append(variant)
    return out


@settings(max_examples=300)
@given(pattern=_objects(2), record=RECORDS, typed=st.booleans())
def test_dict_matcher_decides_as_the_node(
    pattern: dict[str, Any], record: dict[str, Any], typed: bool
) -> None:
    compiled = compile_pattern(json.dumps(pattern))
    root = compiled._ddb_root if typed else compiled._root
    match = dict_matcher(root)
    for variant in _variants(record):
        assert match(variant) == root.match_dict(variant), variant


@settings(max_examples=300)
@given(
    pattern=st.one_of(st.just({}), _objects(2)),  # {}: a pattern on the payload alone
    body=st.one_of(_objects(1).map(lambda p: {"body": p}), LEAVES.map(lambda leaf: {"body": leaf})),
    view=RECORDS,
    payload=st.one_of(VALUES, RECORDS),
)
def test_top_matcher_decides_as_the_node(
    pattern: dict[str, Any], body: dict[str, Any], view: dict[str, Any], payload: Any
) -> None:
    root = compile_pattern(json.dumps({**pattern, **body}))._root
    match = top_matcher(root, "body")
    payloads = _variants(payload) if type(payload) is dict else [payload]
    for variant in payloads:
        assert match(view, variant) == root.match_top(view, "body", variant), variant
    for variant in _variants(view):
        assert match(variant, payload) == root.match_top(variant, "body", payload), variant


# The shapes the closures fuse into fewer calls, each met by payloads one key away from a
# match: a random pattern is seldom one of them.
FUSED_SHAPES = [
    '{"body": {"a": ["ab"]}}',
    '{"body": {"a": ["ab"], "b": [{"numeric": [">", 1]}]}}',
    '{"body": {"a": {"b": [{"prefix": "a"}]}}}',
    '{"body": {"a": {"b": ["abc"]}, "N": [{"exists": true}]}}',
    '{"body": {"a": ["ab"]}, "b": [{"exists": false}]}',
    '{"body": {"a": [{"exists": false}]}, "b": ["x"]}',
    '{"body": {"a": [null]}}',
    '{"body": {"a": ["ab"], "b": [10]}, "N": ["1"]}',
    '{"body": ["ab", {"exists": false}]}',
]
BASE_PAYLOADS: list[Any] = [
    {},
    {"a": "ab", "b": 10, "N": "1"},
    {"a": {"b": "abc"}, "N": 0},
    [{"a": "ab", "b": 2}],
    [],
    "ab",
    MISSING,
]


@pytest.mark.parametrize("pattern", FUSED_SHAPES)
def test_fused_shapes_decide_as_the_node(pattern: str) -> None:
    root = compile_pattern(pattern)._root
    match = top_matcher(root, "body")
    for base in BASE_PAYLOADS:
        for payload in _variants(base) if type(base) is dict else [base]:
            for view in _variants({"b": "x", "N": "1"}):
                assert match(view, payload) == root.match_top(view, "body", payload), payload
            nested = {"a": payload}
            assert dict_matcher(root)(nested) == root.match_dict(nested)


@settings(max_examples=300)
@given(leaf=LEAVES, typed=st.booleans())
def test_leaf_matcher_decides_as_the_node(leaf: list[Any], typed: bool) -> None:
    compiled = compile_pattern(json.dumps({"N": leaf}))
    ((_, node),) = (compiled._ddb_root if typed else compiled._root).entries
    assert isinstance(node, LeafNode)
    match = leaf_matcher(node)
    for value in EVERY_VALUE:
        assert match(value) == node.match(value), value


@pytest.mark.parametrize("innermost", ["", "1", "[]", "{}"])
@pytest.mark.parametrize("arrays_outside", [True, False])
def test_nesting_bound_never_passes_a_deep_text(innermost: str, arrays_outside: bool) -> None:
    # The shortest texts for their depth, `[` levels and `{"":` levels without spaces, in
    # every mix, just at and past the depth where orjson is not used.
    for depth in (filtering._ORJSON_MAX_DEPTH, filtering._ORJSON_MAX_DEPTH + 1):
        levels = depth - (1 if innermost in ("[]", "{}") else 0)
        for arrays in range(levels + 1):
            kinds = [True] * arrays + [False] * (levels - arrays)
            if not arrays_outside:
                kinds.reverse()
            opening = "".join("[" if is_array else '{"":' for is_array in kinds)
            closing = "".join("]" if is_array else "}" for is_array in reversed(kinds))
            text = opening + innermost + closing
            assert not filtering._shallow(text), text
            for encoding in ("utf-8", "utf-16-le", "utf-32"):
                assert not filtering._shallow(text.encode(encoding))


def test_nesting_bound_passes_ordinary_bodies() -> None:
    # A 1 KB object with a few arrays, the common case, still takes orjson.
    body = json.dumps({"items": [[1, 2], [3]], "note": "x" * 1000})
    assert filtering._shallow(body) and filtering._shallow(body.encode())
