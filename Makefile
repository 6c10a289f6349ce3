# Two commands set everything up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs batchrank, runs jobs/sample.toml on sample_data/
#   make test   creates .venv if needed, installs the dev extras, runs lint, types and pytest
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest bench clean constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray,redis,lake,tfds]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/batchrank run jobs/sample.toml

test: $(DEV_STAMP)
	.ci/ensure-redis-server
	$(MAKE) lint typecheck pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check batchrank tests
	$(BIN)/ruff format --check batchrank tests

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/batchrank bench --pairs 20000000

# Refresh the pinned versions deliberately, after testing them.
constraints: $(DEV_STAMP)
	$(BIN)/pip freeze --exclude-editable | grep -v '^batchrank' > constraints.txt

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
