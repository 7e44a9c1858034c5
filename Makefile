# Two commands: `make demo` (set up + run the whole loop) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# Tests run on TEST_WORKERS pytest-xdist processes, each with its share of the cores for torch:
# on CI's 2 cores, 2 workers x 1 thread finished the suite in 577 s, 1 process x 2 threads in 823 s
# (many tests wait on servers, subprocesses and sockets while the other worker computes).
TEST_WORKERS ?= 2
TEST_THREADS := $(shell n=$$(nproc 2>/dev/null || echo 2); t=$$((n / $(TEST_WORKERS))); echo $$((t > 0 ? t : 1)))
PYTEST := OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -n $(TEST_WORKERS)

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
	$(PYTEST) --durations=15 $(ARGS)

test-fast: $(VENV)/.installed
	$(PYTEST) -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) runs
