"""Matcher nodes for compiled filter patterns (see ``poller.filtering``).

A pattern compiles into a tree of two node kinds: :class:`ObjectNode` for a JSON object in the
pattern (AND over its keys, plus any ``$or`` groups) and :class:`LeafNode` for an array of
matchers (OR over them). The nodes hold only pre-computed sets, tuples and small closures, so
matching a record walks the record once per referenced key and allocates nothing in the common
case.

Value semantics follow EventBridge's event-ruler, which Lambda's filtering uses:

* Only scalars are "leaf values". A field whose value is an object, an empty array or an array
  holding only objects has no leaf value there, so it counts as absent: ``exists: false``
  matches it and every other matcher fails (ruler flattens events to leaf paths).
* A record array is matched element by element; one matching element is enough.
* A string never equals a number (``"5"`` is not ``5``), and ``true`` is not ``1``.
* Without ``numeric``, numbers match by their JSON text, as Lambda documents (300, 300.0
  and 3.0e2 are three different values); ``numeric`` compares by value. Decoded payloads keep that
  text by holding their numbers as :class:`JsonInt` / :class:`JsonFloat`; a plain Python
  ``int``/``float`` in a record stands for the text ``repr`` gives it (what ``json.dumps``
  writes).
* ``anything-but`` matches every present scalar not excluded, whatever its type, null included
  (ruler's ByteMachine counts an anything-but as matched unless an excluded value is seen).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

# Stands for "no such key" so a missing field and a JSON null stay distinct.
MISSING: Final[Any] = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

Pred = Callable[[Any], bool]


class JsonInt(str):
    """An integer of a decoded record payload, kept as the text it was written with.

    ``json`` builds it through ``parse_int`` without running Python code (it is a plain ``str``
    subclass), so keeping the text costs next to nothing; :func:`number_value` gives the value
    when a ``numeric`` matcher needs it. It is never a string to the matchers: ``"5"`` and
    ``5`` stay distinct.
    """

    __slots__ = ()


class JsonFloat(str):
    """A non-integer number (fraction or exponent) of a decoded record payload, as its text."""

    __slots__ = ()


def number_value(v: JsonInt | JsonFloat) -> int | float:
    """The value of a decoded JSON number, for ``numeric`` comparisons."""
    if type(v) is JsonInt:
        try:
            return int(v)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            return float(v)
    return float(v)


def python_number_text(v: int | float) -> str | None:
    """The JSON text a plain ``int``/``float`` stands for (``json.dumps``'s), if it has one."""
    try:
        return float.__repr__(v) if isinstance(v, float) else int.__repr__(int(v))
    except ValueError:  # an int too long to print
        return None


def _iter_scalars(values: list[Any]) -> list[Any]:
    """Flatten nested record arrays into their scalar elements.

    Iterative on purpose: a hostile body nested a thousand levels deep must not hit the
    recursion limit while it is being matched.
    """
    out: list[Any] = []
    stack: list[list[Any]] = [values]
    while stack:
        for item in stack.pop():
            if type(item) is list:
                stack.append(item)
            elif not isinstance(item, Mapping):
                out.append(item)
    return out


def _iter_objects(values: list[Any]) -> list[Mapping[str, Any]]:
    """The objects inside a (possibly nested) record array, for object patterns."""
    out: list[Mapping[str, Any]] = []
    stack: list[list[Any]] = [values]
    while stack:
        for item in stack.pop():
            if type(item) is list:
                stack.append(item)
            elif isinstance(item, Mapping):
                out.append(item)
    return out


class LeafNode:
    """An array of matchers in a pattern: true when any matcher accepts the record value.

    Every matcher is folded into per-type tables when the pattern is compiled, so a record
    value costs one type dispatch plus a set lookup or a few predicate calls.
    """

    __slots__ = (
        "false_ok",
        "missing_ok",
        "null_ok",
        "num_always",
        "num_preds",
        "num_text_preds",
        "num_texts",
        "other_ok",
        "str_always",
        "str_preds",
        "strs",
        "true_ok",
    )

    def __init__(
        self,
        *,
        strs: frozenset[str],
        num_texts: frozenset[str],
        str_preds: tuple[Pred, ...],
        num_text_preds: tuple[Pred, ...],
        num_preds: tuple[Pred, ...],
        str_always: bool,
        num_always: bool,
        null_ok: bool,
        true_ok: bool,
        false_ok: bool,
        missing_ok: bool,
        other_ok: bool,
    ) -> None:
        self.strs = strs
        # Exact numbers and `anything-but` numbers work on the JSON text of a number, `numeric`
        # (num_preds) on its value.
        self.num_texts = num_texts
        self.str_preds = str_preds
        self.num_text_preds = num_text_preds
        self.num_preds = num_preds
        self.str_always = str_always
        self.num_always = num_always
        self.null_ok = null_ok
        self.true_ok = true_ok
        self.false_ok = false_ok
        self.missing_ok = missing_ok
        self.other_ok = other_ok

    @property
    def matches_empty(self) -> bool:
        """Whether the leaf accepts an absent field (only ``exists: false`` does)."""
        return self.missing_ok

    def match(self, v: Any) -> bool:
        """Match one record value (``MISSING`` when the key is absent)."""
        t = type(v)
        if t is str:
            if self.str_always or v in self.strs:
                return True
            for pred in self.str_preds:  # noqa: SIM110 - hot path, a loop is 2.5x faster than any()
                if pred(v):
                    return True
            return False
        if t is JsonInt or t is JsonFloat:
            if self.num_always or v in self.num_texts:
                return True
            for pred in self.num_text_preds:
                if pred(v):
                    return True
            if self.num_preds:
                x = number_value(v)
                for pred in self.num_preds:
                    if pred(x):
                        return True
            return False
        if t is int or t is float:
            return self._match_python_number(v)
        if v is None:
            return self.null_ok
        if v is True:
            return self.true_ok
        if v is False:
            return self.false_ok
        if v is MISSING or t is dict:
            return self.missing_ok
        if t is list:
            return self._match_list(v)
        return self._match_unusual(v)

    def _match_python_number(self, v: int | float) -> bool:
        if self.num_always:
            return True
        if self.num_texts or self.num_text_preds:
            text = python_number_text(v)
            if text is not None:
                if text in self.num_texts:
                    return True
                for pred in self.num_text_preds:
                    if pred(text):
                        return True
        for pred in self.num_preds:  # noqa: SIM110 - a loop, as in match()
            if pred(v):
                return True
        return False

    def _match_list(self, values: list[Any]) -> bool:
        scalars = _iter_scalars(values)
        if not scalars:
            # [] or [{...}] has no leaf value at this path: it is absent, as in ruler.
            return self.missing_ok
        for item in scalars:  # noqa: SIM110 - hot path, a loop is 2.5x faster than any()
            if self.match(item):
                return True
        return False

    def _match_unusual(self, v: Any) -> bool:
        # Subclasses (IntEnum, str subclasses), other mappings and tuples from callers that
        # did not build the record from JSON: map them onto the JSON types they stand for.
        if isinstance(v, bool):
            return self.true_ok if v else self.false_ok
        if isinstance(v, str):
            return self.match(str(v))
        if isinstance(v, int | float):
            return self._match_python_number(float(v) if isinstance(v, float) else int(v))
        if isinstance(v, Mapping):
            return self.missing_ok
        if isinstance(v, tuple):
            return self._match_list(list(v))
        return self.other_ok


class ObjectNode:
    """A JSON object in a pattern: every key must match, and one branch of each ``$or``."""

    __slots__ = ("entries", "matches_empty", "ors")

    def __init__(
        self,
        entries: tuple[tuple[str, LeafNode | ObjectNode], ...],
        ors: tuple[tuple[ObjectNode, ...], ...],
    ) -> None:
        self.entries = entries
        self.ors = ors
        # An absent or scalar field still satisfies an object pattern made only of
        # `exists: false` leaves; work that out once instead of per record.
        self.matches_empty: bool = all(node.matches_empty for _, node in entries) and all(
            any(branch.matches_empty for branch in group) for group in ors
        )

    def match(self, v: Any) -> bool:
        """Match the record value found where this object sits in the pattern."""
        if type(v) is dict:
            return self.match_dict(v)
        if type(v) is list:
            objects = _iter_objects(v)
            if not objects:
                return self.matches_empty
            for obj in objects:  # noqa: SIM110 - hot path, a loop is 2.5x faster than any()
                if self.match_dict(obj):
                    return True
            return False
        if isinstance(v, Mapping):
            return self.match_dict(v)
        return self.matches_empty

    def match_dict(self, d: Mapping[str, Any]) -> bool:
        """Match a record object: AND over keys, OR inside each ``$or`` group."""
        get = d.get
        for key, node in self.entries:
            if not node.match(get(key, MISSING)):
                return False
        for group in self.ors:
            for branch in group:
                if branch.match_dict(d):
                    break
            else:
                return False
        return True

    def match_top(self, d: Mapping[str, Any], key_override: str, value: Any) -> bool:
        """As :meth:`match_dict`, with ``d[key_override]`` read as ``value``, a decoded payload.

        This is how a decoded SQS body or Kinesis payload is seen without copying the record
        into a new view dict for every record. Lambda also drops a record whose payload format
        differs from the pattern's: a JSON (object) pattern on a plain-text payload, or a plain
        pattern on a JSON payload, never matches, whatever ``exists: false`` would say.
        """
        get = d.get
        for key, node in self.entries:
            if key == key_override:
                payload_is_json = type(value) is dict or type(value) is list
                if payload_is_json is not isinstance(node, ObjectNode) or not node.match(value):
                    return False
            elif not node.match(get(key, MISSING)):
                return False
        for group in self.ors:
            for branch in group:
                if branch.match_top(d, key_override, value):
                    break
            else:
                return False
        return True
