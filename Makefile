# posguard: the two commands a user needs are `make dev` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.posguard-installed

.PHONY: dev test lint typecheck fmt bench clean-state

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

## Run the whole embedded stack in the foreground (Temporal + UI :8233, PostgreSQL, paper exchange, worker).
dev: $(STAMP)
	$(BIN)/posguard dev

# Two pytest processes, each with its own servers, a whole test file at a time; the
# slowest directories first so that no long file starts last and runs alone.
TEST_ORDER := tests/integration tests/test_readme_examples.py tests/workers tests/workflows tests/signals_ingest \
	tests/simulator tests/activities tests/replay tests/domain tests
# The dashboard's browser tests (tests/workers/test_dashboard_browser*.py) drive the
# system's Chromium through Playwright; installed here only when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

## Lint, type-check and run the whole test suite against real servers.
test: $(STAMP) $(CHROMIUM) lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(TEST_ORDER)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

## Forget the embedded stack's state (Temporal history and PostgreSQL data).
clean-state:
	rm -rf .posguard
