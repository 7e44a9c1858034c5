# Two commands: `make demo` (set up + run the whole loop) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: demo demo-fast test test-fast clean

$(VENV)/.installed: requirements.lock requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/distill demo $(ARGS)

demo-fast: $(VENV)/.installed
	$(VENV)/bin/distill demo --fast $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15 $(ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) runs
