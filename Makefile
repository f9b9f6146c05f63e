# idmesh: `make up` runs the local mesh, `make test` runs the tests. Both bootstrap a virtual
# environment (.venv) on a fresh machine that has only python3 (>= 3.11) and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
BUF    := node_modules/.bin/buf

.DEFAULT_GOAL := help
.PHONY: help venv up test proto proto-check lint fmt clean

help:
	@echo "make up     run the local mesh (2 operators, notifier, 2 messengers) under ./$(DATA)"
	@echo "make test   run the test suite (unit + integration over real processes)"
	@echo "make proto  regenerate gen/python from protos/"
	@echo "make lint   buf lint, ruff, mypy"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/idmesh up --data-dir $(DATA)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

proto: $(STAMP)
	$(PY) tools/gen_protos.py

$(BUF):
	npm install --silent --no-audit --no-fund --no-save @bufbuild/buf@1.75.0

lint: $(STAMP) $(BUF)
	$(BUF) lint
	$(VENV)/bin/ruff check services tests tools
	$(VENV)/bin/ruff format --check services tests tools
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format services tests tools
	$(VENV)/bin/ruff check --fix services tests tools

clean:
	rm -rf $(VENV) $(DATA) node_modules .pytest_cache .mypy_cache .ruff_cache
