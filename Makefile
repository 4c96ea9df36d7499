# mirror: everyday targets. `make install demo` sets up and runs the round trip; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# torch is a test dependency only. PyTorch's CPU index first (no multi-GB CUDA build); where it offers no
# wheel for this platform, or cannot be reached, PyPI's build (CUDA on Linux x86_64, CPU elsewhere).
TORCH ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install system-deps demo test test-fast lint format bench clean

$(BIN)/mirror: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --retries 1 --timeout 30 --index-url $(TORCH_CPU_INDEX) torch==$(TORCH) \
	  || $(PY) -m pip install torch==$(TORCH)
	$(PY) -m pip install -e '.[test]'
	$(PY) -c 'import torch; print("make install: torch", torch.__version__, "(CUDA " + torch.version.cuda + " build)" if torch.version.cuda else "(CPU build)")'
	touch $@

install: $(BIN)/mirror  ## create .venv with mirror and the test tools (torch CPU included)

system-deps:  ## Debian's chromium (the catalogue page's browser test) and nginx (the bench's serving peer)
	@if command -v chromium >/dev/null && command -v nginx >/dev/null; then echo "system-deps: chromium and nginx present"; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium nginx; fi

demo: install  ## round trip against the built-in loopback hub, ending with the model loaded offline
	$(PY) -m tests.demo

test: install  ## the whole test suite
	$(PY) -m pytest -q

test-fast: install  ## the fast unit tier alone: in-process, no subprocess, no torch (under a minute)
	$(PY) -m pytest -q -m "not e2e"

lint: install  ## ruff + mypy
	$(BIN)/ruff check mirror tests bench
	$(BIN)/ruff format --check mirror tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format mirror tests bench
	$(BIN)/ruff check --fix mirror tests bench

bench: install  ## benchmarks: ratios against the peers measured in the same run
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-work
