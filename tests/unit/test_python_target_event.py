"""The python target decodes an event to the objects json.loads gives, whatever the payload."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from poller.targets.python import _event

GOLDEN = sorted((Path(__file__).parents[1] / "conformance" / "golden").glob("*.json"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_event_decodes_as_json_loads_does(path: Path) -> None:
    payload = path.read_bytes()
    assert _event(payload) == json.loads(payload)


def test_what_orjson_refuses_is_decoded_by_json() -> None:
    # A window state comes from a function's answer: json accepts NaN and huge integers there.
    payload = b'{"Records":[],"state":{"big":123456789012345678901234567890,"x":NaN}}'
    event = _event(payload)
    assert event["state"]["big"] == 123456789012345678901234567890
    assert math.isnan(event["state"]["x"])
    with pytest.raises(ValueError):
        _event(b'{"Records": [')
