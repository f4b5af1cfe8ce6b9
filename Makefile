# labelloop: `make run` starts the whole stack, `make test` runs every check. Only Python 3.11+ and git
# are needed; PostgreSQL and Redis come from pip wheels unless DATABASE_URL / REDIS_URL are set.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
UV_VERSION := uv==0.13.9

.PHONY: lock run test lint typecheck pytest migrate openapi docs bench-import bench-list bench-bulk bench-gateway bench-gateway-memory demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Installs with uv (about 4x faster than pip) pinned to requirements.lock; falls back to pip when uv
# cannot reach the index (uv does not read pip.conf mirrors).
define install
	$(PY) -m pip install $(PIP_FLAGS) $(UV_VERSION) \
	  && $(VENV)/bin/uv pip install --quiet --python $(PY) -c requirements.lock $(1) \
	  || $(PY) -m pip install $(PIP_FLAGS) -c requirements.lock $(1)
endef

# Runtime dependencies only: enough for `make run`.
$(VENV)/.runtime: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(call install,-e .)
	touch $@

# Everything, test and lint tools included.
$(VENV)/.dev: pyproject.toml requirements.lock $(VENV)/.runtime
	$(call install,-e '.[dev]')
	touch $@

# Regenerate the pinned transitive set after changing dependencies in pyproject.toml.
lock: $(VENV)/.runtime
	$(PY) -m pip install $(PIP_FLAGS) $(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock

run: $(VENV)/.runtime
	$(PY) -m devstack.run

test: lint typecheck pytest

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.dev
	$(PY) -m mypy

pytest: $(VENV)/.dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

migrate: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m alembic upgrade head

openapi: $(VENV)/.runtime
	$(PY) -m devstack.openapi

docs: openapi
	$(PY) -m devstack.settings_doc

# Benchmarks print figures (never assert times). Each creates a throwaway database on the embedded (or
# configured) Postgres and drops it afterwards. Extra flags: make bench-list BENCH_ARGS="--tasks 100000"
bench-import: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.import_tasks $(BENCH_ARGS)

bench-list: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.list_tasks $(BENCH_ARGS)

# Bulk prediction end to end (API + gateway workers + Postgres) against the same backend called directly.
bench-bulk: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.bulk_predict $(BENCH_ARGS)

# The learning loop on the stack `make run` started: uncertainty vs random sampling on digits, a table of
# held-out accuracy, curves in demo-out/. Extra flags: make demo DEMO_ARGS="--rounds 5 --per-round 10"
demo: $(VENV)/.dev
	$(PY) -m examples.demo $(DEMO_ARGS)

# Gateway overhead on an interactive predict: an instant fake backend called straight and through the
# gateway's HTTP route, alternated, p50/p99 of each. Extra flags: make bench-gateway BENCH_ARGS="--calls 5000"
bench-gateway: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.gateway_overhead $(BENCH_ARGS)

# Gateway and worker RSS under hostile backends (endless bodies and headers) and hostile clients (huge
# bodies, unauthenticated bodies, huge heads): peak under a bound, back to baseline after each.
bench-gateway-memory: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.gateway_memory $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
