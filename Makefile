# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs).
# Each creates the virtualenv when it is missing. constraints-cpu.txt pins the local CPU torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo merge-example test test-fast lint clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/evomerge demo --fresh

merge-example: $(STAMP)
	$(BIN)/python examples/build_tiny_models.py examples/models
	$(BIN)/evomerge merge examples/ties.yaml -o out/ties-merge --force

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

test: lint
	$(BIN)/pytest

# the suite without the tests marked slow (whole searches, subprocesses, Ray): for iterating
test-fast: lint
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) out runs examples/models
