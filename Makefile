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

.PHONY: venv runtime sync-packages test lock check status verify watch rollback add remove env bench lint clean

# Two environments in one .venv: what the main job needs (bootstrap and its dependencies: the
# "host" whose packages constrain users' sets), and, for `make test` and `make lint`, the dev toolchain.
$(VENV)/.installed-runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

runtime: $(VENV)/.installed-runtime

venv: $(VENV)/.installed-dev

sync-packages: runtime
	$(PY) -m bootstrap sync

# The tests that concern the resolver and installer, run again with the uv backend.
UV_TESTS := tests/test_sync.py tests/test_runtime.py tests/test_bad_input.py tests/test_policy.py \
	tests/test_lock.py tests/test_incremental.py tests/test_bytecode.py tests/test_verify.py \
	tests/test_private_index.py tests/test_host.py tests/test_storage.py tests/test_concurrency.py \
	tests/test_rollback.py tests/test_sealed.py tests/test_integrity.py tests/test_share.py tests/test_orgs.py

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)
	BOOTSTRAP_TEST_BACKEND=uv $(PY) -m pytest -m "not network" $(PYTEST_ARGS) $(UV_TESTS)

# The commands of `python -m bootstrap`, with the settings above (a fresh clone's default included).
lock check status verify watch: runtime
	$(PY) -m bootstrap $@

rollback: runtime
	$(PY) -m bootstrap rollback $(if $(TO),--to '$(TO)')

add remove: runtime
	@test -n "$(PKG)" || { echo "usage: make $@ PKG=name (e.g. make add PKG='tabulate>=0.9')" >&2; exit 2; }
	$(PY) -m bootstrap $@ '$(PKG)'

# `eval "$$(make -s env)"` makes plain `python -m bootstrap ...` use the same folders as these targets.
env:
	$(if $(BOOTSTRAP_REQUIREMENTS_FILE),@echo "export BOOTSTRAP_REQUIREMENTS_FILE='$(BOOTSTRAP_REQUIREMENTS_FILE)'")
	$(if $(BOOTSTRAP_PACKAGES_DIR),@echo "export BOOTSTRAP_PACKAGES_DIR='$(BOOTSTRAP_PACKAGES_DIR)'")

bench: venv
	$(PY) bench/bench.py

lint: venv
	$(PY) -m ruff check bootstrap tests bench
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .packages .pytest_cache .mypy_cache .ruff_cache
