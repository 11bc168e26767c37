# sift: the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup demo test bench lint typecheck check clean

$(BIN)/sift: pyproject.toml
	command -v redis-server >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server)
	# The PostgreSQL sink's tests start a private server with pg_ctl (pytest-postgresql).
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ($(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned, so nothing after it can pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/sift

setup: $(BIN)/sift  ## create .venv and install everything, redis-server and PostgreSQL included

demo: setup  ## private Redis + one worker + backfill of examples/, summary table, clean shutdown
	$(BIN)/sift demo

bench: setup  ## the benchmark suite (python -m benchmarks.run); BENCH_ARGS=--quick for a short run
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

test: setup  ## unit and integration tests (integration tests start their own redis-server and workers)
	# One process per core (at most 4), each file on one of them, so module fixtures start their servers once.
	$(BIN)/python -m pytest -q --durations=15 -n auto --maxprocesses=4 --dist loadfile tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
