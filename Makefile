# The two set-up commands of README.md. Each one installs what it needs into .venv first.
#   make train   train the tutorial's CNN on CIFAR-10 (the `seed` preset) into runs/
#   make test    the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= seed

.PHONY: install browser train test lint bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

train: $(BIN)/.installed
	$(BIN)/cnnkit train --preset $(PRESET)

# Debian's chromium, in which the tests open the report pages (Playwright drives it; it downloads
# no browser of its own). Installed when missing and make runs as root; else the tests say how.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(BIN)/.installed browser
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/throughput.py
