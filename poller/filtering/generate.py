"""One matcher function per filter set, written as Python source and compiled once.

``LeafNode.match``, ``ObjectNode.match_dict`` and ``ObjectNode.match_top`` are the reference
semantics: they dispatch on every type a record value can have and loop over tuples of keys and
predicates, for each of up to ten patterns and every record. A filter set instead compiles, at
config load, one function that tests its patterns as a single boolean expression: each object
reads just the keys it names and stops at the first that fails, each leaf tests inline the value
types its matchers decide by a set lookup or a predicate (a string, a number), and everything
else a record can hold (arrays, objects where a leaf is, absent keys, unusual Python types) is
handed to the node's own method, so every result is the nodes' result.

The source is built only from fixed templates and generated local names: every pattern value
(keys, sets, predicates, node methods) reaches the function as a closure variable, never as
text, so no pattern can change what the code does. Object nesting deeper than ``_MAX_LEVEL``
goes on in a function of its own, compiled apart and called from the expression: the expressions
stay within what Python compiles, and neither writing nor matching the deepest pattern Lambda
accepts (about 680 levels in 4,096 characters) recurses more than once per ``_MAX_LEVEL``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from poller.filtering.nodes import MISSING, JsonFloat, JsonInt, LeafNode, ObjectNode

RecordMatcher = Callable[[Mapping[str, Any]], bool]

# Object (and `$or`) levels written out in one expression; deeper ones go on in a function of
# their own. Each level nests about three brackets, and CPython's parser refuses 200.
_MAX_LEVEL: Final = 12

_EMPTY: Final[Mapping[str, Any]] = {}
# Not yet decoded: the payload is decoded by the first pattern term that reads it.
_UNDECODED: Final[Any] = type("Undecoded", (), {"__repr__": lambda self: "UNDECODED"})()

# The names the templates use for fixed values; pattern values get `c0`, `c1`, ...
_FIXED: Final[Mapping[str, Any]] = {
    "M": MISSING,
    "U": _UNDECODED,
    "T": type,
    "D": dict,
    "L": list,
    "S": str,
    "I": int,
    "F": float,
    "JI": JsonInt,
    "JF": JsonFloat,
    "SCALARS": (str, int, float, bool, type(None)),
    "ISINSTANCE": isinstance,
    "MAPPING": Mapping,
    "EMPTY": _EMPTY,
}


@dataclass(frozen=True, slots=True)
class _Deeper:
    slot: list[Callable[[Any], bool]]
    node: ObjectNode
    as_value: bool


class _Writer:
    """Writes the expression of each pattern, collecting the values it refers to."""

    def __init__(self, payload_key: str | None, pending: list[_Deeper] | None = None) -> None:
        self.payload_key = payload_key
        self.values: list[Any] = []
        # Subtrees past _MAX_LEVEL, shared by the writers of one set.
        self.pending: list[_Deeper] = [] if pending is None else pending

    def deeper(self, node: ObjectNode, as_value: bool) -> str:
        """A call of the function a subtree past _MAX_LEVEL is written as, later and apart:
        its node's `match` (``as_value``) or its `match_dict`, put in ``slot`` once built."""
        slot: list[Callable[[Any], bool]] = []
        self.pending.append(_Deeper(slot, node, as_value))
        return f"{self.const(slot)}[0]"

    def const(self, value: Any) -> str:
        self.values.append(value)
        return f"c{len(self.values) - 1}"

    def _absent_or(self, v: str, ok: bool, method: str) -> str:
        # The node's answer for an absent key (a constant) without calling it.
        return f"({v} is M or {method}({v}))" if ok else f"({v} is not M and {method}({v}))"

    def leaf(self, leaf: LeafNode, src: str, level: int) -> str:
        """An expression equal to ``leaf.match(<src>)``; ``src`` is evaluated once, first."""
        v = f"v{level}"
        generic = self._absent_or(v, leaf.missing_ok, self.const(leaf.match))
        if leaf.str_always and leaf.num_always and leaf.null_ok and leaf.true_ok and leaf.false_ok:
            # `exists: true`: every JSON scalar is present.
            return f"(T(({v} := {src})) in SCALARS or {generic})"
        strings = self._strings(leaf, v)
        numbers = self._numbers(leaf, v)
        texts = self._number_texts(leaf, v)
        branches = [("t is S", strings)]
        if numbers is not None:
            number_branch = ("t is I or t is F", numbers)
            if strings == "False":  # a number leaf: test for a number first
                branches.insert(0, number_branch)
            else:
                branches.append(number_branch)
        if texts is not None:
            branches.append(("t is JI or t is JF", texts))
        # `t` is assigned by the first test and read only by the next ones, before any other
        # leaf is evaluated, so every leaf can use the same name.
        out = []
        for i, (test, result) in enumerate(branches):
            if i == 0:
                test = test.replace("t is", f"(t := T(({v} := {src}))) is", 1)
            out.append(f"({result}) if {test} else ")
        return "(" + "".join(out) + generic + ")"

    def _strings(self, leaf: LeafNode, v: str) -> str:
        # LeafNode.match for a `str`: any string, one of the strings, or one predicate's yes.
        if leaf.str_always:
            return "True"
        terms = [f"{v} in {self.const(leaf.strs)}"] if leaf.strs else []
        terms += [f"{self.const(pred)}({v})" for pred in leaf.str_preds]
        return " or ".join(terms) or "False"

    def _numbers(self, leaf: LeafNode, v: str) -> str | None:
        # LeafNode._match_python_number, when no matcher needs the number's text.
        if leaf.num_always:
            return "True"
        if leaf.num_texts or leaf.num_text_preds:
            return None
        return " or ".join(f"{self.const(pred)}({v})" for pred in leaf.num_preds) or "False"

    def _number_texts(self, leaf: LeafNode, v: str) -> str | None:
        # LeafNode.match for a `JsonInt`/`JsonFloat`, when no `numeric` needs its value.
        if leaf.num_always:
            return "True"
        if leaf.num_preds:
            return None
        terms = [f"{v} in {self.const(leaf.num_texts)}"] if leaf.num_texts else []
        terms += [f"{self.const(pred)}({v})" for pred in leaf.num_text_preds]
        return " or ".join(terms) or "False"

    def value(self, node: LeafNode | ObjectNode, src: str, level: int) -> str:
        """An expression equal to ``node.match(<src>)``."""
        if isinstance(node, LeafNode):
            return self.leaf(node, src, level)
        if level >= _MAX_LEVEL:
            return f"{self.deeper(node, as_value=True)}({src})"
        method = self.const(node.match)
        v = f"v{level}"
        generic = self._absent_or(v, node.matches_empty, method)
        return f"({self.object(node, v, level + 1)} if T(({v} := {src})) is D else {generic})"

    def object(self, node: ObjectNode, d: str, level: int) -> str:
        """An expression equal to ``node.match_dict(<d>)``, ``d`` a name bound to a mapping."""
        if level >= _MAX_LEVEL:
            return f"{self.deeper(node, as_value=False)}({d})"
        terms = [
            self.value(child, f"{d}.get({self.const(key)}, M)", level)
            for key, child in node.entries
        ]
        for group in node.ors:
            terms.append(" or ".join(self.object(branch, d, level + 1) for branch in group))
        return "(" + " and ".join(f"({term})" for term in terms) + ")"

    def top(self, node: ObjectNode, level: int = 1) -> str:
        """An expression equal to ``node.match_top(r, payload_key, <payload>)``.

        The payload (``p``) is decoded by the first term that needs it; the other terms of the
        pattern come first, so a pattern they reject never makes it decode.
        """
        key = self.payload_key
        if key is None:
            return self.object(node, "r", level)
        if level >= _MAX_LEVEL:
            # `$or` in `$or` this deep at the top: the node recurses once per level.
            return f"{self.const(node.match_top)}(r, {self.const(key)}, {_PAYLOAD})"
        terms: list[str] = []
        payload_terms: list[str] = []
        for entry_key, child in node.entries:
            if entry_key != key:
                terms.append(self.value(child, f"r.get({self.const(entry_key)}, M)", level))
            elif isinstance(child, ObjectNode):
                # A JSON (object) pattern matches only a JSON payload, a plain one only a plain
                # payload, as in ObjectNode.match_top.
                method = self.const(child.match)
                payload_terms.append(
                    f"({self.object(child, 'p', level + 1)} if T({_PAYLOAD}) is D"
                    f" else (T(p) is L and {method}(p)))"
                )
            else:
                leaf = self.leaf(child, "p", level)
                payload_terms.append(f"T({_PAYLOAD}) is not D and T(p) is not L and {leaf}")
        for group in node.ors:
            terms.append(" or ".join(self.top(branch, level + 1) for branch in group))
        return "(" + " and ".join(f"({term})" for term in terms + payload_terms) + ")"


