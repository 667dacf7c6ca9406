"""Matcher operators of filter patterns: one pattern array becomes one ``LeafNode``.

Each operator's validation follows EventBridge's event-ruler ``JsonRuleCompiler`` (error
conditions such as an empty ``anything-but`` prefix, consecutive wildcards or a numeric range
whose bottom is not below its top), restricted to the operators Lambda's
event source mappings support (see ``poller.filtering.compile``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

from poller.filtering.nodes import LeafNode, Pred, python_number_text


class PatternError(ValueError):
    """A filter pattern poller will not load.

    ``path`` is the dotted key path inside the pattern (``body.ip``), ``operator`` the operator at
    fault when there is one, and ``index`` which filter of a :class:`FilterSet` it is (set by
    ``FilterSet.compile``). ``str()`` renders all of it, e.g.
    ``filters[1]: unsupported operator "cidr" at body.ip``.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str = "",
        operator: str | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path
        self.operator = operator
        self.index = index

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        prefix = f"filters[{self.index}]: " if self.index is not None else ""
        return f"{prefix}{self.reason}{where}"


class PatternInt(int):
    """An integer of a pattern that remembers how it was written (``parse_int``)."""

    text: str

    def __new__(cls, text: str) -> PatternInt:
        self = super().__new__(cls, text)
        self.text = text
        return self


