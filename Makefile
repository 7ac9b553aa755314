# p2pshare — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint unit demo bench bench-smoke fuzz clean

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

test: lint unit bench-smoke

demo: $(STAMP)
	$(BIN)/p2pshare demo

# the suite (bench/suite.py): every workload beside its anchors and limits, about 15 minutes;
# writes bench/results/latest.md and latest.json. The single figures stay runnable on their
# own: bench/hash_chunks.py, tracker_load.py, transfer.py, swarm.py, anchors.py, scheduler.py
bench: $(STAMP)
	$(BIN)/python bench/suite.py

# the suite at small sizes, one round, no anchors (under a minute; part of make test): fails
# unless every row it writes (bench/results/smoke.*) has numbers > 0. No timed assertions.
bench-smoke: $(STAMP)
	$(BIN)/python bench/suite.py --smoke --no-anchors

# coverage-guided fuzzing of the parsers (fuzz/fuzz_parsers.py), bounded; the corpus it grows
# and any crash-* input are kept in build/fuzz (replay one: $(BIN)/python fuzz/fuzz_parsers.py FILE)
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	mkdir -p build/fuzz/corpus
	$(BIN)/python fuzz/fuzz_parsers.py -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=build/fuzz/ build/fuzz/corpus

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist
