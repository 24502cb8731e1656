# Every target creates .venv and installs the project from pyproject.toml when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-slow bench lint format clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $@

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m slow

bench: $(VENV)/.installed-bench
	$(BIN)/probinfer bench

lint: $(VENV)/.installed-test
	$(BIN)/ruff check probinfer models tests benchmarks
	$(BIN)/ruff format --check probinfer models tests benchmarks
	$(BIN)/pyright --pythonpath $(BIN)/python probinfer

format: $(VENV)/.installed-test
	$(BIN)/ruff format probinfer models tests benchmarks
	$(BIN)/ruff check --fix probinfer models tests benchmarks

clean:
	rm -rf $(VENV) bench-results .pytest_cache
