# The two set-up commands of README.md. Each one installs what it needs into .venv first.
#   make train   train the tutorial's CNN on CIFAR-10 (the `seed` preset) into runs/; installs
#                cnnkit and what training needs, nothing more
#   make test    the test suite (what CI runs); make test-quick: the edit loop's tier
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= seed

.PHONY: install system browser train test test-quick docs lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# cnnkit and its own dependencies (TensorFlow, Keras, scikit-learn, matplotlib, Pillow, ...).
$(BIN)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# What the documentation site's build imports: cnnkit with its service (the API reference
# documents it) and Sphinx's parts.
$(BIN)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[docs,serve]"
	touch $@

# Everything the tests, the docs and the benchmarks use: the `dev` extra (every optional part,
# JAX's and PyTorch's CPU builds included: about 4 GB).
$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(BIN)/.installed-base $(BIN)/.installed-docs $@

install: $(BIN)/.installed

train: $(BIN)/.installed-base
	$(BIN)/cnnkit train --preset $(PRESET)

# Debian's packages the tests need: chromium, in which they open the report and study pages
# (Playwright drives it; it downloads no browser of its own), and postgresql, whose server the
# tune tests start for themselves. Installed when missing and make runs as root; else the tests
# say how.
SYSTEM_PACKAGES = $(if $(shell command -v chromium),,chromium) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)
system:
	@[ -z "$(strip $(SYSTEM_PACKAGES))" ] || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			$(SYSTEM_PACKAGES) >/dev/null; }
browser: system

test: $(BIN)/.installed system
	$(BIN)/python -m pytest

# The edit loop: every test that trains nothing (pytest -m "not slow"), in about a minute.
test-quick: $(BIN)/.installed system
	$(BIN)/python -m pytest -m "not slow"

# The documentation site (guides, generated references, benchmarks): build/docs/index.html.
docs: $(BIN)/.installed-docs
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs build/docs

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/throughput.py
