# airgap: set-up, tests, demo and benchmarks. Works on a fresh Debian machine as root.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup sysdeps test test-slow demo lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

sysdeps:
	@if ! command -v docker-registry >/dev/null 2>&1 || ! command -v skopeo >/dev/null 2>&1; then \
		echo "installing docker-registry and skopeo"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo; \
	fi

setup: $(STAMP) sysdeps
	@# bytecode for airgap's own modules, as a pip-installed copy has (an editable install under
	@# PYTHONDONTWRITEBYTECODE=1 would compile every module at every start: ~0.1 s per command)
	@$(BIN)/python -m compileall -q airgap

test: setup
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

demo: setup
	$(BIN)/python -m scripts.demo

lint: setup
	$(BIN)/ruff check airgap tests scripts
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m scripts.bench

clean:
	rm -rf $(VENV) demo-work bench/results
