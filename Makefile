# p2pshare — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint unit demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

# three workers, one test file each: most tests wait on real processes, not on the CPU
unit: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile

test: lint unit

demo: $(STAMP)
	$(BIN)/p2pshare demo

bench: $(STAMP)
	$(BIN)/python bench/hash_chunks.py
	$(BIN)/python bench/tracker_load.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/swarm.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist
