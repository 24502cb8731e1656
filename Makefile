# Every target creates .venv and installs the project from pyproject.toml when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-slow bench docs lint format clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# `probinfer bench` needs the base install alone; the peer benchmarks in benchmarks/*.py
# need the `bench` extra (pip install -e '.[bench]'), which takes minutes to install.
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

# Two pytest-xdist workers, one module at a time each (CI has two cores; compiling is
# single-threaded).
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m slow

# The documentation site: every example in docs/ runs during the build (a failing one
# fails it); the result is in site/.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(VENV)/.installed-bench
	$(BIN)/probinfer bench

lint: $(VENV)/.installed-test
	$(BIN)/ruff check probinfer tests benchmarks docs/hooks
	$(BIN)/ruff format --check probinfer tests benchmarks docs/hooks
	$(BIN)/pyright --pythonpath $(BIN)/python probinfer

format: $(VENV)/.installed-test
	$(BIN)/ruff format probinfer tests benchmarks docs/hooks
	$(BIN)/ruff check --fix probinfer tests benchmarks docs/hooks

clean:
	rm -rf $(VENV) bench-results site .pytest_cache
