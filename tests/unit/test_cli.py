"""The command line's own texts: --version, --help, and what each option says about itself."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from poller import cli


def _output(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 0
    captured = capsys.readouterr()
    assert not captured.err
    return " ".join(captured.out.split())  # argparse wraps to the terminal's width


def test_version_is_the_installed_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _output(capsys, "--version") == f"poller {importlib.metadata.version('poller')}"


def test_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    text = _output(capsys, "--help")
    for command in ("run", "validate", "demo"):
        assert re.search(rf"\b{command}\b", text)
    assert "--version" in text
    assert "Exit codes" in text
    assert "Thin on purpose" not in text
    assert not re.search(r"SPEC|ESM-SEMANTICS|MOTO-NOTES|§", text)


@pytest.mark.parametrize(
    ("command", "format_default"),
    [("run", "text when stdout is a terminal, json otherwise"), ("demo", "json")],
)
def test_log_options_say_what_they_do_and_their_defaults(
    capsys: pytest.CaptureFixture[str], command: str, format_default: str
) -> None:
    text = _output(capsys, command, "--help")
    level = text.partition("--log-level {DEBUG,INFO,WARNING,ERROR} ")[2]
    assert level.startswith("the least severe level poller logs (default: INFO)")
    log_format = text.partition("--log-format {json,text} ")[2]
    assert log_format.startswith("json: one JSON object per line; text: for reading")
    assert f"(default: {format_default}" in log_format
