"""Comparing what poller sent with what AWS recorded: key sets at every level, JSON types
(an integer is not a float, a number is not a string) and value formats.

Values themselves are not compared, except where a fixture pins one (`fixed`): IDs, times
and sequence numbers legitimately vary from run to run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, telling integers from floats as a parser keeps them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def shape_differences(actual: Any, expected: Any, path: str = "$") -> list[str]:
    """Every place where `actual` has another shape than `expected`: a key missing or extra,
    another JSON type, a list element of another shape. Empty when the shapes are equal.

    A list in `expected` gives the shape of every element of the same list in `actual` (its
    first element); an empty expected list requires an empty list.
    """
    kind, wanted = json_type(actual), json_type(expected)
    if kind != wanted:
        return [f"{path}: {kind} {actual!r:.60}, AWS sends {wanted} ({expected!r:.60})"]
    if isinstance(expected, dict):
        found: list[str] = []
        for key in sorted(expected.keys() - actual.keys()):
            found.append(f"{path}.{key}: missing (AWS sends it)")
        for key in sorted(actual.keys() - expected.keys()):
            found.append(f"{path}.{key}: present (AWS does not send it)")
        for key in sorted(expected.keys() & actual.keys()):
            found += shape_differences(actual[key], expected[key], f"{path}.{key}")
        return found
    if isinstance(expected, list):
        if not expected:
            return [] if not actual else [f"{path}: {len(actual)} elements, AWS sends none"]
        found = []
        for index, element in enumerate(actual):
            found += shape_differences(element, expected[0], f"{path}[{index}]")
        return found
    return []


def values_at(value: Any, dotted: str) -> list[Any]:
    """The values at a dotted path; `[*]` walks every element of a list."""
    values = [value]
    for part in dotted.split("."):
        step: list[Any] = []
        name, every = (part[:-3], True) if part.endswith("[*]") else (part, False)
        for current in values:
            if isinstance(current, Mapping) and name in current:
                inner = current[name]
                step += inner if every and isinstance(inner, list) else [inner]
        values = step
    return values


def format_differences(actual: Any, formats: Mapping[str, str]) -> list[str]:
    """Every value at a path of `formats` that does not fully match its regular expression
    (numbers are matched as their JSON text, so `1693997155.0` keeps its `.0`)."""
    found: list[str] = []
    for dotted, pattern in formats.items():
        values = values_at(actual, dotted)
        if not values:
            found.append(f"{dotted}: not present")
        for value in values:
            text = repr(value) if isinstance(value, float) else str(value)
            if not re.fullmatch(pattern, text):
                found.append(f"{dotted}: {text!r} does not match {pattern!r}")
    return found


def fixed_differences(actual: Any, fixed: Mapping[str, Any]) -> list[str]:
    """Every value at a path of `fixed` that is not the value AWS always sends there."""
    found: list[str] = []
    for dotted, wanted in fixed.items():
        values = values_at(actual, dotted)
        if not values:
            found.append(f"{dotted}: not present")
        found += [
            f"{dotted}: {value!r}, AWS sends {wanted!r}" for value in values if value != wanted
        ]
    return found
