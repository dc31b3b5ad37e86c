# Everything a fresh machine needs: `make run` runs the study, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
# The CPU build of PyTorch, installed before anything that depends on torch, so that no
# dependency ever pulls PyPI's multi-GB CUDA build in.
TORCH ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-slow lint install system clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) '$(TORCH)'
	$(PIP) -e '.[all]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[all,serve,test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/visionbench run $(ARGS)

# Headless Chromium for the HTML report's browser test, numactl for the pinned-instance test,
# iproute2 (ip) for the fleet test across network namespaces, tcmalloc and jemalloc for
# --allocator (Debian packages). Without them those tests are skipped, except in CI (.ci/run:
# VISIONBENCH_REQUIRE_BROWSER=1, VISIONBENCH_REQUIRE_NETNS=1 and VISIONBENCH_REQUIRE_ALLOCATORS=1),
# where the browser, network and allocator tests fail.
system:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v numactl >/dev/null && \
	  command -v ip >/dev/null && dpkg -s libtcmalloc-minimal4 libjemalloc2 >/dev/null 2>&1 || \
	  { echo "installing chromium, chromium-driver, numactl, iproute2, tcmalloc and jemalloc for the browser, pinning, network and allocator tests"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	      chromium chromium-driver numactl iproute2 libtcmalloc-minimal4 libjemalloc2 >/dev/null; } || \
	  echo "warning: could not install chromium, numactl, iproute2, tcmalloc or jemalloc; their tests will be skipped"

# The default suite (under 10 minutes on 2 cores); the slow end-to-end tests are test-slow's,
# which CI (.ci/run) runs as well.
test: $(VENV)/.installed-test system
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test system
	$(VENV)/bin/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
