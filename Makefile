# Two entry points: `make demo` (the main job) and `make test` (the suite CI runs).
# Each creates the virtualenv when it is missing. constraints-cpu.txt pins the local CPU torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo merge-example test test-fast lint clean browser dashboard-test

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

# Debian's chromium and its driver, for the dashboard's browser test (skipped without them)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
		|| echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "no chromium and no apt-get as root: the browser test will be skipped"; fi

dashboard-test: browser $(STAMP)
	$(BIN)/pytest tests/test_dashboard.py

clean:
	rm -rf $(VENV) out runs examples/models
