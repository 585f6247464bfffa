# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both create .venv with the project's own files; only python3, pip and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run storyboard test lint typecheck imports unit bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job, offline: validate the packs, then serve the API with its workers on
## 127.0.0.1:8000 (SQLite and local files under ./caverna-data, the preview provider).
## The very first start prints a one-time admin API key.
run: $(STAMP)
	$(BIN)/caverna pack validate
	$(BIN)/caverna serve --host 127.0.0.1 --port 8000

## Generate the onboarding storyboard offline into caverna-data/storyboard, without a server.
storyboard: $(STAMP)
	$(BIN)/caverna sequence generate --sequence onboarding --out caverna-data/storyboard

## Lint, format check, types, layering contract, then the whole test suite.
test: lint typecheck imports unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_prompts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
