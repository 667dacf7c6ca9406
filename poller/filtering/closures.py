"""Matcher nodes turned into closures for the record path (see ``poller.filtering``).

``LeafNode.match`` and ``ObjectNode.match_dict`` are the reference semantics: they dispatch on
every type a record value can have and loop over tuples of keys and predicates. A filter set
matches each record against up to ten patterns, so that interpretation is most of the filtering
time. The closures here are built once per filter set and do, per record, only what the
pattern needs: an object reads just the keys it names and stops at the first that fails, a
leaf tests the one type its matchers care about (a string for ``prefix``, a number for
``numeric``) inline. Whatever else a record holds (arrays, ``JsonInt`` texts, unusual Python
types) is handed to the node's own ``match``, so every result is the node's result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from poller.filtering.nodes import MISSING, LeafNode, ObjectNode, Pred

DictMatcher = Callable[[Mapping[str, Any]], bool]
# A pattern object matched against a view whose `key` is read as a decoded payload instead.
TopMatcher = Callable[[Mapping[str, Any], Any], bool]


def leaf_matcher(leaf: LeafNode) -> Pred:
    """``leaf.match``, with the one value type its matchers test done inline.

    Each fast path computes, for its type, exactly what ``LeafNode.match`` computes for it
    (same tables, same predicates); every other value goes to ``leaf.match`` itself.
    """
    generic = leaf.match
    missing_ok = leaf.missing_ok
    if leaf.str_always and leaf.num_always and leaf.null_ok and leaf.true_ok and leaf.false_ok:
        # `exists: true`: any JSON scalar is present.
        scalar_types = (str, int, float, bool, type(None))

        def any_scalar(v: Any) -> bool:
            if type(v) in scalar_types:
                return True
            if v is MISSING:
                return missing_ok
            return generic(v)

        return any_scalar
    if (leaf.strs or leaf.str_preds) and not leaf.str_always:
        if not leaf.str_preds:
            strs = leaf.strs

            def in_strings(v: Any) -> bool:
                if type(v) is str:
                    return v in strs
                if v is MISSING:
                    return missing_ok
                return generic(v)

            return in_strings
        if not leaf.strs and len(leaf.str_preds) == 1:
            (str_pred,) = leaf.str_preds

            def string_pred(v: Any) -> bool:
                if type(v) is str:
                    return str_pred(v)
                if v is MISSING:
                    return missing_ok
                return generic(v)

            return string_pred
        return generic
    if (
        len(leaf.num_preds) == 1
        and not leaf.num_always
        and not leaf.num_texts
        and not leaf.num_text_preds
    ):
        (num_pred,) = leaf.num_preds

        # A plain int/float comes from the orjson decoder (no pattern of the set compares a
        # number by its text): `numeric` compares it by value as it is.
        def number_pred(v: Any) -> bool:
            t = type(v)
            if t is float or t is int:
                return num_pred(v)
            if v is MISSING:
                return missing_ok
            return generic(v)

        return number_pred
    return generic


def value_matcher(node: LeafNode | ObjectNode) -> Pred:
    """``node.match`` as a closure: what a record value found under a pattern key must pass."""
    if isinstance(node, LeafNode):
        return leaf_matcher(node)
    generic = node.match
    single = _single_entry(node)
    if single is not None:
        key, match = single

        def one_key_value(v: Any) -> bool:
            if type(v) is dict:
                return match(v.get(key, MISSING))
            return generic(v)

        return one_key_value
    dict_match = dict_matcher(node)

    def object_value(v: Any) -> bool:
        if type(v) is dict:
            return dict_match(v)
        return generic(v)  # arrays of objects, other mappings, scalars, MISSING

    return object_value


def _single_entry(node: ObjectNode) -> tuple[str, Pred] | None:
    # An object naming one key and no `$or`, the commonest kind, is matched without a call of
    # its own: its one lookup is made by the closure holding it.
    if node.ors or len(node.entries) != 1:
        return None
    ((key, child),) = node.entries
    return key, value_matcher(child)


def dict_matcher(node: ObjectNode) -> DictMatcher:
    """``node.match_dict``: every key of the object, then one branch of each ``$or``."""
    entries = tuple((key, value_matcher(child)) for key, child in node.entries)
    ors = tuple(tuple(dict_matcher(branch) for branch in group) for group in node.ors)
    if not ors and len(entries) == 1:
        ((key, match),) = entries
        return lambda d: match(d.get(key, MISSING))
    if not ors and len(entries) == 2:
        (key1, match1), (key2, match2) = entries
        return lambda d: match1(d.get(key1, MISSING)) and match2(d.get(key2, MISSING))

    def match_all(d: Mapping[str, Any]) -> bool:
        get = d.get
        for key, match in entries:
            if not match(get(key, MISSING)):
                return False
        for group in ors:
            for branch in group:
                if branch(d):
                    break
            else:
                return False
        return True

    return match_all


def top_matcher(node: ObjectNode, key: str) -> TopMatcher:
    """``node.match_top(view, key, payload)``: the view's `key` is seen as the decoded payload."""
    payload_match: Pred | None = None
    entries: list[tuple[str, Pred]] = []
    for entry_key, child in node.entries:
        if entry_key == key:
            payload_match = _payload_matcher(child)
        else:
            entries.append((entry_key, value_matcher(child)))
    ors = tuple(tuple(top_matcher(branch, key) for branch in group) for group in node.ors)
    if not ors and not entries and payload_match is not None:
        ((_, child),) = node.entries
        fused = _json_payload_top(child) if isinstance(child, ObjectNode) else None
        if fused is not None:
            return fused
        only_payload = payload_match
        return lambda view, payload: only_payload(payload)
    if not ors and len(entries) == 1 and payload_match is not None:
        ((other_key, other), with_payload) = (entries[0], payload_match)
        return lambda view, payload: with_payload(payload) and other(view.get(other_key, MISSING))
    rest = tuple(entries)

    def match_all(view: Mapping[str, Any], payload: Any) -> bool:
        if payload_match is not None and not payload_match(payload):
            return False
        get = view.get
        for entry_key, match in rest:
            if not match(get(entry_key, MISSING)):
                return False
        for group in ors:
            for branch in group:
                if branch(view, payload):
                    break
            else:
                return False
        return True

    return match_all


