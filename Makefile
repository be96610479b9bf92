# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on the development machines; override on others (e.g. TORCH=torch).
TORCH ?= torch==2.13.0
DEMO ?= out/demo

.PHONY: install run test test-slow test-slurm test-transformers4 lint bench capacity clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The main job end to end, small: 100 people, a tiny GPT-2 trained for 60 exposures on
# the CPU (about a minute), then how many bits of their knowledge it stores.
run: install
	$(BIN)/bioknow generate bioS-simple --n 100 --seed 0 --out $(DEMO)/data --overwrite
	$(BIN)/bioknow train --data $(DEMO)/data --model gpt2-2-2 --exposures 60 \
		--batch 2 --lr 3e-3 --wd 0 --device cpu --out $(DEMO)/run --overwrite
	$(BIN)/bioknow eval $(DEMO)/run --device cpu

# The knowledge-capacity law on a CPU: bioD across the 2 bits per parameter boundary
# (scripts/capacity-cpu.yaml; about an hour on 2 cores), then its figure and fits.
CAPACITY ?= out/capacity-cpu
capacity: install
	$(BIN)/bioknow sweep scripts/capacity-cpu.yaml --out $(CAPACITY) --cpu-slots 2
	$(BIN)/bioknow plot $(CAPACITY) --out $(CAPACITY)/capacity.png
	$(BIN)/bioknow fit $(CAPACITY)

test: install
	$(BIN)/python -m pytest

# The slowest end-to-end tests (about 3 minutes in all), apart so that `make test` stays
# near five minutes; CI runs them too.
test-slow: install
	$(BIN)/python -m pytest -m slow

# Sweeps through a real Slurm: starts a single-node cluster on this machine (installing
# Debian's slurm-wlm and munge when missing, as root), about two minutes.
test-slurm: install
	$(BIN)/python -m pytest -m slurm tests/test_slurm.py

# Exports loaded by the latest transformers 4.x, in a virtual environment of its own (the
# same torch); their logits and generations must equal bioknow's. Not skipped here.
TF4_VENV ?= .venv-tf4
$(TF4_VENV)/.installed:
	$(PYTHON) -m venv $(TF4_VENV)
	$(TF4_VENV)/bin/python -m pip install -q --upgrade pip
	$(TF4_VENV)/bin/python -m pip install -q "$(TORCH)" "transformers>=4.40,<5" numpy
	touch $@

test-transformers4: install $(TF4_VENV)/.installed
	BIOKNOW_TRANSFORMERS4_PYTHON=$(abspath $(TF4_VENV))/bin/python BIOKNOW_REQUIRE_TRANSFORMERS4=1 \
		$(BIN)/python -m pytest tests/test_export.py -k transformers4

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/eval.py
	$(BIN)/python benchmarks/verify.py

clean:
	rm -rf $(VENV) $(TF4_VENV) out
