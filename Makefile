# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml

.PHONY: venv install dev redis-server chromium run test check lint typecheck bench fake-market clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The runtime install; re-run when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

run: install
	CRAWLER_CONFIG=$(CONFIG) $(BIN)/crawler start --foreground

# The Redis backend's tests run a real redis-server (Debian's package), started by a fixture on
# a random loopback port: installed here when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	    echo "installing redis-server (Debian package) for the Redis backend's tests"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends redis-server >/dev/null; }

# The dashboard's tests drive a real headless Chromium through chromedriver (Debian's
# packages): installed here when missing.
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	    echo "installing chromium and chromium-driver (Debian packages) for the dashboard's tests"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends chromium chromium-driver >/dev/null; }

# Four workers on two cores (pytest-xdist): most tests wait on a subprocess or a socket. A
# file's tests stay on one worker (--dist loadfile): its module-scoped daemon starts once.
# `make test TEST_WORKERS=0` runs them one at a time.
TEST_WORKERS ?= 4
test: dev redis-server chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: dev
	$(BIN)/ruff check crawler tests bench fakemarket
	$(BIN)/ruff format --check crawler tests bench fakemarket
	$(BIN)/lint-imports

typecheck: dev
	$(BIN)/mypy

check: lint typecheck test

bench: dev
	$(BIN)/python -m bench

fake-market: install
	$(BIN)/python -m fakemarket

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
