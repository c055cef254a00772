# The two commands: `make run` (the system) and `make test` (the whole suite). See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export EHR_VENV := $(abspath $(VENV))
export PYTHONPATH := $(CURDIR)/scripts:$(CURDIR)/plugin:$(CURDIR)

.PHONY: install run up down status token samples reconcile test lint unit integration bench soak clean

install:
	@scripts/install.sh

run: install            ## the stack in the foreground, samples loaded; Ctrl-C stops it
	@$(PY) -m ehr_stack run

up: install             ## the same stack in the background; returns once healthy
	@$(PY) -m ehr_stack up

down:                   ## stop the background stack
	@if [ -x $(PY) ]; then $(PY) -m ehr_stack down; fi

status:
	@$(PY) -m ehr_stack status

ROLE ?= ehr-service
token: install          ## a development JWT: make token ROLE=doctor
	@$(PY) -m ehr_stack token --role $(ROLE)

samples: install        ## build the sample studies into var/samples
	@$(PY) samples/build_samples.py --out var/samples

reconcile: install      ## the paged repair of the running stack: every study Orthanc holds against what is recorded
	@$(PY) -m ehr_stack reconcile

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

test: install lint      ## everything CI runs: lint, types, unit, integration and end-to-end tests
	@$(PY) -m pytest

unit: install
	@$(PY) -m pytest tests/unit

.PHONY: fuzz
FUZZ_COUNT ?= 10000
FUZZ_SEED ?= 20261201
fuzz: install           ## the fuzz run alone, longer or with another seed: make fuzz FUZZ_COUNT=100000 FUZZ_SEED=7
	@EHR_FUZZ_COUNT=$(FUZZ_COUNT) EHR_FUZZ_SEED=$(FUZZ_SEED) $(PY) -m pytest tests/integration/test_fuzz.py -s

BENCH_ONLY ?=
BENCH_QUICK ?=
BENCH_STUDIES ?=
BENCH_TIMEOUT ?=
bench: install          ## benchmarks side by side, then issue 12's targets: met or not (not part of make test); BENCH_ONLY=ct300,uploads picks parts, BENCH_QUICK=1 a smoke run, BENCH_STUDIES=100000 the scale part's archive, BENCH_TIMEOUT=secs per part
	@$(PY) -m benchmarks $(if $(BENCH_ONLY),--only $(BENCH_ONLY)) $(if $(filter 1 yes true,$(BENCH_QUICK)),--quick) \
		$(if $(BENCH_STUDIES),--studies $(BENCH_STUDIES)) $(if $(BENCH_TIMEOUT),--part-timeout $(BENCH_TIMEOUT))

SOAK_SECONDS ?= 600
soak: install           ## load and soak: modalities, viewers and the EHR at once for SOAK_SECONDS (not part of make test)
	@$(PY) -m benchmarks.load --seconds $(SOAK_SECONDS)

clean: down
	rm -rf var test-artifacts