def _payload_matcher(node: LeafNode | ObjectNode) -> Pred:
    # As in Lambda, a JSON (object) pattern never matches a plain-text payload and a plain
    # pattern never matches a JSON one (see ObjectNode.match_top).
    if isinstance(node, LeafNode):
        leaf = leaf_matcher(node)
        return lambda payload: (
            type(payload) is not dict and type(payload) is not list and leaf(payload)
        )
    generic = node.match
    single = _single_entry(node)
    if single is not None:
        key, match = single

        def one_key_payload(payload: Any) -> bool:
            if type(payload) is dict:
                return match(payload.get(key, MISSING))
            return type(payload) is list and generic(payload)

        return one_key_payload
    dict_match = dict_matcher(node)

    def json_payload(payload: Any) -> bool:
        if type(payload) is dict:
            return dict_match(payload)
        return type(payload) is list and generic(payload)

    return json_payload


def _json_payload_top(node: ObjectNode) -> TopMatcher | None:
    # The commonest patterns of all, `{"body": {"field": [...]}}` with one or two fields, in
    # one call per record and pattern instead of three.
    if node.ors or len(node.entries) > 2:
        return None
    generic = node.match
    if len(node.entries) == 1:
        ((key, child),) = node.entries
        match = value_matcher(child)

        def one_key_top(view: Mapping[str, Any], payload: Any) -> bool:
            if type(payload) is dict:
                return match(payload.get(key, MISSING))
            return type(payload) is list and generic(payload)

        return one_key_top
    (key1, child1), (key2, child2) = node.entries
    match1, match2 = value_matcher(child1), value_matcher(child2)

    def two_key_top(view: Mapping[str, Any], payload: Any) -> bool:
        if type(payload) is dict:
            return match1(payload.get(key1, MISSING)) and match2(payload.get(key2, MISSING))
        return type(payload) is list and generic(payload)

    return two_key_top
