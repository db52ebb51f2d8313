# The two commands: `make run` and `make test`. Everything else is a convenience.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format migrate seed worker clean-data

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## run: embedded PostgreSQL + in-process Redis stand-in + sandbox WeChat + demo data, on 127.0.0.1:8000
run: install
	$(BIN)/sangyu migrate
	$(BIN)/sangyu seed-demo
	$(BIN)/sangyu serve

## test: the whole suite (TEST_DATABASE_URL / REDIS_URL select real services; default: embedded PostgreSQL)
test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check app tests migrations
	$(BIN)/ruff format --check app tests migrations
	$(BIN)/mypy app

format: install
	$(BIN)/ruff check --fix app tests migrations
	$(BIN)/ruff format app tests migrations

migrate: install
	$(BIN)/sangyu migrate

seed: install
	$(BIN)/sangyu seed-demo

worker: install
	$(BIN)/sangyu worker

## clean-data: delete the embedded database and sandbox keys under ./var (asks no questions)
clean-data:
	rm -rf var

.PHONY: chaos chaos-smoke fuzz security-scan

## chaos: fault injection on real processes (scratch PostgreSQL + Redis on free ports, server, worker); figures as JSON
chaos: install
	$(BIN)/python -m chaos --json docs/chaos-last-run.json

## chaos-smoke: the CI-sized chaos run (about 1.5 minutes)
chaos-smoke: install
	$(BIN)/python -m chaos --smoke

## fuzz: the long schemathesis profile (FUZZ_EXAMPLES per operation and role)
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(BIN)/pytest -q -s tests/security/test_fuzz.py

## security-scan: bandit on app/ and pip-audit on the installed environment
security-scan: install
	bash scripts/security_scan.sh
