# Every target installs what it needs into .venv first: a fresh clone needs only Python 3.11 and pip.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/poller demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check poller tests
	$(BIN)/ruff format --check poller tests
	$(BIN)/mypy --strict poller
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

fmt: $(STAMP)
	$(BIN)/ruff format poller tests
	$(BIN)/ruff check --fix poller tests

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
