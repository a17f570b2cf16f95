# Every target the README names. `make test` and `make demo` set everything up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-reliability test-static lint format migrate run-api run-worker run-fulfilment run-collector demo reset bench bench-quick bench-publish clean

install: $(STAMP)

# Recreated whenever the pins change. constraints.txt pins every transitive dependency.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/pip check
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

test-reliability: $(STAMP)
	$(BIN)/pytest -m reliability

test-static: $(STAMP)
	$(BIN)/pytest -m static

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Create or upgrade the tables (creating DATABASE_SCHEMA on PostgreSQL) and seed them. Run it
# once before run-api/run-worker; `make demo` and `reservations run` do it themselves.
migrate: $(STAMP)
	$(BIN)/python -m store.migrate

run-api: $(STAMP)
	$(BIN)/python -m api

run-worker: $(STAMP)
	$(BIN)/python -m workers.credit_check

# The API and both workers, an embedded trace collector (no Docker), a confirmed and a rejected
# reservation, and the confirmed one's whole trace as a waterfall. Then it keeps running until
# Ctrl-C; DEMO_EXIT=1 make demo stops after the waterfall (CI). Needs RabbitMQ (AMQP_URL).
demo: $(STAMP)
	$(BIN)/reservations demo

run-fulfilment: $(STAMP)
	$(BIN)/python -m workers.fulfilment

# Only the embedded OTLP trace collector on 127.0.0.1:4317, for the services run by hand.
run-collector: $(STAMP)
	$(BIN)/reservations collector

# Start from scratch: the SQLite database and the collected traces go, .venv stays.
reset: $(STAMP)
	$(BIN)/reservations reset

# End-to-end benchmark: the system and its lean twin, untraced and traced, beside the bare
# aio-pika loop, in one run. Results go to bench/results/local/<db>.{json,png} (git-ignored);
# `make bench-publish` copies them to the committed bench/results/. BENCH_ARGS adds options,
# e.g. `make bench BENCH_ARGS="--db postgres"`. Needs the local RabbitMQ (rabbitmqctl, for a
# private vhost); uses wrk when installed.
BENCH_ARGS ?=
PUBLISH_ARGS ?=

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

bench-publish: $(STAMP)
	$(BIN)/python -m bench.publish $(PUBLISH_ARGS)

clean:
	rm -rf $(VENV) .data .mypy_cache .ruff_cache .pytest_cache
