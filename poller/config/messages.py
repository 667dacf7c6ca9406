"""pydantic's validation errors as the human messages `poller validate` prints: the path into
the configuration as the user wrote it, and what is wrong in words (with a "did you mean" for a
misspelt key)."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from poller.config.rules import Loc, show


def describe_error(error: ErrorDetails, root: type[BaseModel]) -> tuple[Loc, str]:
    """Turn one pydantic error into `(path, human message)`; `root` is the validated model."""
    loc = tuple(error["loc"])
    path, _ = _walk(root, loc)
    kind, got, ctx = error["type"], show(error.get("input")), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return path, _unknown_key(str(loc[-1]), _walk(root, loc[:-1])[1])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = ", ".join(_union_tags(_walk(root, loc)[1]))
        tag = ctx.get("tag")
        return (*path, "type"), f"must be one of {expected}" + (f" (got {tag!r})" if tag else "")
    if kind == "missing":
        return path, "required"
    if kind.startswith("int_"):
        return path, f"must be an integer (got {got})"
    if kind.startswith("float_"):
        return path, f"must be a number (got {got})"
    if kind.startswith("bool_"):
        return path, f"must be true or false (got {got})"
    if kind.startswith("string_"):
        return path, f"must be a string (got {got})"
    if kind.startswith(("datetime_", "date_")):
        return path, f"must be an ISO 8601 date-time or epoch seconds (got {got})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return path, f"must be a mapping (got {got})"
    if kind == "list_type":
        return path, f"must be a list (got {got})"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        return path, f"must be {'one of ' if ' or ' in expected else ''}{expected} (got {got})"
    message = error["msg"].removeprefix("Value error, ")
    return path, message if kind == "poller" else message[:1].lower() + message[1:]


def _unknown_key(key: str, container: Any) -> str:
    allowed = sorted(container.model_fields) if _is_model(container) else []
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    return f"unknown key {key!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """Follow a pydantic loc through the model types: the user's path and the type it ends at.

    Drops what pydantic adds that the YAML does not have: a discriminated union's tag (`'lambda'`
    in `('target', 'lambda', 'function')`) and `'[key]'` for errors in a dict's keys.
    """
    path: list[str | int] = []
    current: Any = root
    for element in loc:
        current = _unwrap(current)
        tags = _union_tags(current)
        if isinstance(element, str) and element in tags:
            current = tags[element]
            continue
        if element == "[key]":
            current = None
            continue
        path.append(element)
        if _is_model(current) and isinstance(element, str) and element in current.model_fields:
            current = current.model_fields[element].annotation
        elif get_origin(current) is list:
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            current = None
    return tuple(path), _unwrap(current)


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _union_tags(tp: Any) -> dict[str, Any]:
    """For a union of models discriminated by `type`, map each tag to its model."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    tags: dict[str, Any] = {}
    for member in get_args(tp):
        field = member.model_fields.get("type") if _is_model(member) else None
        for tag in get_args(field.annotation) if field else ():
            tags[tag] = member
    return tags


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
