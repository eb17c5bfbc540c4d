# condnerf: `make demo` runs the main job, `make test` the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := runs/demo
# Extra flags for experiments.demo, e.g. make demo DEMO_FLAGS=--config.seed=1
DEMO_FLAGS :=

.PHONY: install demo demo-seeds test test-quick accel-check clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(PY) -m experiments.demo --workdir=$(DEMO) $(DEMO_FLAGS)

# The demo for seeds 0, 1 and 2 (about 30 minutes): every figure as
# mean ± std against its bar in runs/demo_seeds/summary.md.
demo-seeds: install
	$(PY) -m experiments.demo_seeds --seeds=0,1,2 --out=runs/demo_seeds

# One worker per core (pytest-xdist); tests sharing a class fixture stay
# together (--dist loadscope). About 13 minutes on 2 cores.
test: install
	$(PY) -m pytest -q -n auto --dist loadscope tests

# Unit tests only: no whole runs through the CLI (tests/smoke) or notebooks.
test-quick: install
	$(PY) -m pytest -q -n auto --dist loadscope tests --ignore=tests/smoke \
	  --ignore=tests/notebooks_test.py

# On a machine with an accelerator: device tests + bench --suite=full (+ the
# lego curve when ../shared/data/lego exists) into one JSON.
accel-check: install
	$(PY) -m experiments.accel_check --out=runs/accel_check.json \
	  $(if $(wildcard ../shared/data/lego),--lego=../shared/data/lego)

clean:
	rm -rf $(VENV) runs build *.egg-info
