# Remora: `make run` starts it, `make test` proves it.  `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-deps lint zipapp man bench bench-deps bench-fanout clean format

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,postgres]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install Remora (editable) with the dev tools

run: $(STAMP) ## Install if needed, then start Remora (queue + workers + API) with `remora up`
	$(VENV)/bin/remora up $(ARGS)

test-deps: ## Install what the tests need from the system (sshd, PostgreSQL, Chromium) when missing
	@bash scripts/install_test_deps.sh

test: test-deps $(STAMP) ## Run the whole test suite (PYTEST_ARGS: run only what they select)
	@PY=$(PY) bash scripts/run_tests.sh $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check, mypy on the core
	$(VENV)/bin/ruff check remora tests scripts remora.py
	$(VENV)/bin/ruff format --check remora tests scripts remora.py
	$(VENV)/bin/mypy

format: $(STAMP) ## Format the code with ruff
	$(VENV)/bin/ruff check --fix -q remora tests scripts remora.py || true
	$(VENV)/bin/ruff format -q remora tests scripts remora.py

zipapp: $(STAMP) ## Build dist/remora.pyz with shiv
	@mkdir -p dist
	$(VENV)/bin/shiv -q --compressed --compile-pyc -c remora -o dist/remora.pyz -p '/usr/bin/env python3' . 'psycopg2-binary>=2.9'
	@ls -l dist/remora.pyz

man: $(STAMP) ## Generate man/remora.1 from the command tree
	$(PY) scripts/gen_man.py > man/remora.1

BENCHES := queue worker api cli dashboard

bench: $(STAMP) ## Run every benchmark (one JSON object per line); `make bench-queue` runs one
	@for b in $(BENCHES); do $(PY) scripts/bench_$$b.py --json | $(PY) -c 'import json,sys; print(json.dumps({"bench": sys.argv[1], **json.load(sys.stdin)}))' $$b || exit 1; done

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[dev,postgres,bench]'
	@touch $(BENCH_STAMP)

bench-deps: $(BENCH_STAMP) ## Install the benchmarks' extra tools (fabric, parallel-ssh, ansible-core, beanstalkd)
	@bash scripts/install_bench_deps.sh

bench-fanout: $(BENCH_STAMP) ## Remora's fan-out against fabric, parallel-ssh and Ansible (minutes; not in `make bench`)
	$(PY) scripts/bench_fanout.py --json $(ARGS)

bench-%: $(STAMP)
	$(PY) scripts/bench_$*.py --json

clean: ## Remove build output and caches (keeps .venv)
	rm -rf dist build *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
