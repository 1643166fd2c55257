# The two commands of the README's quick start, plus helpers for developers.
# Every target installs what it needs first (scripts/bootstrap.sh), so a fresh clone works.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test setup lint bench-quick bench screenshots clean

setup:
	@scripts/bootstrap.sh

demo: setup
	$(PY) -m demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench-quick: setup
	$(PY) -m bench.poll --quick --json
	$(PY) -m bench.codec --quick --json

bench: setup
	$(PY) -m bench.all --json

# Renders the main pages of the web UI to docs/screenshots/ (not committed) for the docs.
screenshots: setup
	$(PY) -m fleet.ui.screenshots docs/screenshots

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
