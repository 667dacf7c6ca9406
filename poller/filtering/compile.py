"""Parse and validate a filter pattern into matcher nodes (see ``poller.filtering``).

Validation mirrors EventBridge's event-ruler ``JsonRuleCompiler`` (the engine behind Lambda's
filter syntax) so that a pattern poller accepts is one Lambda accepts, restricted to the
operators Lambda's event source mappings support: a ``cidr``, a ``prefix``/``suffix`` with
``equals-ignore-case`` inside, or an ``anything-but`` with ``equals-ignore-case``/``wildcard``
is refused here even though EventBridge knows it.
"""

from __future__ import annotations

import json
from typing import Any, Final

from poller.filtering.nodes import LeafNode, ObjectNode
from poller.filtering.operators import LeafBuilder, PatternError, PatternFloat, PatternInt

__all__ = ["MAX_PATTERN_CHARS", "CompileResult", "PatternError", "compile_tree", "parse_pattern"]

MAX_PATTERN_CHARS: Final = 4096

# Field names ruler refuses inside a `$or` branch, where they would be ambiguous with operators
# (Constants.RESERVED_FIELD_NAMES_IN_OR_RELATIONSHIP).
_RESERVED_IN_OR: Final = frozenset(
    {
        "exactly",
        "equals-ignore-case",
        "prefix",
        "suffix",
        "anything-but",
        "exists",
        "wildcard",
        "numeric",
        "cidr",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)

# DynamoDB attribute-value type keys whose string values are numbers.
_DDB_NUMBER_KEYS: Final = frozenset({"N", "NS"})


def _reject_constant(name: str) -> Any:
    # json.loads would accept NaN/Infinity; they are not JSON and no record number equals them.
    raise PatternError(f"{name} is not a JSON number")


def parse_pattern(text: str) -> dict[str, Any]:
    """Decode a pattern string, enforcing Lambda's length limit and the object shape."""
    if not isinstance(text, str):
        raise PatternError("pattern must be a JSON object")
    if len(text) > MAX_PATTERN_CHARS:
        raise PatternError(
            f"pattern is {len(text)} characters, over Lambda's limit of {MAX_PATTERN_CHARS}"
        )
    try:
        # Duplicate keys: the last one wins, as Lambda documents; json.loads does the same.
        # Numbers keep their text: without `numeric` they match by it, as in Lambda.
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=PatternInt,
            parse_float=PatternFloat,
        )
    except PatternError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PatternError(f"pattern is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PatternError("pattern must be a JSON object")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class CompileResult:
    """A compiled pattern tree plus what ``FilterSet`` needs to know about its top level."""

    __slots__ = ("has_number_text", "has_typed_numeric", "root", "top_keys", "top_leaf_keys")

    def __init__(
        self,
        root: ObjectNode,
        top_keys: frozenset[str],
        top_leaf_keys: frozenset[str],
        has_typed_numeric: bool,
        has_number_text: bool = False,
    ) -> None:
        self.root = root
        self.top_keys = top_keys
        self.top_leaf_keys = top_leaf_keys
        self.has_typed_numeric = has_typed_numeric
        # Whether some leaf compares numbers by their JSON text (an exact number, an
        # anything-but of numbers): only then does a decoded number's text matter.
        self.has_number_text = has_number_text


class _Compiler:
    def __init__(self, typed_numbers: bool) -> None:
        self.typed_numbers = typed_numbers
        self.top_keys: set[str] = set()
        self.top_leaf_keys: set[str] = set()
        self.has_typed_numeric = False
        self.has_number_text = False

    def compile_object(
        self, obj: dict[str, Any], path: str, *, in_or: bool, top: bool
    ) -> ObjectNode:
        if not obj:
            raise PatternError("empty object {} in a pattern", path=path)
        entries: list[tuple[str, LeafNode | ObjectNode]] = []
        ors: list[tuple[ObjectNode, ...]] = []
        for key, value in obj.items():
            key_path = _join(path, key)
            if key == "$or":
                ors.append(self.compile_or(value, key_path, top=top))
                continue
            if in_or and key in _RESERVED_IN_OR:
                raise PatternError(
                    f'"{key}" is an operator name and cannot be a field name inside "$or"',
                    path=key_path,
                    operator=key,
                )
            if isinstance(value, dict):
                entries.append((key, self.compile_object(value, key_path, in_or=in_or, top=False)))
            elif isinstance(value, list):
                entries.append((key, self.compile_leaf(value, key, key_path)))
                if top:
                    self.top_leaf_keys.add(key)
            else:
                # EventBridge: a leaf must be an array of matchers ("x": ["a"], not "x": "a").
                raise PatternError(
                    f'"{key}" must be an array of matchers or an object, got {json.dumps(value)}',
                    path=key_path,
                )
            if top:
                self.top_keys.add(key)
        return ObjectNode(tuple(entries), tuple(ors))

    def compile_or(self, value: Any, path: str, *, top: bool) -> tuple[ObjectNode, ...]:
        if not isinstance(value, list) or len(value) < 2:
            raise PatternError(
                '"$or" needs an array of at least 2 objects', path=path, operator="$or"
            )
        branches: list[ObjectNode] = []
        for i, branch in enumerate(value):
            branch_path = f"{path}[{i}]"
            if not isinstance(branch, dict):
                raise PatternError('"$or" takes only objects', path=branch_path, operator="$or")
            branches.append(self.compile_object(branch, branch_path, in_or=True, top=top))
        return tuple(branches)

    def compile_leaf(self, items: list[Any], key: str, path: str) -> LeafNode:
        if not items:
            raise PatternError("empty matcher array []", path=path)
        typed = self.typed_numbers and key in _DDB_NUMBER_KEYS
        builder = LeafBuilder(path, typed)
        for item in items:
            builder.add(item)
        if key in _DDB_NUMBER_KEYS and builder.numeric_preds:
            self.has_typed_numeric = True
        if builder.num_texts or builder.num_text_preds:
            self.has_number_text = True
        return builder.build()


def compile_tree(pattern: dict[str, Any], *, typed_numbers: bool = False) -> CompileResult:
    """Compile a decoded pattern object into matcher nodes, raising :class:`PatternError`.

    ``typed_numbers`` builds the DynamoDB flavour, where ``numeric`` under an ``N``/``NS`` key
    also accepts number strings.
    """
    compiler = _Compiler(typed_numbers)
    root = compiler.compile_object(pattern, "", in_or=False, top=True)
    return CompileResult(
        root,
        frozenset(compiler.top_keys),
        frozenset(compiler.top_leaf_keys),
        compiler.has_typed_numeric,
        compiler.has_number_text,
    )
