# s3orch developer entry points.
#
# Everything runs from a project-local virtualenv (.venv) that the first target
# to need it creates.  `make run` needs only python3 (and make) and installs only
# what the demo runs (s3orch and its "demo" extra); `make test`, `make lint` and
# `make bench` add the "test" and "dev" extras, and `make test` also needs Node.js
# (npm) and restic for the real-client tests (installed with apt when run as root).
# The stamp files depend on setup.py/setup.cfg, so a re-run is instant until the
# packaging metadata changes.
#
#   make run     three local SeaweedFS backends + s3orch on 127.0.0.1:9000 (SQLite; tools/demo.py)
#   make test    the whole test suite (pytest; configuration lives in setup.cfg)
#   make lint    ruff + mypy
#   make bench   benchmarks (python -m tools.bench: tools/bench/): s3orch and rclone union against
#                direct access to one of the same three SeaweedFS backends, ~5 min; BENCH_ARGS=--quick
#                for a ~1 min smoke run, BENCH_ARGS='--only rss-16x,list-1m' for the heavy scenarios
#   make deb     Debian package (needs: apt-get install build-essential debhelper dh-virtualenv
#                python3.11-venv python3-pip python3-setuptools python3-wheel), from packaging/requirements.lock
#   make deb-lock  regenerate packaging/requirements.lock from setup.cfg (pip-tools, hashes)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# s3orch + the demo's tools (make run) / + everything for tests, lint and bench.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
PIP_INSTALL_ARGS ?=
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=
DIST ?= dist

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.PHONY: help venv run run-backends test test-tools lint bench deb clean clean-demo distclean

help:
	@echo "make run           start 3 SeaweedFS backends + s3orch on http://127.0.0.1:9000 (Ctrl-C stops all);"
	@echo "                   installs only s3orch and the demo's tools into .venv"
	@echo "make run-backends  start only the 3 demo backends (and write .demo/config.yaml)"
	@echo "make test          run the whole test suite (PYTEST_ARGS='-k foo -x' to narrow); installs the"
	@echo "                   test extras and client tools first (needs npm: npm ci in tests/e2e/js;"
	@echo "                   restic via apt when root)"
	@echo "make lint          ruff check + mypy"
	@echo "make bench         run the benchmarks (s3orch, rclone union, direct; BENCH_ARGS=--quick)"
	@echo "make deb           build the Debian package into $(DIST)/"
	@echo "make clean         remove build output and the install stamp"
	@echo "make clean-demo    remove the demo's data (.demo/)"
	@echo "make distclean     clean + remove .venv and .demo"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# editable_mode=compat puts the checkout itself on sys.path (a .pth line), which is
# how twistd finds twisted/plugins/s3orch_plugin.py; the default "strict" editable
# finder maps only the s3orch package, and twistd would not know "s3orch".
$(RUN_STAMP): setup.py setup.cfg | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check \
	  --config-settings editable_mode=compat -e '.[demo]' $(PIP_INSTALL_ARGS)
	touch $@

$(STAMP): setup.py setup.cfg | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check \
	  --config-settings editable_mode=compat -e '.[demo,test,dev]' $(PIP_INSTALL_ARGS)
	touch $(RUN_STAMP) $@

venv: $(STAMP)

# The real-client tests (tests/e2e) also drive the AWS SDK for JavaScript (npm, pinned by
# tests/e2e/js/package-lock.json) and restic (Debian's package).
JS_DIR := tests/e2e/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	cd $(JS_DIR) && npm ci --no-audit --no-fund
	touch $@

test-tools: $(STAMP) $(JS_STAMP)
	@command -v restic >/dev/null || { \
	  if [ "$$(id -u)" -eq 0 ]; then \
	    echo "installing restic (apt) for the end-to-end tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends restic; \
	  else \
	    echo "make test: restic is missing and the end-to-end tests need it: sudo apt-get install restic" >&2; exit 1; \
	  fi; }

run: $(RUN_STAMP)
	$(BIN)/python -m tools.demo $(DEMO_ARGS)

run-backends: $(RUN_STAMP)
	$(BIN)/python -m tools.demo --backends-only $(DEMO_ARGS)

# pytest's exit status is make's: 1 = failures, 5 = no tests collected; both fail the target.
test: $(STAMP) test-tools
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check s3orch tests tools twisted
	$(BIN)/mypy s3orch tools tests/support

bench: $(STAMP)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

# dpkg-buildpackage writes next to the source tree (..); collect the results in $(DIST)/,
# then remove the staging tree and the in-tree build/ and *.egg-info that the build left.
# The venv installs exactly packaging/requirements.lock (see debian/rules).
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh_virtualenv >/dev/null \
	  && [ -x /usr/bin/python3.11 ] && /usr/bin/python3.11 -c 'import setuptools, wheel, ensurepip' 2>/dev/null \
	  && /usr/bin/python3.11 -m pip --version >/dev/null 2>&1 || { \
	  echo "make deb needs: sudo apt-get install build-essential debhelper dh-virtualenv python3.11-venv" \
	    "python3-pip python3-setuptools python3-wheel" >&2; exit 1; }
	dpkg-buildpackage -us -uc -b
	mkdir -p $(DIST)
	v=$$(dpkg-parsechangelog -S Version); \
	  for f in ../s3orch_$${v}_*.deb ../s3orch-dbgsym_$${v}_*.deb ../s3orch_$${v}_*.buildinfo ../s3orch_$${v}_*.changes; do \
	    [ ! -e "$$f" ] || mv "$$f" $(DIST)/; done
	debian/rules clean
	@ls -l $(DIST)/*.deb

# After changing install_requires in setup.cfg (tests/packaging/test_lock.py fails until then).
.PHONY: deb-lock
deb-lock:
	packaging/update-lock.sh

clean:
	rm -f $(STAMP) $(RUN_STAMP) $(JS_STAMP) twisted/plugins/dropin.cache
	rm -rf build $(DIST) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench-results
	rm -rf debian/.debhelper debian/s3orch debian/files debian/debhelper-build-stamp debian/*.substvars debian/*.debhelper.log debian/*.debhelper
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

clean-demo:
	rm -rf .demo

distclean: clean clean-demo
	rm -rf $(VENV) $(JS_DIR)/node_modules
