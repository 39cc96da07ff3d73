# condpay: `make run` (the simulator's smoke scenario on embedded SQLite) and `make test` (the whole suite, PostgreSQL
# included) do all set-up on a fresh machine. `make help` lists every target.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Project-local tools that are no Python packages (gitignored). buf comes from npm, where the
# @bufbuild/buf package ships the binary for each platform (PyPI has none; GitHub may be out of reach).
TOOLS       := .tools
BUF_VERSION := 1.75.0
BUF         := $(TOOLS)/node_modules/.bin/buf
BUF_STAMP   := $(TOOLS)/.buf-$(BUF_VERSION)

.DEFAULT_GOAL := help
.PHONY: help venv buf run demo serve test test-fast lint fmt proto client-wheel bench bench-sim postgres-binaries browser clean
.PHONY: ha-up ha-drill

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Two distributions from one checkout: condpay-client (proto/pyproject.toml: the SDK, wallets,
# contracts_dsl) and the server, condpay, which depends on it; both editable, in one pip call so
# that the server's condpay-client requirement is met by ./proto (docs/packaging.md).
$(STAMP): pyproject.toml proto/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./proto -e '.[dev,sim]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv and install condpay, the client and the dev tools (when a pyproject.toml changed)

$(BUF_STAMP):
	@command -v npm >/dev/null 2>&1 || { echo "buf is installed with npm: install Node.js and npm (Debian: apt-get install npm)" >&2; exit 1; }
	rm -rf $(TOOLS)/node_modules $(TOOLS)/.buf-*
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --ignore-scripts --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	$(BUF) --version
	@touch $(BUF_STAMP)

buf: $(BUF_STAMP) ## install the buf CLI (protobuf lint and breaking-change checks) into .tools/

run: venv ## start the core and the bridge on embedded SQLite, run the smoke scenario, report, stop
	$(BIN)/condpay sim run smoke

demo: venv ## the guided story of one trade (money, a conditional payment, an eBL across currencies, an inventory loan)
	$(BIN)/condpay demo

serve: venv ## the server alone, plaintext development mode, on 127.0.0.1:50051 and ./var/condpay.db
	$(BIN)/condpay serve --insecure

postgres-binaries: ## install the Debian postgresql package (and pg_auto_failover for it) when missing
	@if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1; then \
	  true; \
	else \
	  echo "PostgreSQL server binaries not found: installing the Debian package postgresql"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	fi
	@# pg_auto_failover (the replicated cluster of `make ha-up`, `make ha-drill` and the failover
	@# test) is built per PostgreSQL major version: the package matching the newest one installed.
	@if command -v pg_autoctl >/dev/null 2>&1; then \
	  true; \
	else \
	  MAJOR=$$(ls /usr/lib/postgresql | sort -n | tail -1); \
	  echo "pg_autoctl not found: installing the Debian package postgresql-$$MAJOR-auto-failover"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql-$$MAJOR-auto-failover >/dev/null; \
	fi

browser: ## install the Debian chromium package when no chromium binary is found (report screenshots)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1; then \
	  true; \
	else \
	  echo "chromium not found: installing the Debian package chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

# Two processes, each with its own throwaway PostgreSQL; an idle one takes tests from the other's
# queue (worksteal), so the suite does not wait at the end on one process's last long file
# (14 min 18 s with whole files each against 12 min 12 s, one run each in the same hour).
# PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= 2
test: venv postgres-binaries browser ## the whole suite on SQLite and a throwaway PostgreSQL (2 processes)
	$(BIN)/pytest --numprocesses=$(PYTEST_WORKERS) --dist=worksteal

test-fast: venv ## the suite without PostgreSQL
	$(BIN)/pytest -m "not postgres"

# buf breaking compares proto/ (with uncommitted edits) to a base commit: on a branch, the commit it
# forked from main (merge-base with origin/main, else main), so the whole branch is checked; on main
# itself, where that merge base is HEAD (CI's fresh clone of main), HEAD~1. BUF_AGAINST=<rev> picks
# another. proto/buf_breaking.sh has the details (it needs the history: no shallow clone).
lint: venv buf ## ruff (lint and format check), mypy --strict, buf lint and buf breaking (proto/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BUF) lint proto
	proto/buf_breaking.sh $(BUF) $(BUF_AGAINST)

fmt: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: venv ## regenerate the committed stubs and typed facades (condpay/services.py) from the .proto files
	$(BIN)/python proto/generate.py

client-wheel: venv ## build the client-only distribution (the SDK, no server) -> dist/condpay_client-*.whl
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist ./proto
	@ls dist/condpay_client-*.whl

bench: venv postgres-binaries ## transfers, lifecycles, PvP/DvP per second and latency on SQLite and PostgreSQL -> var/bench/*.json
	$(BIN)/python -m tests.bench

ha-up: venv postgres-binaries ## a replicated local setup (pg_auto_failover, a bridge, 3 replicas) until Ctrl-C
	$(BIN)/python -m tests.drills.ha_up

ha-drill: venv postgres-binaries ## lose the primary PostgreSQL (then a replica, then a standby) under load: var/ha/drill.json
	$(BIN)/python -m tests.drills.ha

bench-sim: venv ## the gba-day scenario (3,000 orders) on embedded SQLite -> var/bench/gba-day/report.json
	$(BIN)/condpay sim run gba-day --report var/bench/gba-day

clean: ## remove the venv, the tools, ./var and caches
	rm -rf $(VENV) $(TOOLS) var dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
