# Every target installs what it needs into .venv first: a fresh clone needs only Python 3.11 and pip.
# Versions come from the lock, requirements/*.txt (pinned and hashed; `make lock` refreshes it):
# `make run` installs poller with its demo extra only, every other target the dev tools as well.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
DEV_STAMP := $(VENV)/.installed-dev
# `make lock` moves every pin to the newest release the ranges in pyproject.toml allow;
# `make lock LOCK_UPGRADE=` keeps the pins and only resolves what pyproject.toml changed.
LOCK_UPGRADE ?= --upgrade
LOCKS := runtime build demo dev

.PHONY: run test lint rules fmt bench chaos lock clean $(LOCKS:%=lock-%)

# $(1): what is installed, for the message; $(2): the lock file. The message comes first, so a
# fresh clone shows at once what it is waiting for. poller itself goes in editable, with no
# dependencies and no build isolation: the lock holds everything, setuptools included, so
# nothing unpinned is fetched.
define install
	@echo "make: installing poller with $(1) into $(VENV), versions from requirements/$(2).txt"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off \
		--require-hashes -r requirements/$(2).txt
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar off \
		--no-deps --no-build-isolation -e .
	touch $@
endef

$(DEMO_STAMP): pyproject.toml requirements/demo.txt
	$(call install,the demo extra (moto),demo)

$(DEV_STAMP): pyproject.toml requirements/dev.txt
	$(call install,the demo extra and the dev tools,dev)

run: $(DEMO_STAMP)
	$(BIN)/poller demo $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check poller tests
	$(BIN)/ruff format --check poller tests
	$(BIN)/mypy --strict poller
	$(BIN)/lint-imports

# promtool checks the alert rules and runs their tests, when it is installed (.ci/run installs it).
rules: $(DEV_STAMP)
	@if command -v promtool >/dev/null 2>&1; then $(BIN)/python -m tests.alerts; \
	else echo "promtool not on PATH: alert rule checks skipped (apt-get install prometheus)"; fi

# The tests run in TEST_WORKERS processes (pytest-xdist), each with its own emulator: most of a
# test's time is spent waiting on a daemon it started, so two halve the run on two cores.
# `make test TEST_WORKERS=0` runs them in one process, as plain `pytest` does.
TEST_WORKERS ?= 2

test: lint
	@$(MAKE) --no-print-directory rules
	$(BIN)/pytest -q -n $(TEST_WORKERS)

fmt: $(DEV_STAMP)
	$(BIN)/ruff format poller tests
	$(BIN)/ruff check --fix poller tests

bench: $(DEV_STAMP)
	$(BIN)/python -m tests.benchmarks

# The chaos suite, the pre-release check (not part of `make test`: 5 to 6 minutes on 2 cores).
# `make chaos ARGS="--seed 7 sqs-"` runs the scenarios whose names start with `sqs-`.
chaos: $(DEV_STAMP)
	$(BIN)/python -m tests.chaos $(ARGS)

# The four lock files, resolved side by side (each takes a minute or more against the index).
lock: $(DEV_STAMP)
	@echo "make lock: resolving pyproject.toml into requirements/{$(shell echo $(LOCKS) | tr ' ' ,)}.txt"
	@$(MAKE) --no-print-directory -j4 $(LOCKS:%=lock-%)

LOCK_OPTIONS_runtime :=
LOCK_OPTIONS_build := --all-build-deps --only-build-deps
LOCK_OPTIONS_demo := --extra demo --all-build-deps
LOCK_OPTIONS_dev := --extra dev --extra demo --all-build-deps

# Hashes, pip and setuptools pinned, no index settings of this machine: [tool.pip-tools].
$(LOCKS:%=lock-%): lock-%:
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet $(LOCK_UPGRADE) \
		$(LOCK_OPTIONS_$*) --output-file requirements/$*.txt pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
