"""What `poller demo` tells a person: its mappings by their names, its numbers, its install hint."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from importlib import resources

import pytest

from poller.demo import environment
from poller.demo.install import install_hint
from poller.wiring import parse_settings


def _demo_mapping_names() -> list[str]:
    text = resources.files("poller.demo").joinpath("demo.yaml").read_text()
    return [mapping.name for mapping in parse_settings(text, "demo.yaml", environ={}).mappings]


def test_the_header_names_every_mapping_as_demo_yaml_does_and_explains_failed() -> None:
    names = _demo_mapping_names()
    text = environment.header(names, "http://127.0.0.1:5000", pathlib.Path("/tmp/d.log"), 30)
    described = [line.strip().partition(":")[0] for line in text.splitlines()[1 : len(names) + 1]]
    assert described == names
    for name in names:
        assert environment.SHOWS[name]
    assert "stopping after 30s" in text
    assert "`N failed`" in text
    assert "poison orders" in text and "demo-orders-dlq after 3 receives" in text


def test_the_install_hint_names_the_checkout_this_installation_came_from(
    tmp_path: pathlib.Path,
) -> None:
    checkout = tmp_path / "src" / "poller"
    checkout.mkdir(parents=True)
    editable = json.dumps({"url": checkout.as_uri(), "dir_info": {"editable": True}})
    assert install_hint(editable, "/venv/bin/python") == (
        f"/venv/bin/python -m pip install -e '{checkout}[demo]'"
    )
    wheel = tmp_path / "poller-0.1.0-py3-none-any.whl"
    wheel.touch()
    from_wheel = json.dumps({"url": wheel.as_uri(), "archive_info": {}})
    assert install_hint(from_wheel, "python3") == f"python3 -m pip install '{wheel}[demo]'"
    gone = json.dumps({"url": (tmp_path / "gone.whl").as_uri(), "archive_info": {}})
    for unknown in ("", "not json", json.dumps({"url": "https://example.invalid/p.zip"}), gone):
        assert install_hint(unknown, "python3") == (
            "python3 -m pip install '.[demo]' (in a checkout of poller's source)"
        )


def test_without_moto_the_demo_says_how_to_add_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)  # what an install without moto has
    with pytest.raises(RuntimeError) as raised:
        environment._start_emulator()
    message = str(raised.value)
    assert f"{sys.executable} -m pip install" in message
    assert "[demo]'" in message
    assert "'poller[demo]'" not in message


# In a fresh interpreter, as `poller demo` runs: werkzeug decides where its records go at its
# first log call, the emulator's first request, which comes before the daemon's logging is set.
_EMULATOR_ERROR = """
import io, logging, sys, urllib.request
from werkzeug._internal import _log
from poller.demo.environment import _start_emulator
from poller.ops.logs import configure_logging
server, endpoint = _start_emulator()
urllib.request.urlopen(endpoint + "/moto-api/data.json").read()
log = io.StringIO()
configure_logging("INFO", "json", stream=log)
_log("error", "Error on request: an emulator error")
server.stop()
assert "an emulator error" in log.getvalue(), log.getvalue()
"""


def test_an_emulator_error_goes_to_the_log_file_not_the_terminal() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EMULATOR_ERROR],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "an emulator error" not in done.stderr