class PatternFloat(float):
    """A fraction or exponent number of a pattern that remembers how it was written."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> PatternFloat:
        self = super().__new__(cls, text)
        self.text = text
        return self


def _is_number(v: Any) -> bool:
    # bool is an int subclass in Python but `true` is not a JSON number.
    return isinstance(v, int | float) and not isinstance(v, bool)


def number_text(v: int | float) -> str | None:
    """How a pattern number was written: exact matching compares numbers by this text."""
    if isinstance(v, PatternInt | PatternFloat):
        return v.text
    return python_number_text(v)


def _plain(v: int | float) -> int | float:
    """A pattern number as a plain ``int``/``float``, for fast value comparisons."""
    return float(v) if isinstance(v, float) else int(v)


def _is_finite_number(v: Any) -> bool:
    if not _is_number(v):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer literal too large for a float
        return False


class LeafBuilder:
    """Folds the matchers of one pattern array into a :class:`LeafNode`."""

    def __init__(self, path: str, typed_numbers: bool) -> None:
        self.path = path
        # True for a DynamoDB `N`/`NS` leaf compiled for DynamoDB records: `numeric` then also
        # applies to the number strings DynamoDB puts there.
        self.typed_numbers = typed_numbers
        self.strs: set[str] = set()
        self.num_texts: set[str] = set()
        self.prefixes: list[str] = []
        self.suffixes: list[str] = []
        self.ignore_case: set[str] = set()
        self.str_preds: list[Pred] = []
        self.num_text_preds: list[Pred] = []
        self.numeric_preds: list[Pred] = []
        self.str_always = False
        self.num_always = False
        self.null_ok = False
        self.true_ok = False
        self.false_ok = False
        self.missing_ok = False
        self.other_ok = False

    def fail(self, reason: str, operator: str | None = None) -> PatternError:
        """A :class:`PatternError` located at this leaf's path."""
        return PatternError(reason, path=self.path, operator=operator)

    def add(self, item: Any) -> None:
        """Fold one element of the pattern array (a value or an operator object) in."""
        if isinstance(item, str):
            self.strs.add(item)
        elif item is None:
            self.null_ok = True
        elif item is True:
            self.true_ok = True
        elif item is False:
            self.false_ok = True
        elif _is_number(item):
            # Compared by JSON text, not value, as in Lambda: 300 matches 300 only, not
            # 300.0 or 3.0e2; `numeric` is the way to compare values.
            text = number_text(item)
            if text is not None:
                self.num_texts.add(text)
        elif isinstance(item, dict):
            self._add_operator(item)
        else:
            raise self.fail("a matcher must be a string, number, true, false, null or an object")

    def _add_operator(self, item: dict[str, Any]) -> None:
        if len(item) != 1:
            if not item:
                raise self.fail("empty matcher object {}")
            names = ", ".join(f'"{k}"' for k in item)
            raise self.fail(f"a matcher object takes exactly one operator, got {names}")
        ((op, arg),) = item.items()
        handler = _OPERATORS.get(op)
        if handler is None:
            raise self.fail(f'unsupported operator "{op}"', op)
        handler(self, arg)

    def _string_arg(self, op: str, arg: Any) -> str:
        if isinstance(arg, dict) and len(arg) == 1:
            (inner,) = arg
            raise self.fail(f'unsupported operator "{op}" with "{inner}"', op)
        if not isinstance(arg, str):
            raise self.fail(f'"{op}" needs a string', op)
        return arg

    def op_prefix(self, arg: Any) -> None:
        """``{"prefix": "x"}``: strings starting with x."""
        self.prefixes.append(self._string_arg("prefix", arg))

    def op_suffix(self, arg: Any) -> None:
        """``{"suffix": "x"}``: strings ending with x."""
        self.suffixes.append(self._string_arg("suffix", arg))

    def op_equals_ignore_case(self, arg: Any) -> None:
        """``{"equals-ignore-case": "x"}``: strings equal to x ignoring case."""
        self.ignore_case.add(self._string_arg("equals-ignore-case", arg).lower())

    def op_wildcard(self, arg: Any) -> None:
        """``{"wildcard": "a*b"}``: strings matching the whole wildcard."""
        regex = _wildcard_regex(self._string_arg("wildcard", arg), self)
        self.str_preds.append(lambda v: regex(v) is not None)

    def op_exists(self, arg: Any) -> None:
        """``{"exists": true|false}``: a leaf value is present / absent."""
        if arg is True:
            # Any leaf value, null included, is "present" (ruler flattens null to a value).
            self.str_always = self.num_always = True
            self.null_ok = self.true_ok = self.false_ok = self.other_ok = True
        elif arg is False:
            self.missing_ok = True
        else:
            raise self.fail('"exists" takes true or false', "exists")

    def op_anything_but(self, arg: Any) -> None:
        """``{"anything-but": v | [v...] | {"prefix"|"suffix": "x"}}``."""
        op = "anything-but"
        if isinstance(arg, dict):
            self._anything_but_object(arg)
            return
        values = arg if isinstance(arg, list) else [arg]
        if not values:
            raise self.fail('"anything-but" needs at least one value', op)
        if all(isinstance(v, str) for v in values):
            excluded_strs = frozenset(values)
            self.str_preds.append(lambda v: v not in excluded_strs)
            self.num_always = True
        elif all(_is_number(v) for v in values):
            # By text like exact numbers, so a number matches exactly one of [v] and
            # {"anything-but": [v]}.
            excluded_nums = frozenset(number_text(v) for v in values)
            self.num_text_preds.append(lambda text: text not in excluded_nums)
            self.str_always = True
        else:
            raise self.fail(
                '"anything-but" takes a string, a number, or a list of only strings or only '
                "numbers (no null, booleans, objects or mixed types)",
                op,
            )
        self._anything_but_other_types()

    def _anything_but_object(self, arg: dict[str, Any]) -> None:
        op = "anything-but"
        if len(arg) != 1:
            raise self.fail('"anything-but" object takes exactly one of "prefix", "suffix"', op)
        ((inner, value),) = arg.items()
        if inner not in ("prefix", "suffix"):
            raise self.fail(f'unsupported operator "{op}" with "{inner}"', op)
        if not isinstance(value, str) or not value:
            # Ruler: "Null prefix/suffix not allowed".
            raise self.fail(f'"{op}" "{inner}" needs a non-empty string', op)
        if inner == "prefix":
            self.str_preds.append(lambda v: not v.startswith(value))
        else:
            self.str_preds.append(lambda v: not v.endswith(value))
        self.num_always = True
        self._anything_but_other_types()

    def _anything_but_other_types(self) -> None:
        # A value of another type is never one of the excluded values, so it passes.
        self.null_ok = self.true_ok = self.false_ok = self.other_ok = True

    def op_numeric(self, arg: Any) -> None:
        """``{"numeric": [">", 0, "<=", 5]}``: numbers in the range."""
        pred = _numeric_pred(arg, self)
        self.numeric_preds.append(pred)

    def build(self) -> LeafNode:
        """The immutable node, with prefixes/suffixes merged into one tuple test each."""
        str_preds = list(self.str_preds)
        if self.prefixes:
            prefixes = tuple(self.prefixes)
            str_preds.insert(0, lambda v: v.startswith(prefixes))
        if self.suffixes:
            suffixes = tuple(self.suffixes)
            str_preds.insert(0, lambda v: v.endswith(suffixes))
        if self.ignore_case:
            lowered = frozenset(self.ignore_case)
            str_preds.insert(0, lambda v: v.lower() in lowered)
        if self.typed_numbers and self.numeric_preds:
            str_preds.append(_typed_number_pred(tuple(self.numeric_preds)))
        return LeafNode(
            strs=frozenset(self.strs),
            num_texts=frozenset(self.num_texts),
            str_preds=tuple(str_preds),
            num_text_preds=tuple(self.num_text_preds),
            num_preds=tuple(self.numeric_preds),
            str_always=self.str_always,
            num_always=self.num_always,
            null_ok=self.null_ok,
            true_ok=self.true_ok,
            false_ok=self.false_ok,
            missing_ok=self.missing_ok,
            other_ok=self.other_ok,
        )


