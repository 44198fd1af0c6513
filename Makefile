# make run  : create .venv if missing, install torch + mlplab, run the default (quick) suite
# make test : same install with dev extras, then ruff + pytest
TORCH_VERSION ?= 2.13.0
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out
SUITE ?= quick
# two pytest workers (pytest-xdist): many tests wait on processes, kernels and files, so two
# halve the suite even on 2 cores (268 s -> 135 s measured); TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2

.PHONY: run test lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/mlplab run $(SUITE) --out $(OUT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Speed: mlplab vs plain PyTorch vs Keras 3 vs the matmul floor; then fidelity: the seed suite's
# six models in mlplab and in Keras 3, learning curves side by side. JSON in bench/results/.
bench: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[bench]" || echo "keras not installable: its column stays empty"
	$(BIN)/python bench/bench.py $(BENCH_ARGS)
	$(BIN)/python bench/fidelity.py $(FIDELITY_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
