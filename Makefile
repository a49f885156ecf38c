# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build; on this project's machines pip finds it on local disk. Override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint bench sample-runs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/entropyscope demo

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/chunked_entropy.py

sample-runs: install
	$(BIN)/python -m trainer.sample_runs

clean:
	rm -rf $(VENV) runs mlruns
