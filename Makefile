# The two commands a newcomer runs: `make sync-packages` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# On the platform the BOOTSTRAP_* settings point at /home/repo and /home/.packages.
# On a fresh clone with no /home/repo, use the embedded default: the template
# repo's requirements into a packages folder inside the clone.
ifeq ($(wildcard /home/repo),)
export BOOTSTRAP_REQUIREMENTS_FILE ?= $(CURDIR)/repo_template/requirements.txt
export BOOTSTRAP_PACKAGES_DIR ?= $(CURDIR)/.packages
endif

.PHONY: venv sync-packages test lock check status bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

sync-packages: venv
	$(PY) -m bootstrap sync

# The tests that concern the resolver and installer, run again with the uv backend.
UV_TESTS := tests/test_sync.py tests/test_runtime.py tests/test_bad_input.py tests/test_policy.py \
	tests/test_lock.py tests/test_incremental.py tests/test_bytecode.py tests/test_verify.py \
	tests/test_private_index.py tests/test_host.py tests/test_storage.py tests/test_concurrency.py \
	tests/test_rollback.py tests/test_sealed.py tests/test_integrity.py

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)
	BOOTSTRAP_TEST_BACKEND=uv $(PY) -m pytest -m "not network" $(PYTEST_ARGS) $(UV_TESTS)

lock: venv
	$(PY) -m bootstrap lock

check: venv
	$(PY) -m bootstrap check

status: venv
	$(PY) -m bootstrap status

bench: venv
	$(PY) bench/bench.py

lint: venv
	$(PY) -m ruff check bootstrap tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .packages .pytest_cache .mypy_cache .ruff_cache
