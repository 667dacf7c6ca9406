"""`python -m tests.alerts` (`make rules`): promtool checks the alert rules and runs their tests.

deploy/prometheus/alerts.yaml is a PrometheusRule, and promtool reads plain rule files: its
`spec` is written to a temporary directory, once as it is (for `promtool check rules`) and once
with `summary` as the only annotation beside a copy of alerts-test.yaml (for `promtool test
rules`, which compares annotations exactly: the others are fixed text, the summary is templated).
Exits with promtool's status; 2 when promtool is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
TESTS = Path(__file__).with_name("alerts-test.yaml")


def rule_file(*, summaries_only: bool = False) -> str:
    """The rule groups of alerts.yaml as a plain rule file."""
    spec: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["spec"]
    if summaries_only:
        for group in spec["groups"]:
            for rule in group["rules"]:
                rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    return yaml.safe_dump(spec, sort_keys=False)


def main() -> int:
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool is not on PATH (Debian: apt-get install prometheus)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        checked = Path(directory) / "poller.rules.yaml"
        checked.write_text(rule_file(), encoding="utf-8")
        tested = Path(directory) / "alerts.rules.yaml"  # the name alerts-test.yaml reads
        tested.write_text(rule_file(summaries_only=True), encoding="utf-8")
        shutil.copy(TESTS, directory)
        for command in (
            ["check", "rules", checked],
            ["test", "rules", Path(directory) / TESTS.name],
        ):
            done = subprocess.run([promtool, *map(str, command)], check=False)
            if done.returncode:
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
