# Every target installs what it needs: a venv, the CPU torch build first, then the package.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ROUNDS ?= 3

.PHONY: install browser demo test test-fast lint bench ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the CPU build on disk; a range it satisfies then adds nothing
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Debian's chromium for the UI test (a test tool's own browser download cannot work here)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

demo: install
	$(VENV)/bin/rs-pipeline demo --fresh --rounds $(ROUNDS)

test: install browser
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/orchestration.py

ui: install
	$(VENV)/bin/rs-pipeline ui

clean:
	rm -rf $(VENV) test-artifacts
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
