"""The lock (requirements/*.txt) against pyproject.toml, and who installs from which file.

`make lock` writes the files; these tests catch a range changed in pyproject.toml without a new
lock, a pin without a hash, and an install path that bypasses the lock.
"""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)")


def _pins(name: str) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, hashes)} of requirements/NAME.txt."""
    text = (REQUIREMENTS / f"{name}.txt").read_text(encoding="utf-8").replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.fullmatch(line)
        assert match, f"requirements/{name}.txt: not a pinned requirement: {line}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", match["rest"])
        pins[canonicalize_name(match["name"])] = (match["version"], hashes)
    return pins


def _required(*groups: str) -> list[Requirement]:
    """The requirements of pyproject.toml's groups: `runtime`, `build` or an extra's name."""
    requirements: list[str] = []
    for group in groups:
        if group == "runtime":
            requirements += PROJECT["project"]["dependencies"]
        elif group == "build":
            requirements += PROJECT["build-system"]["requires"]
        else:
            requirements += PROJECT["project"]["optional-dependencies"][group]
    return [Requirement(text) for text in requirements]


LOCKS = {
    "runtime": ("runtime",),
    "build": ("build",),
    "demo": ("runtime", "demo", "build"),
    "dev": ("runtime", "dev", "demo", "build"),
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_requirement_is_pinned_within_its_range_and_hashed(lock: str) -> None:
    pins = _pins(lock)
    for requirement in _required(*LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements/{lock}.txt lacks {requirement}: run `make lock`"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={version}, outside {requirement}: `make lock`"
        )
    for name, (version, hashes) in pins.items():
        assert hashes, f"requirements/{lock}.txt: {name}=={version} has no --hash"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_files_hold_no_index_settings_of_the_machine_that_wrote_them(lock: str) -> None:
    lines = (REQUIREMENTS / f"{lock}.txt").read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for option in ("--index-url", "--extra-index-url", "--find-links", "-f ", "file://"):
        assert option not in text, f"requirements/{lock}.txt carries {option}"


def test_the_demo_lock_installs_no_dev_tool() -> None:
    tools = {"pytest", "pytest-asyncio", "hypothesis", "ruff", "mypy", "import-linter", "pip-tools"}
    assert tools <= {canonicalize_name(r.name) for r in _required("dev")}
    assert not tools & _pins("demo").keys()


def _rule(makefile: str, target: str) -> str:
    """A Makefile rule's line of prerequisites and its recipe, up to the next blank line."""
    match = re.search(rf"^{re.escape(target)}:(.*?)(?:\n\n|\Z)", makefile, re.M | re.S)
    assert match, f"no rule for {target}"
    return match.group(1)


def test_make_run_installs_the_demo_lock_and_make_test_the_dev_lock() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert _rule(makefile, "run").split("\n")[0].split() == ["$(DEMO_STAMP)"]
    assert "requirements/demo.txt" in _rule(makefile, "$(DEMO_STAMP)")
    assert _rule(makefile, "test").split("\n")[0].split() == ["lint"]
    assert _rule(makefile, "lint").split("\n")[0].split() == ["$(DEV_STAMP)"]
    assert "requirements/dev.txt" in _rule(makefile, "$(DEV_STAMP)")
    install = re.search(r"^define install\n(.*?)^endef", makefile, re.M | re.S)
    assert install, "no install recipe"
    steps = [line.strip() for line in install.group(1).splitlines() if line.startswith("\t")]
    assert steps[0].startswith("@echo "), "the install says what it installs before anything"
    assert "--require-hashes -r requirements/$(2).txt" in install.group(1).replace("\\\n", "")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)


def test_the_image_installs_the_runtime_lock_with_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    assert re.search(r"pip install --require-hashes -r requirements/build\.txt", dockerfile)
    assert re.search(
        r"/opt/venv/bin/pip install --require-hashes [^&]*-r requirements/runtime\.txt",
        dockerfile,
    )
    assert re.search(r"/opt/venv/bin/pip install --no-deps /wheels/poller-", dockerfile)
