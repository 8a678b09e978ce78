# Value OS — everything a fresh machine needs is installed by these targets.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NPMSTAMP := node_modules/.installed

.PHONY: run demo test setup lint typecheck pytest bench clean

run: setup            ## set up, then everything: database, local anvil, API on :8000 and worker (Ctrl-C stops all)
	$(BIN)/valueos run

demo: setup           ## migrate and run the short ledger demo (no server)
	$(BIN)/valueos demo

test: setup lint typecheck pytest   ## set up and run every check CI runs

setup: $(STAMP) $(NPMSTAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# `npm ci` would refuse our lock: the registry mirror here serves only the linux-amd64
# build of anvil, so the other platforms' optional packages are absent from the lock.
# `npm install` with the committed lock installs exactly the locked versions.
$(NPMSTAMP): package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m bench.ledger

clean:
	rm -rf $(VENV) node_modules .valueos .pytest_cache .mypy_cache .ruff_cache
