# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Both create .venv with the project's own files; only python3, pip and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run storyboard test lint typecheck imports unit browser bench install clean

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

unit: $(STAMP) browser
	$(BIN)/pytest

## The browser tests (tests/e2e) drive Debian's Chromium: install the package when it is missing
## (as root, or through sudo). Without it they would skip, and under CI=true they fail.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; \
	  elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	  else echo "Chromium is missing and cannot be installed without root or sudo:" \
	    "install Debian's 'chromium' package for the browser tests." >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "Chromium is missing and there is no apt-get:" \
	    "install Chromium so that 'chromium' is on PATH for the browser tests." >&2; exit 1; }; \
	  echo "Installing Chromium (Debian package 'chromium') for the browser tests..."; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
	  command -v chromium >/dev/null 2>&1 || { echo "Could not install Chromium with apt-get:" \
	    "install Debian's 'chromium' package for the browser tests." >&2; exit 1; }; \
	}

bench: $(STAMP)
	$(BIN)/python bench/bench_prompts.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
