"""The generated matcher of a filter set decides as the matcher nodes do, for any pattern and
any value, nesting past what it writes out inline included; the cheap nesting bound that picks
orjson never lets a too-deep payload through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.filtering import filter_set as filtering
from poller.filtering import generate
from poller.filtering.filter_set import compile_pattern
from poller.filtering.generate import record_matcher
from poller.filtering.nodes import MISSING, JsonFloat, JsonInt, LeafNode, ObjectNode

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


def _dict_matcher(root: ObjectNode) -> generate.RecordMatcher:
    return record_matcher([root])


def _top_matcher(root: ObjectNode) -> Any:
    # The payload handed over as it is: `decode` returns it, whatever the view's `body` holds.
    given: list[Any] = []
    generated = record_matcher([root], payload_key="body", decode=lambda raw: given[-1])

    def match(view: dict[str, Any], payload: Any) -> bool:
        given.append(payload)
        return generated(view)

    return match


@settings(max_examples=300, deadline=None)
@given(pattern=_objects(2), record=RECORDS, typed=st.booleans())
def test_dict_matcher_decides_as_the_node(
    pattern: dict[str, Any], record: dict[str, Any], typed: bool
) -> None:
    compiled = compile_pattern(json.dumps(pattern))
    root = compiled._ddb_root if typed else compiled._root
    match = _dict_matcher(root)
    for variant in _variants(record):
        assert match(variant) == root.match_dict(variant), variant


@settings(max_examples=300, deadline=None)
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
    match = _top_matcher(root)
    payloads = _variants(payload) if type(payload) is dict else [payload]
    for variant in payloads:
        assert match(view, variant) == root.match_top(view, "body", variant), variant
    for variant in _variants(view):
        assert match(variant, payload) == root.match_top(variant, "body", payload), variant


# Shapes the generated code writes in particular ways (a payload leaf, a payload object beside
# view keys, `exists` on both sides), each met by payloads one key away from a match: a random
# pattern is seldom one of them.
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
def test_particular_shapes_decide_as_the_node(pattern: str) -> None:
    root = compile_pattern(pattern)._root
    match = _top_matcher(root)
    for base in BASE_PAYLOADS:
        for payload in _variants(base) if type(base) is dict else [base]:
            for view in _variants({"b": "x", "N": "1"}):
                assert match(view, payload) == root.match_top(view, "body", payload), payload
            nested = {"a": payload}
            assert _dict_matcher(root)(nested) == root.match_dict(nested)


@settings(max_examples=300, deadline=None)
@given(leaf=LEAVES, typed=st.booleans())
def test_leaf_matcher_decides_as_the_node(leaf: list[Any], typed: bool) -> None:
    compiled = compile_pattern(json.dumps({"N": leaf}))
    ((_, node),) = (compiled._ddb_root if typed else compiled._root).entries
    assert isinstance(node, LeafNode)
    match = record_matcher([compiled._ddb_root if typed else compiled._root])
    for value in EVERY_VALUE:
        record = {} if value is MISSING else {"N": value}
        assert match(record) == node.match(value), value


@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(_objects(1), min_size=2, max_size=4), record=RECORDS)
def test_a_set_passes_a_record_any_pattern_passes(
    patterns: list[dict[str, Any]], record: dict[str, Any]
) -> None:
    roots = [compile_pattern(json.dumps(p))._root for p in patterns]
    match = record_matcher(roots)
    for variant in _variants(record):
        assert match(variant) == any(root.match_dict(variant) for root in roots), variant


def _nested(depth: int, innermost: Any, key: str = "a") -> Any:
    value = innermost
    for _ in range(depth):
        value = {key: value}
    return value


@pytest.mark.parametrize("depth", [1, generate._MAX_LEVEL - 1, generate._MAX_LEVEL, 40])
def test_nesting_past_the_inline_levels_decides_as_the_node(depth: int) -> None:
    # Objects, and `$or` groups inside `$or` groups, deeper than the generated code writes out.
    leaf = ["x", {"exists": False}]
    ors: Any = {"a": ["x"]}
    for _ in range(depth):
        ors = {"$or": [ors, {"b": [{"prefix": "y"}]}]}
    for pattern in (_nested(depth, leaf), ors, {"body": _nested(depth, leaf)}):
        root = compile_pattern(json.dumps(pattern))._root
        records = [_nested(d, v) for d in (depth - 1, depth, depth + 1) for v in ("x", "z", [])]
        records = [r for r in records if type(r) is dict]
        records += [{"b": "yes"}, {"a": "x"}, {"b": "no"}, {}]
        for record in records:
            assert _dict_matcher(root)(record) == root.match_dict(record), record
            if "a" in record:
                payload = record["a"]
                match = _top_matcher(root)({"body": "raw"}, payload)
                assert match == root.match_top({"body": "raw"}, "body", payload), record


def test_the_deepest_pattern_lambda_takes_compiles() -> None:
    # As deep as 4,096 characters go: Python never sees more than the inline levels.
    depth = (4096 - 7) // 6
    pattern = '{"a":' * depth + '["x"]' + "}" * depth
    root = compile_pattern(pattern)._root
    assert record_matcher([root])(_nested(depth, "x"))
    assert not record_matcher([root])(_nested(depth, "y"))


def test_pattern_text_is_data_never_code() -> None:
    # Keys and values reach the generated function as values: quotes, backslashes, newlines
    # and Python syntax in them are matched literally.
    odd = ['"', "'", "\\", "\n", "a'); raise SystemExit('", '__import__("os")', "{c0}", "é"]
    for key in odd:
        root = compile_pattern(json.dumps({key: [key, {"prefix": key}]}))._root
        match = record_matcher([root])
        assert match({key: key}) and match({key: key + "!"})
        assert not match({key: "other"}) and not match({"other": key})


@pytest.mark.parametrize("view", [None, "text", [], {"data": "eA=="}, {"partitionKey": "k"}])
def test_within_an_object_of_the_record(view: Any) -> None:
    # The Kinesis shape: patterns see the record's `kinesis` object, or {} when it is none.
    root = compile_pattern('{"partitionKey": [{"exists": false}]}')._root
    match = record_matcher([root], within="kinesis")
    expected = root.match_dict(view if isinstance(view, dict) else {})
    assert match({"kinesis": view}) == expected
    assert match({}) == root.match_dict({})


def test_the_payload_is_decoded_once_and_only_when_read() -> None:
    decoded: list[Any] = []

    def decode(raw: Any) -> Any:
        decoded.append(raw)
        return {"k": raw}

    roots = [
        compile_pattern(p)._root
        for p in (
            '{"a": ["1"], "body": {"k": ["x"]}}',
            '{"body": {"k": ["y"]}}',
            '{"body": {"k": ["z"]}}',
        )
    ]
    match = record_matcher(roots, payload_key="body", decode=decode)
    assert not match({"a": "1", "body": "w"})
    assert decoded == ["w"]
    assert match({"body": "z"})
    assert decoded == ["w", "z"]
    # The first pattern's other key fails first, and so do the other two on `b`: none decodes.
    only_a = record_matcher(roots[:1], payload_key="body", decode=decode)
    assert not only_a({"a": "2", "body": "x"})
    assert decoded == ["w", "z"]


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


@pytest.mark.parametrize("objects", [0, 1, 4])
def test_nesting_bound_never_passes_a_deep_text_with_gaps(objects: int) -> None:
    # Deep texts a little longer than the shortest, the extra characters (spaces, here)
    # spread evenly between the opening brackets: the shortest runs of adjacent ones, for
    # the run test that spares 1 KB bodies a count.
    for depth in (filtering._ORJSON_MAX_DEPTH, filtering._ORJSON_MAX_DEPTH + 1):
        for extra in [*range(60), 100, 250, 499, 500, 1000, 1600]:
            openers = ['{"":'] * objects + ["["] * (depth - objects)
            gaps = [0] * depth
            for i in range(extra):
                gaps[i * depth // extra] += 1
            opening = "".join(" " * gap + opener for gap, opener in zip(gaps, openers, strict=True))
            closing = "".join("}" if o == '{"":' else "]" for o in reversed(openers))
            text = opening + closing
            json.loads(text)  # JSON, as deep as it says
            assert not filtering._shallow(text), (depth, extra)
