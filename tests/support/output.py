"""What functions print, as the targets pass it on: one JSON line per line of output."""

from __future__ import annotations

import json
from typing import Any


def output_lines(text: str) -> list[dict[str, Any]]:
    """The function-output JSON lines in captured stdout (they start with `{"ts"`); anything
    else printed there is left out."""
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]