_OPERATORS: Final[dict[str, Callable[[LeafBuilder, Any], None]]] = {
    "prefix": LeafBuilder.op_prefix,
    "suffix": LeafBuilder.op_suffix,
    "equals-ignore-case": LeafBuilder.op_equals_ignore_case,
    "wildcard": LeafBuilder.op_wildcard,
    "exists": LeafBuilder.op_exists,
    "anything-but": LeafBuilder.op_anything_but,
    "numeric": LeafBuilder.op_numeric,
}


def _typed_number_pred(numeric: tuple[Pred, ...]) -> Pred:
    """`numeric` over a DynamoDB number string such as ``{"N": "12.5"}``."""

    def pred(v: str) -> bool:
        try:
            x = float(v)
        except ValueError:
            return False
        if not math.isfinite(x):
            return False
        return any(p(x) for p in numeric)

    return pred


def _wildcard_regex(text: str, leaf: LeafBuilder) -> Callable[[str], Any]:
    """Translate a wildcard into an anchored regex, with ruler's escaping rules.

    ``*`` is any run of characters, ``\\*`` a literal star, ``\\\\`` a literal backslash; a
    backslash before anything else, and two consecutive wildcards, are refused as in ruler.
    """
    parts: list[str] = []
    i = 0
    previous_star = False
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in ("*", "\\"):
                raise leaf.fail(
                    f'"wildcard" value {json.dumps(text)} has a backslash that escapes neither '
                    '"*" nor "\\"',
                    "wildcard",
                )
            parts.append(re.escape(nxt))
            previous_star = False
            i += 2
            continue
        if c == "*":
            if previous_star:
                raise leaf.fail(
                    f'"wildcard" value {json.dumps(text)} has consecutive "*" characters',
                    "wildcard",
                )
            parts.append(".*")
            previous_star = True
        else:
            parts.append(re.escape(c))
            previous_star = False
        i += 1
    return re.compile("".join(parts), re.DOTALL).fullmatch


_LOWER_OPS: Final = {">": False, ">=": True}
_UPPER_OPS: Final = {"<": False, "<=": True}


def _numeric_pred(arg: Any, leaf: LeafBuilder) -> Pred:
    """Compile ``{"numeric": [...]}``: ``=`` alone, an upper bound alone, or a lower bound
    optionally followed by an upper bound (ruler's JsonRuleCompiler accepts exactly these)."""
    op = "numeric"
    if not isinstance(arg, list) or not arg:
        raise leaf.fail('"numeric" needs a non-empty array like [">", 0, "<=", 5]', op)
    terms = list(arg)
    first = terms[0]
    if not isinstance(first, str) or first not in ("=", *_LOWER_OPS, *_UPPER_OPS):
        raise leaf.fail(f'"numeric" has an unknown comparison {json.dumps(first)}', op)
    if len(terms) < 2 or not _is_finite_number(terms[1]):
        raise leaf.fail(f'"numeric" "{first}" must be followed by a number', op)
    value = _plain(terms[1])
    if first == "=" or first in _UPPER_OPS:
        if len(terms) != 2:
            raise leaf.fail(
                f'"numeric" "{first}" takes one number; a range starts with ">" or ">="', op
            )
        if first == "=":
            return lambda v: v == value
        if _UPPER_OPS[first]:
            return lambda v: v <= value
        return lambda v: v < value
    low, low_inclusive = value, _LOWER_OPS[first]
    if len(terms) == 2:
        return (lambda v: v >= low) if low_inclusive else (lambda v: v > low)
    upper = terms[2]
    if len(terms) != 4 or not isinstance(upper, str) or upper not in _UPPER_OPS:
        raise leaf.fail(
            '"numeric" range must be a lower bound (">", ">=") then an upper bound ("<", "<=")',
            op,
        )
    if not _is_finite_number(terms[3]):
        raise leaf.fail(f'"numeric" "{upper}" must be followed by a number', op)
    high = _plain(terms[3])
    if not low < high:
        # Ruler's Range.ensureValidRange: "Bottom must be less than top".
        raise leaf.fail('"numeric" range needs its lower bound below its upper bound', op)
    high_inclusive = _UPPER_OPS[upper]
    if low_inclusive and high_inclusive:
        return lambda v: low <= v <= high
    if low_inclusive:
        return lambda v: low <= v < high
    if high_inclusive:
        return lambda v: low < v <= high
    return lambda v: low < v < high
