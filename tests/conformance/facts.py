"""The facts of one AWS-recorded sample (a fixture in `fixtures/`), and holding an output
against them: key sets and JSON types at every level, formats, the values AWS always sends,
and the keys it never sends. `SOURCES.md` names the sample each fixture mirrors."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.conformance.shapes import (
    fixed_differences,
    format_differences,
    shape_differences,
    values_at,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _without(value: Any, dotted: str) -> None:
    """Remove the key at a dotted path (`[*]` walks every element of a list), in place."""
    *parents, last = dotted.split(".")
    for holder in values_at(value, ".".join(parents)) if parents else [value]:
        if isinstance(holder, dict):
            holder.pop(last, None)


@dataclass(frozen=True)
class Facts:
    """What AWS sends in one case: an example, and the rules a regex or a value can state."""

    name: str
    example: Any
    formats: Mapping[str, str]
    fixed: Mapping[str, Any]
    absent: tuple[str, ...]
    optional: tuple[str, ...]
    raw: Mapping[str, Any]

    def variant(self, name: str) -> Facts:
        """The facts of a named variant: its own example, absent and fixed where it has them."""
        data = self.raw["variants"][name]
        return Facts(
            name=f"{self.name}[{name}]",
            example=data.get("example", self.example),
            formats=self.formats,
            fixed=data.get("fixed", self.fixed),
            absent=tuple(data.get("absent", self.absent)),
            optional=self.optional,
            raw=data,
        )

    def differences(self, actual: Any, *, moto_gets_wrong: Mapping[str, str] = {}) -> list[str]:
        """Every way `actual` differs from what AWS sends. `moto_gets_wrong` maps a path to
        why the emulator, not poller, gives that value: its format is not checked (only ever
        values poller passes through from the emulator, never one poller builds)."""
        found: list[str] = []
        for dotted in self.absent:
            if values_at(actual, dotted):
                found.append(f"{dotted}: present (AWS does not send it)")
        mine, theirs = copy.deepcopy(actual), copy.deepcopy(self.example)
        for dotted in (*self.optional, *self.absent):
            _without(mine, dotted)
            _without(theirs, dotted)
        found += shape_differences(mine, theirs)
        formats = {p: f for p, f in self.formats.items() if p not in moto_gets_wrong}
        formats = {p: f for p, f in formats.items() if values_at(theirs, p)}  # optional ones aside
        found += format_differences(actual, formats)
        found += fixed_differences(actual, self.fixed)
        return found


@cache
def facts(name: str) -> Facts:
    """The facts of `fixtures/<name>.json`."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return Facts(
        name=name,
        example=data["example"],
        formats=data.get("formats", {}),
        fixed=data.get("fixed", {}),
        absent=tuple(data.get("absent", ())),
        optional=tuple(data.get("optional", ())),
        raw=data,
    )


def scenarios(source: str) -> list[dict[str, Any]]:
    """The partial-response scenarios AWS recorded for one source kind."""
    data = json.loads((FIXTURES / "partial_responses.json").read_text())
    return [s for s in data["scenarios"] if s["source"] == source]
