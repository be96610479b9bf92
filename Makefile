# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on the development machines; override on others (e.g. TORCH=torch).
TORCH ?= torch==2.13.0
DEMO ?= out/demo

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

run: install
	$(BIN)/bioknow generate bioS-simple --n 2000 --seed 0 --out $(DEMO)/data --overwrite
	$(BIN)/bioknow info $(DEMO)/data

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/generate.py

clean:
	rm -rf $(VENV) out
