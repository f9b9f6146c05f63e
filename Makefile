# idmesh: `make up` runs the local mesh, `make test` runs the tests. Both bootstrap a virtual
# environment (.venv) on a fresh machine that has only python3 (>= 3.11) and make.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
BUF    := node_modules/.bin/buf

.DEFAULT_GOAL := help
.PHONY: help venv up up-pg failover down reset test chaos proto proto-baseline lint fmt bench clean promtool

help:
	@echo "make up     run the local mesh (2 operators, notifier, 2 messengers) under ./$(DATA)"
	@echo "            (BASE_PORT=N: its ports from N, beside another mesh with DATA=other)"
	@echo "make up-pg  the same mesh on PostgreSQL (embedded, under ./$(DATA)-pg/postgres, or the"
	@echo "            server of IDMESH_DATABASE_URL), REPLICAS=2 replicas of every service;"
	@echo "            STANDBY=1: an embedded primary and a synchronous streaming standby"
	@echo "make failover  (with make up-pg STANDBY=1) crash the primary, promote the standby"
	@echo "make down   stop the running mesh, from any terminal (make up's or make up-pg's;"
	@echo "            DATA=dir: only the one of ./dir)"
	@echo "make reset  stop the mesh and delete its data (./$(DATA), ./$(DATA)-pg), not the venv"
	@echo "make test   run the test suite (unit + integration over real processes)"
	@echo "make chaos  seeded fault run of the mesh, checked (CHAOS_ARGS=\"--seed N --rounds N\")"
	@echo "make proto  regenerate gen/python from protos/"
	@echo "make lint   buf lint, buf breaking (against the published v1), ruff check, ruff format --check, mypy strict (CI runs it with make test)"
	@echo "make bench  benchmarks against same-run baselines, SQLite and PostgreSQL -> docs/benchmarks.md, docs/capacity.md (~10 min)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,fast]'
	@touch $(STAMP)

venv: $(STAMP)

# `make bench`: the benchmarks (not part of `make test`; about 10 minutes on 2 cores: SQLite,
# then PostgreSQL with one and two replicas of every service, and a synchronous standby's cost).
# Writes bench/results/latest.json, docs/benchmarks.md, docs/capacity.md and docs/benchmarks.png,
# with a py-spy profile of the services during each scenario (bench/results/profiles/; sampled at
# 67 Hz without stopping them).
# BENCH_ARGS=--full for the full counts (100,000 terminations, 10,000,000 rows), BENCH_ARGS="--only verify" for one scenario,
# BENCH_ARGS="--engines sqlite" for SQLite alone.
BENCH_STAMP := $(VENV)/.bench-installed-stamp

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,fast,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench --docs --profile $(BENCH_ARGS)

up: $(STAMP)
	$(VENV)/bin/idmesh up --data-dir $(DATA) $(if $(BASE_PORT),--base-port $(BASE_PORT))

# `make up-pg`: its own data folder (./data-pg), so that `make up` and `make up-pg` never mix
# SQLite files and databases; stop it with Ctrl-C or `make down`. STANDBY=1: a primary and a
# synchronous streaming standby (under ./data-pg/postgres-pair) instead of the one server, and
# `make failover` crashes the primary and promotes the standby while the mesh runs.
REPLICAS ?= 2
STANDBY ?=

up-pg: $(STAMP)
	$(VENV)/bin/idmesh up --postgres --replicas $(REPLICAS) --data-dir $(DATA)-pg \
		$(if $(BASE_PORT),--base-port $(BASE_PORT)) \
		$(if $(filter-out 0 no false,$(STANDBY)),--standby)

failover: $(STAMP)
	$(VENV)/bin/idmesh failover --data-dir $(DATA)-pg

# `make down`: without DATA=..., `idmesh down` stops whichever of ./data and ./data-pg runs.
DATA_GIVEN := $(filter command line environment,$(origin DATA))

down: $(STAMP)
	$(VENV)/bin/idmesh down $(if $(DATA_GIVEN),--data-dir $(DATA))

# `make reset`: the demo from scratch (stop the mesh, delete its data); the venv stays.
reset: down
	rm -rf $(DATA) $(DATA)-pg

# buf too: tests/test_protos_lint.py runs `buf lint` (no skipping in `make test`); and promtool:
# tests/deploy/test_monitoring.py checks and unit-tests deploy/monitoring/alerts.yaml.
test: $(STAMP) $(BUF) promtool
	$(PY) -m pytest $(PYTEST_ARGS)

# `make chaos`: the mesh under kills, failpoints and stalls with a mixed load (CHAOS_ARGS="--postgres":
# database crash-restarts, failovers, latency and, as root, partitions between hosts too), then a
# checker over the recorded history (docs/chaos.md). A few minutes by default;
# CHAOS_ARGS="--seed N --rounds N".
chaos: $(STAMP)
	$(PY) -m tools.chaos $(CHAOS_ARGS)

# promtool from Debian's prometheus package (root installs it; others are told the command).
promtool:
	@command -v promtool >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }; \
		else echo "make test needs promtool: sudo apt-get install prometheus" >&2; exit 1; fi; }

proto: $(STAMP)
	$(PY) tools/gen_protos.py

# buf, pinned with its checksums in package.json and package-lock.json, installed by `npm ci`
# into this folder's node_modules/ (--prefix: never into a package.json npm finds above it).
$(BUF): package.json package-lock.json
	npm ci --prefix . --silent --no-audit --no-fund
	@test -x $(BUF) || { echo "npm ci installed no $(BUF)" >&2; exit 1; }
	@touch $(BUF)

# buf breaking: the protos may not break the v1 API as first published, kept as a buf image of
# protos/ at commit $(PROTO_BASELINE_COMMIT). BUF_AGAINST=<input> compares with another input
# instead, for example `.git#branch=main` (a branch against main).
PROTO_BASELINE := protos/baseline/v1.binpb
PROTO_BASELINE_COMMIT := e44ebf8
BUF_AGAINST ?= $(PROTO_BASELINE)

# `make proto-baseline` builds the baseline image again from git (it needs the history); the
# image only ever changes when a new published version is added beside it.
proto-baseline: $(BUF)
	rm -rf .proto-baseline && mkdir .proto-baseline
	git archive $(PROTO_BASELINE_COMMIT) protos buf.yaml | tar -x -C .proto-baseline
	cd .proto-baseline && ../$(BUF) build -o ../$(PROTO_BASELINE)
	rm -rf .proto-baseline

# ruff and mypy check the same folders: services, tests, tools and bench (mypy's in pyproject.toml's
# [tool.mypy] packages, strict).
lint: $(STAMP) $(BUF)
	$(BUF) lint
	$(BUF) breaking --against '$(BUF_AGAINST)'
	$(VENV)/bin/ruff check services tests tools bench
	$(VENV)/bin/ruff format --check services tests tools bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format services tests tools bench
	$(VENV)/bin/ruff check --fix services tests tools bench

clean:
	rm -rf $(VENV) $(DATA) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
