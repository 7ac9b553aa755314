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

unit: $(STAMP)
	$(BIN)/pytest

test: lint unit

demo: $(STAMP)
	@echo "The demo (a tracker and three nodes on loopback, a real upload and download) arrives with the node."
	@echo "Meanwhile: $(BIN)/p2pshare --help"

bench: $(STAMP)
	$(BIN)/python bench/hash_chunks.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist
