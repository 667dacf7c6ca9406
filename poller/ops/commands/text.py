"""Plain-text tables for the operator's commands: columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence

NONE = "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """`header` and `rows` as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def cell(value: object) -> str:
    """A value as a table shows it: `-` for nothing."""
    return NONE if value is None or value == "" else str(value)
