# condnerf: `make demo` runs the main job, `make test` the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: install demo test test-quick clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(PY) -m experiments.demo --workdir=$(DEMO)

test: install
	$(PY) -m pytest -q tests

# Unit tests only: no whole runs through the CLI (tests/smoke) or notebooks.
test-quick: install
	$(PY) -m pytest -q tests --ignore=tests/smoke --ignore=tests/notebooks_test.py

clean:
	rm -rf $(VENV) runs build *.egg-info
