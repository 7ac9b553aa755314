# p2pshare — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint unit demo bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz
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

# coverage-guided fuzzing of the parsers (fuzz/fuzz_parsers.py), bounded; the corpus it grows
# and any crash-* input are kept in build/fuzz (replay one: $(BIN)/python fuzz/fuzz_parsers.py FILE)
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	mkdir -p build/fuzz/corpus
	$(BIN)/python fuzz/fuzz_parsers.py -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=build/fuzz/ build/fuzz/corpus

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist
