"""FilterCriteria: Lambda's event-pattern language for event source mappings.

Patterns are compiled once, at config load, into matcher trees (``filtering.compile``,
``filtering.nodes``); matching a record never parses the pattern again. What a pattern is
matched against depends on the source, as in Lambda:

* SQS: the Lambda SQS record, with ``body`` parsed as JSON when it is a JSON object or array.
  A JSON (object) pattern on a plain-text body does not match; a plain pattern such as
  ``"body": [{"prefix": "ERROR"}]`` matches a plain body and not a JSON one.
* Kinesis: the record's ``kinesis`` object with ``data`` base64-decoded and parsed as JSON;
  patterns name its fields at the top level (``{"data": {...}, "partitionKey": [...]}``), as the
  Lambda guide's Kinesis examples do.
* DynamoDB: the whole record (``eventName``, ``dynamodb``, ...), where ``numeric`` also applies
  to the number strings of ``{"N": "12"}`` attribute values.

Numbers match exactly by their JSON text, as written (300, 300.0 and 3.0e2 are three values);
only ``numeric`` compares by value, as Lambda documents. Decoded payloads therefore keep each
number's text (``JsonInt``/``JsonFloat`` in ``filtering.nodes``), and patterns keep theirs.

The record passed in is never modified; the function is invoked with the original record.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from poller.filtering.compile import (
    MAX_PATTERN_CHARS,
    PatternError,
    compile_tree,
    parse_pattern,
)
from poller.filtering.generate import record_matcher
from poller.filtering.nodes import JsonFloat, JsonInt, ObjectNode

__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "CompiledPattern",
    "FilterSet",
    "PatternError",
    "SourceKind",
    "compile_pattern",
    "pattern_problem",
]

# Lambda's default quota is 5 filters per mapping, raisable to 10; poller allows the maximum.
MAX_FILTERS: Final = 10

SourceKind = Literal["sqs", "kinesis", "dynamodb"]

# The key whose payload must be a JSON (object) pattern for each stream source: Lambda rejects
# a mapping whose Kinesis `data` or DynamoDB `dynamodb` pattern is a plain value pattern.
_JSON_ONLY_KEY: Final[Mapping[str, str]] = {"kinesis": "data", "dynamodb": "dynamodb"}
_SOURCE_NAMES: Final[Mapping[str, str]] = {"kinesis": "Kinesis", "dynamodb": "DynamoDB"}

_JSON_START: Final = frozenset("{[")
_JSON_START_BYTES: Final = frozenset(b"{[")
_WHITESPACE: Final = " \t\r\n"

# Decodes record payloads keeping each number's JSON text (exact matching compares numbers by
# text: 300, 300.0 and 3.0e2 differ). Both hooks are str subclasses, which the json scanner
# calls without running Python code, so this costs about what plain json.loads does.
_decode_json_texts: Final = json.JSONDecoder(parse_int=JsonInt, parse_float=JsonFloat).decode

# Nesting shallower than this is within the json decoder's recursion limit (about 1,000 less
# the caller's stack), where orjson goes on to 1,024: below it, both give the same answer, a
# value or an error.
_ORJSON_MAX_DEPTH: Final = 500
_NO_SCAN_BELOW: Final = 2 * _ORJSON_MAX_DEPTH
# For a string `extra` characters longer than that, the run of `[` it holds if it nests too
# deep (see `_shallow`); past the table's end the run would be empty, which tells nothing.
_DEEP_RUNS: Final = tuple(
    "[" * (-(-_ORJSON_MAX_DEPTH // (extra + 1)) - 1) for extra in range(_ORJSON_MAX_DEPTH - 1)
)


def _shallow(text: str | bytes) -> bool:
    """Whether ``text`` surely nests less than ``_ORJSON_MAX_DEPTH`` levels, cheaply, if it is
    JSON (whatever orjson refuses goes to the json module anyway).

    On the deepest path, an array level takes 2 characters (``[]``) and an object level at
    least 5 (``{"":}``; 2 for an innermost ``{}``), and there are at most as many array levels
    as ``[`` characters: a text of ``n`` characters holding ``a`` of them nests at most
    ``(n + 3a + 3) / 5`` levels, and at most its count of ``[`` and ``{``. A byte string bounds
    both from above (each of the two characters holds a byte of its value in UTF-8, -16 and
    -32). So short texts need no scan, and a text with few arrays one count instead of two.

    A string just over the no-scan length (a 1 KB body) first gets a cheaper test: ``d`` levels
    leave ``n - 2d`` characters outside the deepest path's brackets, so its ``d`` opening
    brackets fall into at most ``n - 2d + 1`` runs of adjacent ones, one of them at least
    ``d / (n - 2d + 1)`` long; and in JSON only a ``[`` is directly followed by another opening
    bracket. A text without ``[`` repeated that long less one cannot nest ``d`` levels.
    """
    n = len(text)
    if n < _NO_SCAN_BELOW:
        return True
    if isinstance(text, str):
        extra = n - _NO_SCAN_BELOW
        if extra < len(_DEEP_RUNS) and _DEEP_RUNS[extra] not in text:
            return True
        arrays = text.count("[")
        if n + 3 * arrays + 3 < 5 * _ORJSON_MAX_DEPTH:
            return True
        return arrays + text.count("{") < _ORJSON_MAX_DEPTH
    arrays = text.count(b"[")
    if n + 3 * arrays + 3 < 5 * _ORJSON_MAX_DEPTH:
        return True
    return arrays + text.count(b"{") < _ORJSON_MAX_DEPTH


def _decode_json(text: str | bytes) -> Any:
    """JSON with plain int/float numbers, for filter sets none of whose patterns compares a
    number by its text (then a number's text cannot change a match: `numeric` compares values,
    and `JsonInt`/`JsonFloat` differ from int/float in nothing else). orjson, about twice as
    fast as the json module with its number hooks; whatever orjson refuses (NaN, lone
    surrogates, numbers past 64 bits, UTF-16, invalid UTF-8) goes to the json module, which
    decides as before."""
    if _shallow(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return _decode_texts(text)


def _decode_texts(text: str | bytes) -> Any:
    """JSON with every number kept as its text (`JsonInt`/`JsonFloat`)."""
    if isinstance(text, bytes):
        # What json.loads does with bytes: UTF-8 (with or without a BOM), -16 or -32.
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _decode_json_texts(text)


@dataclass(frozen=True, eq=False, slots=True)
class CompiledPattern:
    """One validated, compiled filter pattern. Immutable and safe to share between tasks.

    ``matches(view)`` tests an already-decoded view; :class:`FilterSet` builds the per-source
    views (decoded SQS body, Kinesis payload) and should be preferred on the record path.
    """

    text: str
    _root: ObjectNode = field(repr=False)
    _ddb_root: ObjectNode = field(repr=False)
    top_keys: frozenset[str] = field(repr=False)
    _top_leaf_keys: frozenset[str] = field(repr=False)
    number_text: bool = field(repr=False, default=True)  # compares some number by its text

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether the view (a JSON-like object) satisfies the pattern."""
        return self._root.match(view)

    def check_source(self, source: SourceKind) -> None:
        """Raise :class:`PatternError` if Lambda would refuse this pattern for ``source``.

        Lambda rejects a Kinesis mapping whose ``data`` pattern, or a DynamoDB mapping whose
        ``dynamodb`` pattern, is a plain value pattern rather than a JSON object pattern.
        """
        key = _JSON_ONLY_KEY.get(source)
        if key is not None and key in self._top_leaf_keys:
            raise PatternError(
                f'a {_SOURCE_NAMES[source]} "{key}" pattern must be a JSON object pattern such as '
                f'{{"{key}": {{"field": ["value"]}}}}, not an array of matchers',
                path=key,
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def compile_pattern(pattern: str) -> CompiledPattern:
    """Parse and validate one pattern string; raises :class:`PatternError` naming the problem.

    Call this at config load: the result matches records without touching JSON again.
    """
    tree = compile_tree(parse_pattern(pattern))
    ddb_root = tree.root
    if tree.has_typed_numeric:
        # Only patterns with `numeric` under an `N`/`NS` key need the DynamoDB flavour.
        ddb_root = compile_tree(parse_pattern(pattern), typed_numbers=True).root
    return CompiledPattern(
        pattern, tree.root, ddb_root, tree.top_keys, tree.top_leaf_keys, tree.has_number_text
    )


def _sqs_body_decoder(texts: bool) -> Callable[[Any], Any]:
    """The decoder of SQS bodies: the JSON object/array a body holds, else the body itself (a
    plain body). One call per record: it runs for every record a set with a `body` pattern
    sees."""

    def decode(body: Any) -> Any:
        if type(body) is not str or not body:
            return body
        first = body[0]
        if first not in _JSON_START:
            if first not in _WHITESPACE:
                return body
            stripped = body.lstrip(_WHITESPACE)
            if not stripped or stripped[0] not in _JSON_START:
                return body
        try:
            return _decode_texts(body) if texts else _decode_json(body)
        except (ValueError, RecursionError):
            return body

    return decode


def _decode_kinesis_data(data: Any, texts: bool = True) -> Any:
    """Base64-decode Kinesis ``data``; JSON objects/arrays are parsed, other text kept as text.

    Undecodable data stays as given, so a JSON pattern on it simply does not match.
    """
    if type(data) is not str:
        return data
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return data
    stripped = raw.lstrip(b" \t\r\n")
    if stripped and stripped[0] in _JSON_START_BYTES:
        try:
            return _decode_texts(raw) if texts else _decode_json(raw)
        except (ValueError, RecursionError):
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return data


class FilterSet:
    """The filters of one mapping: a record passes when any pattern matches (OR).

    An empty set lets everything through; ``bool(filter_set)`` says whether there is anything
    to check, so callers can skip filtering entirely.
    """

    __slots__ = (
        "_patterns",
        "matches_dynamodb",
        "matches_kinesis",
        "matches_sqs",
    )

    # Whether a Lambda SQS event record passes (``body`` decoded at most once, if a pattern
    # reads it); whether a Kinesis one does, matched on its ``kinesis`` object (``data``
    # likewise); whether a DynamoDB one does, matched as a whole. Each is one function
    # generated for the set (`filtering.generate`), so the record path makes no call per node.
    matches_sqs: Callable[[Mapping[str, Any]], bool]
    matches_kinesis: Callable[[Mapping[str, Any]], bool]
    matches_dynamodb: Callable[[Mapping[str, Any]], bool]

    def __init__(self, patterns: Sequence[CompiledPattern] = ()) -> None:
        if len(patterns) > MAX_FILTERS:
            raise PatternError(
                f"at most {MAX_FILTERS} filters per mapping, got {len(patterns)}",
                index=MAX_FILTERS,
            )
        self._patterns: tuple[CompiledPattern, ...] = tuple(patterns)
        roots = tuple(p._root for p in self._patterns)
        # Decode the SQS body / Kinesis data only when some pattern looks at it.
        needs_body = any("body" in p.top_keys for p in self._patterns)
        needs_data = any("data" in p.top_keys for p in self._patterns)
        # Numbers keep their text only when some pattern compares one by it (`_decode_json`).
        texts = any(p.number_text for p in self._patterns)
        self.matches_sqs = record_matcher(
            roots, payload_key="body", decode=_sqs_body_decoder(texts) if needs_body else None
        )
        self.matches_kinesis = record_matcher(
            roots,
            within="kinesis",
            payload_key="data",
            decode=(lambda data: _decode_kinesis_data(data, texts)) if needs_data else None,
        )
        self.matches_dynamodb = record_matcher(tuple(p._ddb_root for p in self._patterns))

    @classmethod
    def compile(cls, patterns: Sequence[str], *, source: SourceKind | None = None) -> FilterSet:
        """Compile pattern strings; a :class:`PatternError` carries ``.index`` of the bad one.

        With ``source``, also refuse what Lambda refuses for that source kind (see
        :meth:`CompiledPattern.check_source`).
        """
        if len(patterns) > MAX_FILTERS:
            raise PatternError(
                f"at most {MAX_FILTERS} filters per mapping, got {len(patterns)}",
                index=MAX_FILTERS,
            )
        compiled: list[CompiledPattern] = []
        for index, text in enumerate(patterns):
            try:
                pattern = compile_pattern(text)
                if source is not None:
                    pattern.check_source(source)
            except PatternError as exc:
                exc.index = index
                raise
            compiled.append(pattern)
        return cls(compiled)

    @property
    def patterns(self) -> tuple[CompiledPattern, ...]:
        """The compiled patterns, in configuration order."""
        return self._patterns

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __len__(self) -> int:
        return len(self._patterns)

    def __iter__(self) -> Iterator[CompiledPattern]:
        return iter(self._patterns)

    def __repr__(self) -> str:
        return f"FilterSet({[p.text for p in self._patterns]!r})"


def pattern_problem(pattern: str, source: SourceKind | None = None) -> str | None:
    """What poller (or Lambda, for `source`) would refuse in a pattern, or None.

    The check configuration loading runs on every FilterCriteria pattern: a pattern the matcher
    could not honour never reaches a running mapping.
    """
    try:
        compiled = compile_pattern(pattern)
        if source is not None:
            compiled.check_source(source)
    except PatternError as exc:
        where = f" (at {exc.path} in the pattern)" if exc.path else ""
        return f"{exc.reason}{where}"
    return None