# The payload, decoded on first use (`b` is the raw value, `DECODE` the set's decoder).
_PAYLOAD: Final = "((p := DECODE(b)) if p is U else p)"


def record_matcher(
    roots: Sequence[ObjectNode],
    *,
    within: str | None = None,
    payload_key: str | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> RecordMatcher:
    """Whether a record passes any of ``roots`` (``within`` its object of that name, if given).

    With ``payload_key`` and ``decode``, that key of the view is matched as ``decode(value)``,
    decoded at most once per record and only when a pattern gets as far as reading it (as
    ``ObjectNode.match_top``).
    """
    if not roots:
        return lambda record: True
    writer = _Writer(payload_key if decode is not None else None)
    patterns = [writer.top(root) for root in roots]
    lines = ["    def match(record):"]
    if within is None:
        lines.append("        r = record")
    else:
        lines.append(f"        r = record.get({writer.const(within)})")
        lines.append("        if T(r) is not D and not ISINSTANCE(r, MAPPING):")
        lines.append("            r = EMPTY")
    if writer.payload_key is not None:
        lines.append(f"        b = r.get({writer.const(writer.payload_key)}, M)")
        lines.append("        p = U")
    lines.append("        return " + " or ".join(f"({pattern})" for pattern in patterns))
    matcher: RecordMatcher = _build(lines, writer.values, decode)
    # Each deep subtree is a function of its own, compiled apart (a few large ones would cost
    # the compiler far more than many small ones); a loop, not recursion, goes down the levels.
    pending = writer.pending
    while pending:
        deeper = pending.pop()
        sub = _Writer(None, pending)
        node = deeper.node
        expr = sub.value(node, "x", 1) if deeper.as_value else sub.object(node, "x", 1)
        deeper.slot.append(_build(["    def match(x):", f"        return {expr}"], sub.values))
    return matcher


def _build(lines: list[str], values: list[Any], decode: Any = None) -> Any:
    """The function ``lines`` define, inside a factory whose parameters are the fixed names
    and every value the lines refer to (`c0`, `c1`, ...)."""
    params = ", ".join([*_FIXED, "DECODE", *(f"c{i}" for i in range(len(values)))])
    source = "\n".join([f"def factory({params}):", *lines, "    return match"])
    namespace: dict[str, Any] = {}
    exec(compile(source, "<filter set>", "exec"), namespace)
    return namespace["factory"](*_FIXED.values(), decode, *values)
