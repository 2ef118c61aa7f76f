# contactsync: `make run` serves, `make test` tests. Nothing to install by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint check clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,mcp]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install contactsync with its pinned dependencies

run: $(STAMP) ## Serve on HOST:PORT (127.0.0.1:8000); embedded PostgreSQL unless DATABASE_URL is set
	$(BIN)/contactsync serve

test: $(STAMP) ## Run the whole suite (TEST_DATABASE_URL, else an embedded PostgreSQL)
	$(BIN)/pytest

lint: $(STAMP) ## Lint app/ and tests/ with ruff
	$(BIN)/ruff check app tests wsgi.py

check: lint test ## Lint, then test

# The bench extra (matplotlib) only for `make bench`, behind its own stamp.
BENCH_STAMP := $(VENV)/.bench-installed
.PHONY: bench

$(BENCH_STAMP): $(STAMP) setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev,mcp,bench]'
	touch $(BENCH_STAMP)

# SCALE=2m: the same scenarios at 2,000,000 stored contacts (.data/bench-2m, kept between runs).
SCALE ?= 200k

bench: $(BENCH_STAMP) ## Benchmark service vs engine SQL vs one-statement floor (not part of test); SCALE=2m
	SCALE=$(SCALE) $(BIN)/python -m bench.run

# A cut too small for `make bench` to see: both trees served side by side, ABBA rounds.
REV ?= HEAD~1
.PHONY: compare

compare: $(BENCH_STAMP) ## Compare this tree with commit REV (HEAD~1) side by side through gunicorn
	$(BIN)/python -m bench.compare $(REV)

clean: ## Remove the virtualenv, the embedded database and caches
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .hypothesis *.egg-info
